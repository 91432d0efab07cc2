#!/usr/bin/env bash
# `pip install .` from this checkout, offline: builds the wheel with Debian's meson-python
# (--no-build-isolation), installs it into a temporary directory and uses it from a fresh
# interpreter outside the source tree. Ends with "larder-wheel: ok" or fails.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh build >/dev/null  # the packages (meson-python, pybind11, pip)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
/usr/bin/python3 -m pip wheel --no-build-isolation --no-deps . -w "$work/dist" >"$work/log" 2>&1 ||
  { cat "$work/log" >&2; exit 1; }
/usr/bin/python3 -m pip install --no-deps --target "$work/site" "$work"/dist/larder-*.whl \
  >>"$work/log" 2>&1 || { cat "$work/log" >&2; exit 1; }
cd "$work"
PYTHONPATH="$work/site" /usr/bin/python3 - "$work" <<'PY'
import sys, larder
assert larder.__file__.startswith(sys.argv[1] + "/site/"), larder.__file__
with larder.Cache(sys.argv[1] + "/cache") as c:
    assert c.set("k", {"v": 1}) and c.get("k") == {"v": 1}
with larder.Cache(sys.argv[1] + "/cache") as c:  # persisted
    assert c.get("k") == {"v": 1}, c.get("k")
import asyncio, larder.aio, larder.diskcache  # the pure-Python modules are in the wheel
with larder.diskcache.Cache(sys.argv[1] + "/dc") as dc:
    dc[("t", 1)] = [1]
    assert dc[("t", 1)] == [1] and larder.diskcache.Deque is not None
async def main():
    async with larder.aio.Cache(sys.argv[1] + "/aio") as a:
        assert await a.set("k", 1) and await a.get("k") == 1
asyncio.run(main())
print("larder-wheel: ok")
PY
