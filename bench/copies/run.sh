#!/usr/bin/env bash
# Counts the whole-value copies (memcpy/memmove of at least the value's size) a set of a 4 MiB
# value makes: in one process (the owner's own call, process_isolated) and on a shared cache's
# client and owner (two processes). Kernel copies (socket I/O) are not counted; RocksDB's own
# (write batch, memtable) are, and are named in the traces (LARDER_COPY_TRACE=1).
# Usage: bench/copies/run.sh [BUILD_DIR]   (default: build)
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
build=$(cd "${1:-$here/../../build}" && pwd)
work=$(mktemp -d)
trap 'pkill -f "larder-test-helper hold $work" 2>/dev/null || true; rm -rf "$work"' EXIT
gcc -O2 -shared -fPIC "$here/memcpy_count.c" -o "$work/count.so" -ldl
g++ -std=c++20 -O2 -I"$here/../../include" "$here/set_once.cpp" -L"$build" -llarder \
  -Wl,-rpath,"$build" -o "$work/set_once"
export LARDER_COPY_MIN=$((4 << 20))
echo "one process (the owner's own set; the last two copies are RocksDB's flush at close):"
LD_PRELOAD="$work/count.so" "$work/set_once" "$work/iso" iso 2>&1 | grep copies
(sleep 60 | LD_PRELOAD="$work/count.so" LARDER_COPY_USR1=1 \
  "$build/tests/larder-test-helper" hold "$work/sh" shared >"$work/owner.out" 2>"$work/owner.err" &)
for _ in $(seq 100); do grep -q ready "$work/owner.out" 2>/dev/null && break; sleep 0.05; done
echo "shared client:"
LD_PRELOAD="$work/count.so" "$work/set_once" "$work/sh" shared 2>&1 | grep copies
pid=$(pgrep -f "larder-test-helper hold $work/sh")
kill -USR1 "$pid"
for _ in $(seq 100); do grep -q copies "$work/owner.err" && break; sleep 0.05; done
echo "shared owner (answering that set; RocksDB's write batch and memtable included):"
grep copies "$work/owner.err"
