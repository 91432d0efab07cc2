#!/usr/bin/env bash
# The main job: set-up, build, then write, read and inspect a real cache at the default location
# ($XDG_CACHE_HOME/larder or ~/.cache/larder; LARDER_CACHE_ROOT overrides). Run it twice to see
# values and statistics carried across runs.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh build
build/tools/larder-example
# What cachectl sees in that cache (docs/cachectl.md).
root_args=()
if [[ -n "${LARDER_CACHE_ROOT:-}" ]]; then root_args=(--root "$LARDER_CACHE_ROOT"); fi
echo
build/tools/cachectl "${root_args[@]}" status
echo
build/tools/cachectl "${root_args[@]}" ls -l --limit 10
