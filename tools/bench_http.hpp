// larder-bench http (tools/bench_http.cpp): `cachectl serve` beside a bare cpp-httplib server.
// Thread-safety: run from main only.
#pragma once

// Runs the benchmark (cachectl is the one beside larder-bench) and prints its table. Returns the
// exit code: 0, or 1 when a server could not be started.
int bench_http(int rounds, double seconds);
