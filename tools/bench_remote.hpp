// larder-bench remote (tools/bench_remote.cpp): the remote tier beside bare hiredis round trips.
// Thread-safety: run from main only.
#pragma once

#include <cstddef>
#include <string>

// Runs the benchmark against `url` (empty: a redis-server it starts itself) and prints its
// table. Returns the exit code: 0, 1 (Redis unusable), 2 (a bad URL).
int bench_remote(const std::string& url, std::size_t keys, std::size_t value_size, int rounds);
