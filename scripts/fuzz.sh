#!/usr/bin/env bash
# Builds the libFuzzer targets (fuzz/) with clang under ASan + UBSan in build-fuzz/ and runs each
# for a bounded time over its seed corpus (fuzz/corpus/<target>/; new inputs go to a scratch
# copy, the repository's corpus is not changed). A crash, leak or sanitizer report fails the run.
#   scripts/fuzz.sh [SECONDS_PER_TARGET]   # default 30
set -euo pipefail
cd "$(dirname "$0")/.."
seconds="${1:-30}"
export LARDER_CXX=clang++
scripts/setup.sh build-fuzz -Dfuzz=true -Dtests=false -Db_sanitize=address,undefined \
  -Db_lundef=false -Dbuildtype=debug
export ASAN_OPTIONS="detect_leaks=1:allocator_may_return_null=1"
export UBSAN_OPTIONS="halt_on_error=1:print_stacktrace=1:suppressions=$PWD/fuzz/ubsan.supp"
status=0
for target in protocol stats_file counter_file trace records; do
  scratch=$(mktemp -d)
  cp -r "fuzz/corpus/$target/." "$scratch/"
  if build-fuzz/fuzz/fuzz_"$target" -max_total_time="$seconds" -rss_limit_mb=2048 \
      -malloc_limit_mb=1024 -max_len=65536 -artifact_prefix=build-fuzz/ "$scratch" \
      >"build-fuzz/fuzz_$target.log" 2>&1; then
    echo "fuzz_$target: ok ($(grep -c '' "build-fuzz/fuzz_$target.log") log lines, ${seconds}s)"
  else
    echo "fuzz_$target: FAILED" >&2
    tail -n 40 "build-fuzz/fuzz_$target.log" >&2
    status=1
  fi
  rm -rf "$scratch"
done
exit "$status"
