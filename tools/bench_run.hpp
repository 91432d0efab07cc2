// larder-bench run (tools/bench_run.cpp): the workload table, larder against raw RocksDB opened
// with the same options and with default options, in the same process and run.
// Thread-safety: run from main only.
#pragma once

#include <cstddef>
#include <filesystem>
#include <string>
#include <vector>

#include "larder/larder.hpp"

// A config of the benchmarks: a shared cache under `root`, no limits, no TTL, no cleanup,
// `policy` (lru when unknown).
larder::Config bench_config(const std::filesystem::path& root, const std::string& policy);

// Prints the table (or JSON) for `keys` keys per value size in `sizes`, each policy, medians of
// `rounds`. Returns the exit code: 0, or 1 when a measurement failed.
int run_table(std::size_t keys, int rounds, const std::vector<std::size_t>& sizes,
              const std::vector<std::string>& policies, bool json);
