// larder-quickbench: a small measurement of the core against raw RocksDB opened with the same
// options in the same process and run (kv::open_rocks_kv). Prints medians of several rounds and
// the ratio larder/raw per row. Not a timed test; the full benchmark suite is tools/larder-bench
// (issue 5). Usage: larder-quickbench [--keys N] [--rounds R] [--value-size B] [--dir DIR]
//                                     [--open N]   (instead: open time of an N-entry cache)
#include <sys/stat.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <functional>
#include <random>
#include <stdexcept>
#include <string>
#include <vector>

#include <fmt/format.h>

#include "kv/rocks_kv.hpp"
#include "larder/larder.hpp"

namespace {

namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;

double ops_per_second(std::size_t ops, const std::function<void()>& body) {
  const auto t0 = Clock::now();
  body();
  return static_cast<double>(ops) / std::chrono::duration<double>(Clock::now() - t0).count();
}

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

std::string key_of(std::size_t i) {
  return fmt::format("key{:08}", i);
}

fs::path fresh_dir(const fs::path& base, const std::string& name) {
  const fs::path p = base / name;
  fs::remove_all(p);
  fs::create_directories(p);
  ::chmod(p.c_str(), 0700);
  return p;
}

// A shared-strategy cache in a fresh directory, without limits or periodic cleanup.
larder::Config unlimited_config(const fs::path& dir) {
  larder::Config cfg;
  cfg.cache_root = dir;
  cfg.strategy = larder::Strategy::shared;
  cfg.max_entries = 0;
  cfg.max_size_bytes = 0;
  cfg.cleanup_interval = std::chrono::seconds(0);
  return cfg;
}

// Fills a cache with `n` entries of 100 bytes, closes it, then times Cache::open (and stats(),
// whose status counts scan the expiry index) `rounds` times.
int measure_open(const fs::path& base, std::size_t n, std::size_t rounds) {
  larder::Config cfg = unlimited_config(fresh_dir(base, "open"));
  {
    larder::Cache cache = larder::Cache::open(cfg);
    const std::string value(100, 'v');
    for (std::size_t i = 0; i < n; ++i) cache.set(key_of(i), value);
  }
  std::vector<double> open_ms, stats_ms;
  for (std::size_t r = 0; r < rounds; ++r) {
    auto t0 = Clock::now();
    larder::Cache cache = larder::Cache::open(cfg);
    auto t1 = Clock::now();
    const larder::Stats s = cache.stats();
    auto t2 = Clock::now();
    if (s.total_entries != n) return 1;
    open_ms.push_back(std::chrono::duration<double, std::milli>(t1 - t0).count());
    stats_ms.push_back(std::chrono::duration<double, std::milli>(t2 - t1).count());
  }
  fs::remove_all(base);
  fmt::print("larder-quickbench: {} entries after a clean close, median of {} rounds\n", n, rounds);
  fmt::print("open: {:.1f} ms, stats(): {:.1f} ms\n", median(open_ms), median(stats_ms));
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  std::size_t keys = 100'000, rounds = 3, value_size = 1000, open_entries = 0;
  fs::path base = fs::temp_directory_path() / fmt::format("larder-quickbench-{}", ::getpid());
  for (int i = 1; i + 1 < argc; i += 2) {
    const std::string a = argv[i];
    if (a == "--keys")
      keys = std::strtoull(argv[i + 1], nullptr, 10);
    else if (a == "--rounds")
      rounds = std::strtoull(argv[i + 1], nullptr, 10);
    else if (a == "--value-size")
      value_size = std::strtoull(argv[i + 1], nullptr, 10);
    else if (a == "--dir")
      base = argv[i + 1];
    else if (a == "--open")
      open_entries = std::strtoull(argv[i + 1], nullptr, 10);
    else {
      std::fprintf(stderr, "larder-quickbench: unknown option %s\n", a.c_str());
      return 2;
    }
  }
  if (open_entries > 0) return measure_open(base, open_entries, rounds);
  const std::string value(value_size, 'v');
  const std::size_t hot = std::min<std::size_t>(1000, keys);
  std::mt19937_64 rng(7);
  std::vector<std::size_t> order(keys);
  for (std::size_t i = 0; i < keys; ++i) order[i] = i;
  std::shuffle(order.begin(), order.end(), rng);

  struct Row {
    std::string name;
    std::vector<double> raw, larder;
  };
  std::vector<Row> rows = {{"put/set below limits", {}, {}},
                           {"get, every key once (uniform)", {}, {}},
                           {"get, hot set of 1000 keys", {}, {}},
                           {"set at the limit (each evicts)", {}, {}}};
  std::size_t sink = 0;
  for (std::size_t round = 0; round < rounds; ++round) {
    // Raw RocksDB: same options, the entries column family, one Put / Get per operation.
    std::unique_ptr<larder::kv::Kv> raw;
    if (!larder::kv::open_rocks_kv(fresh_dir(base, "raw"), {}, &raw).ok()) return 1;
    std::string out;
    rows[0].raw.push_back(ops_per_second(keys, [&] {
      for (std::size_t i : order) {
        auto b = raw->new_batch();
        b->put(larder::kv::Cf::entries, key_of(i), value);
        if (!raw->write(*b).ok()) throw std::runtime_error("raw RocksDB write failed");
      }
    }));
    rows[1].raw.push_back(ops_per_second(keys, [&] {
      for (std::size_t i : order) sink += raw->get(larder::kv::Cf::entries, key_of(i), &out).ok();
    }));
    rows[2].raw.push_back(ops_per_second(hot * 300, [&] {
      for (int r = 0; r < 300; ++r)
        for (std::size_t i = 0; i < hot; ++i)
          sink += raw->get(larder::kv::Cf::entries, key_of(order[i]), &out).ok();
    }));
    rows[3].raw.push_back(rows[0].raw.back());  // the baseline for any set is a raw put
    raw.reset();

    larder::Config cfg = unlimited_config(fresh_dir(base, "larder"));
    {
      larder::Cache cache = larder::Cache::open(cfg);
      rows[0].larder.push_back(ops_per_second(keys, [&] {
        for (std::size_t i : order) sink += cache.set(key_of(i), value);
      }));
      rows[1].larder.push_back(ops_per_second(keys, [&] {
        for (std::size_t i : order) sink += cache.get(key_of(i)).has_value();
      }));
      cache.flush();  // apply the uniform pass's buffered hits before timing the next row
      rows[2].larder.push_back(ops_per_second(hot * 300, [&] {
        for (int r = 0; r < 300; ++r)
          for (std::size_t i = 0; i < hot; ++i) sink += cache.get(key_of(order[i])).has_value();
      }));
    }
    cfg.cache_root = fresh_dir(base, "larder-limit");
    cfg.max_entries = keys / 10;
    {
      larder::Cache cache = larder::Cache::open(cfg);
      for (std::size_t i = 0; i < keys / 10; ++i) cache.set(key_of(keys + i), value);
      rows[3].larder.push_back(ops_per_second(keys, [&] {
        for (std::size_t i : order) sink += cache.set(key_of(i), value);
      }));
    }
  }
  fs::remove_all(base);
  fmt::print("larder-quickbench: {} keys, {}-byte values, LRU, median of {} rounds\n", keys,
             value_size, rounds);
  fmt::print("{:<34} {:>14} {:>14} {:>8}\n", "operation", "raw ops/s", "larder ops/s", "ratio");
  for (const auto& r : rows) {
    const double a = median(r.raw), b = median(r.larder);
    fmt::print("{:<34} {:>14.0f} {:>14.0f} {:>8.2f}\n", r.name, a, b, b / a);
  }
  return sink == 0 ? 1 : 0;
}
