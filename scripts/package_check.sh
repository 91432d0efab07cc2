#!/usr/bin/env bash
# The installed package works for its users: `meson install --destdir` of the build in BUILD_DIR
# (default build), then a CMake project (tests/package/) finds it with find_package(larder
# CONFIG), links larder::larder and runs; asking for a version it is not is refused.
set -euo pipefail
cd "$(dirname "$0")/.."
build="${1:-build}"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
meson install -C "$build" --destdir "$tmp/dest" --no-rebuild >"$tmp/install.log" 2>&1 ||
  { cat "$tmp/install.log" >&2; exit 1; }
prefix=$(meson introspect "$build" --buildoptions |
  python3 -c 'import json,sys; print(next(o["value"] for o in json.load(sys.stdin) if o["name"] == "prefix"))')
libdir=$(meson introspect "$build" --buildoptions |
  python3 -c 'import json,sys; print(next(o["value"] for o in json.load(sys.stdin) if o["name"] == "libdir"))')
root="$tmp/dest$prefix"
test -f "$root/$libdir/cmake/larder/larderConfig.cmake"
test -f "$root/$libdir/cmake/larder/larderConfigVersion.cmake"
cmake -S tests/package -B "$tmp/cmake" -G Ninja -DCMAKE_PREFIX_PATH="$root" \
  >"$tmp/cmake.log" 2>&1 || { cat "$tmp/cmake.log" >&2; exit 1; }
cmake --build "$tmp/cmake" >"$tmp/build.log" 2>&1 || { cat "$tmp/build.log" >&2; exit 1; }
out=$(LD_LIBRARY_PATH="$root/$libdir" "$tmp/cmake/consumer")
[[ "$out" == ok ]] || { echo "package check: the CMake consumer printed '$out'" >&2; exit 1; }
# A version the package does not offer is refused (the version file is checked).
if cmake -S tests/package -B "$tmp/cmake9" -G Ninja -DCMAKE_PREFIX_PATH="$root" \
  -DLARDER_WANTED_VERSION=9.0 >"$tmp/cmake9.log" 2>&1; then
  echo "package check: find_package(larder 9.0) was accepted" >&2
  exit 1
fi
echo "package check: find_package(larder CONFIG) -> larder::larder builds and runs"
