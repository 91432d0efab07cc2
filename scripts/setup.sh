#!/usr/bin/env bash
# Installs the Debian packages larder needs (only those missing), then configures and builds
# into the given build directory with any extra meson options.
#   scripts/setup.sh BUILD_DIR [meson options...]
set -euo pipefail
cd "$(dirname "$0")/.."

packages=(g++ pkg-config meson ninja-build librocksdb-dev libfmt-dev libcereal-dev doctest-dev
          libcli11-dev libzstd-dev rapidjson-dev libabsl-dev
          # meson writes the CMake package files with cmake's templates; scripts/package_check.sh
          cmake
          # the Python binding and its tests (python/, docs/python.md)
          pybind11-dev python3-dev python3-pytest python3-mesonpy python3-pip
          # the remote tier (src/remote, docs/remote.md) and its tests against a real Redis
          libhiredis-dev redis-server
          # HMAC-SHA256 for signed remote records and pickles (OpenSSL's libcrypto), and the
          # safe encoding of Python values (docs/python.md, "Security")
          libssl-dev python3-msgpack
          # cachectl serve (docs/cachectl.md): the HTTP library, and the browser its dashboard
          # is tested in
          libcpp-httplib-dev chromium)
if [[ "${LARDER_CXX:-}" == clang++ ]]; then packages+=(clang libclang-rt-14-dev); fi
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  echo "setup: installing ${missing[*]}" >&2
  sudo=""
  if [[ $(id -u) -ne 0 ]]; then sudo="sudo"; fi
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${missing[@]}" >/dev/null
fi

build="${1:-build}"
shift || true
if [[ ! -f "$build/build.ninja" ]]; then
  if [[ -n "${LARDER_CXX:-}" ]]; then export CXX="$LARDER_CXX"; fi
  mkdir -p "$build"
  if ! meson setup "$build" --wrap-mode=nodownload "$@" >"$build.setup.log" 2>&1; then
    cat "$build.setup.log" >&2
    exit 1
  fi
fi
if ! ninja -C "$build" >"$build/build.log" 2>&1; then
  cat "$build/build.log" >&2
  exit 1
fi
# Warnings are errors in spirit: show them.
grep -E "warning:" "$build/build.log" >&2 || true
