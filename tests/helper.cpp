// larder-test-helper: the child process of the multi-process tests.
//   larder-test-helper write ROOT FIRST COUNT [MAX_ENTRIES]
// opens ROOT with the shared strategy (no limits, or MAX_ENTRIES with LRU), sets keys
// FIRST..FIRST+COUNT-1 with the values of helper_value(), and prints "ack N" after each set that
// returned true (flushed), so the parent knows which writes were acknowledged before it kills this
// process.
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <string>

#include "helper_values.hpp"
#include "larder/larder.hpp"

int main(int argc, char** argv) {
  if ((argc != 5 && argc != 6) || std::string(argv[1]) != "write") {
    std::fprintf(stderr, "usage: larder-test-helper write ROOT FIRST COUNT [MAX_ENTRIES]\n");
    return 2;
  }
  larder::Config cfg;
  cfg.cache_root = argv[2];
  cfg.strategy = larder::Strategy::shared;
  cfg.max_entries = argc == 6 ? std::strtoull(argv[5], nullptr, 10) : 0;
  cfg.max_size_bytes = 0;
  cfg.cleanup_interval = std::chrono::seconds(0);
  larder::Cache cache = larder::Cache::open(cfg);
  if (cache.degraded()) {
    std::fprintf(stderr, "degraded: %s\n", cache.last_error().c_str());
    return 3;
  }
  const long first = std::atol(argv[3]);
  const long count = std::atol(argv[4]);
  for (long i = first; i < first + count; ++i) {
    larder::SetOptions o;
    o.ttl = std::chrono::seconds(i % 3 == 0 ? 0 : 3600);
    o.category = larder::test::helper_category(i);
    if (cache.set(larder::test::helper_key(i), larder::test::helper_value(i), o)) {
      std::printf("ack %ld\n", i);
      std::fflush(stdout);
    }
  }
  return 0;
}
