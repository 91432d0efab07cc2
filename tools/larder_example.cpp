// larder-example: writes, reads and inspects a real cache at the default location (or
// $LARDER_CACHE_ROOT). Run twice to see statistics carried across runs.
#include <cstdio>
#include <iostream>

#include <fmt/format.h>

#include "larder/larder.hpp"

namespace {

const char* status_name(larder::EntryStatus s) {
  switch (s) {
    case larder::EntryStatus::fresh:
      return "fresh";
    case larder::EntryStatus::stale:
      return "stale";
    case larder::EntryStatus::expired:
      return "expired";
    case larder::EntryStatus::invalid:
      return "invalid";
  }
  return "?";
}

}  // namespace

int main() {
  try {
    larder::Config config = larder::Config::from_env();
    config.strategy = larder::Strategy::shared;  // one directory: visible across runs
    larder::Cache cache = larder::Cache::open(config);
    fmt::print("cache directory: {}{}\n", cache.directory().string(),
               cache.degraded() ? " (degraded: " + cache.last_error() + ")" : "");

    // An "expensive" result, computed once and reused on later runs.
    int computed = 0;
    const std::string key = larder::CacheKey::from_parts({"example", "weather", "berlin"});
    const std::string value = cache.get_or_compute(
        key,
        [&] {
          ++computed;
          return std::string(R"({"city":"Berlin","temp_c":7})");
        },
        {.ttl = std::chrono::hours(1), .category = "api", .metadata = {{"source", "example"}}});
    fmt::print("get_or_compute({}) -> {} ({})\n", key, value,
               computed ? "computed now" : "served from the cache");

    cache.set("example:counter",
              std::to_string(std::stoi(cache.get_or("example:counter", "0")) + 1),
              {.ttl = std::chrono::seconds(0), .category = "runs", .metadata = {}});
    fmt::print("this example has run {} time(s) against this cache\n",
               cache.get_or("example:counter", "?"));

    if (auto info = cache.metadata(key)) {
      fmt::print("entry {}: status {}, {} bytes, category {}, accessed {} time(s), age {:.1f}s\n",
                 info->key, status_name(info->status), info->size_bytes, info->category,
                 info->access_count, info->age_seconds());
    }
    cache.flush();
    const larder::Stats s = cache.stats();
    fmt::print("stats: {} entries, {} bytes, hits {}, misses {}, sets {}, hit rate {:.1f}%\n",
               s.total_entries, s.total_size_bytes, s.hit_count, s.miss_count, s.set_count,
               s.hit_rate());
    for (const auto& [category, n] : s.categories) fmt::print("  category {}: {}\n", category, n);
    fmt::print("statistics file: {}/.cache_stats.json\n", cache.directory().string());
    return 0;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "larder-example: %s\n", e.what());
    return 1;
  }
}
