#!/usr/bin/env bash
# The whole test suite: set-up, build, run. Ends with a line "larder: N passed, N failed"
# ("larder-sanitize: ..." / "larder-clang: ..." for the other modes).
#   scripts/test.sh              # normal build in build/
#   scripts/test.sh --sanitize   # address + undefined behaviour sanitizers in build-asan/
#   scripts/test.sh --clang      # clang++ build in build-clang/
set -euo pipefail
cd "$(dirname "$0")/.."

mode="${1:-}"
case "$mode" in
  "") build=build; opts=() ;;
  # The sanitizer build leaves the Python module out: an ASan extension needs libasan preloaded
  # into the interpreter.
  --sanitize) build=build-asan; opts=(-Db_sanitize=address,undefined -Db_lundef=false -Dbuildtype=debug -Dpython=disabled) ;;
  --clang) build=build-clang; opts=(); export LARDER_CXX=clang++ ;;
  *) echo "usage: scripts/test.sh [--sanitize|--clang]" >&2; exit 2 ;;
esac

scripts/setup.sh "$build" "${opts[@]}"
export ASAN_OPTIONS="detect_leaks=1:abort_on_error=0"
export UBSAN_OPTIONS="halt_on_error=1:print_stacktrace=1"
log="$build/test-output.txt"
status=0
# The layering rule of docs/ARCHITECTURE.md (includes point down).
python3 scripts/check_layers.py . || status=1
# Bounded: a hang fails the run instead of eating CI's time.
timeout 900 "$build/tests/larder-tests" 2>&1 | tee "$log" || status=$?
# The Python binding's pytest suite, against the module just built (Debian's python3: the one
# meson built it for), with warnings as errors: larder must emit none in normal use.
if [[ "$mode" != --sanitize ]] && compgen -G "$build/python/larder/_larder*.so" >/dev/null; then
  PYTHONPATH="$build/python" LARDER_CACHECTL="$PWD/$build/tools/cachectl" \
    timeout 600 /usr/bin/python3 -W error -m pytest -q -p no:cacheprovider python/tests \
    2>&1 | tee "$build/pytest-output.txt" || status=1
  if ! grep -qE '^[0-9]+ passed' "$build/pytest-output.txt" ||
    grep -qE '[0-9]+ (failed|error)' "$build/pytest-output.txt"; then
    status=1
  fi
elif [[ "$mode" != --sanitize ]]; then
  echo "python binding was not built (see $build.setup.log)" >&2
  status=1
fi
summary=$(grep -E '^\[doctest\] test cases:' "$log" | tail -n 1 || true)
passed=$(sed -E 's/.*\|\s*([0-9]+) passed.*/\1/' <<<"$summary")
failed=$(sed -E 's/.*\|\s*([0-9]+) failed.*/\1/' <<<"$summary")
if [[ -z "$summary" ]]; then  # the runner died before its summary: that is a failure
  passed=0
  failed=1
  if [[ $status -eq 0 ]]; then status=1; fi
fi
label="larder${mode:+-${mode#--}}"
echo "${label}: ${passed} passed, ${failed} failed"
exit "$status"
