// larder-engine-bench: the engine v2 measurements of issue 12 that larder-bench run does not
// make (figures in docs/performance.md; run by hand, never a timed test).
//   memory      the memory store (Strategy::disabled) against an in-process unordered_map + list
//               LRU with the same keys and values (value copied out on get): hot get, uniform
//               get, set below the limit, set at the limit. Median of per-round ratios.
//   tail        1M uniform gets over 100k keys with the housekeeper running (cleanup every
//               second), memory and RocksDB: p50 / p99 / p99.9 / max latency.
//   growth      the longest get of a hot key, and the longest set, while a thread sets 1M new
//               keys (the maps' growth), memory and RocksDB.
//   threads     gets on 2 threads against 1 (memory store; RocksDB, hot set of 1000 keys), and
//               sets on 2 threads against 1.
//   invalidate  invalidate_pattern over 100k keys (a literal prefix matching 1/9 of them, and a
//               pattern with no literal prefix) and cleanup() of 100k expired entries, each with
//               a concurrent setter whose longest set is printed.
// Usage: larder-engine-bench [memory|tail|growth|threads|invalidate|all] [--rounds R]
//                            [--only TEXT]   (threads: only the rows whose name contains TEXT)
#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <functional>
#include <list>
#include <random>
#include <string>
#include <string_view>
#include <thread>
#include <unordered_map>
#include <vector>

#include <fmt/format.h>

#include "larder/larder.hpp"

namespace {

namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;
using larder::Cache;
using larder::Config;

struct TempDir {
  fs::path path;
  TempDir() {
    std::string t = (fs::temp_directory_path() / "larder-ebench-XXXXXX").string();
    if (::mkdtemp(t.data()) == nullptr) throw std::runtime_error("mkdtemp failed");
    path = t;
  }
  ~TempDir() {
    std::error_code ec;
    fs::remove_all(path, ec);
  }
};

double seconds_of(const std::function<void()>& body) {
  const auto t0 = Clock::now();
  body();
  return std::chrono::duration<double>(Clock::now() - t0).count();
}

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v.empty() ? 0 : v[v.size() / 2];
}

std::string key_of(std::size_t i) {
  return fmt::format("key:{:08}", i);
}

// The baseline: a textbook LRU map, values copied out on get.
class MapLru {
 public:
  explicit MapLru(std::size_t capacity) : capacity_(capacity) {}
  std::optional<std::string> get(const std::string& key) {
    auto it = map_.find(key);
    if (it == map_.end()) return std::nullopt;
    order_.splice(order_.end(), order_, it->second.pos);
    return it->second.value;
  }
  void set(const std::string& key, std::string value) {
    auto it = map_.find(key);
    if (it != map_.end()) {
      it->second.value = std::move(value);
      order_.splice(order_.end(), order_, it->second.pos);
      return;
    }
    if (capacity_ != 0 && map_.size() >= capacity_) {
      map_.erase(order_.front());
      order_.pop_front();
    }
    order_.push_back(key);
    map_.emplace(key, Node{std::move(value), std::prev(order_.end())});
  }

 private:
  struct Node {
    std::string value;
    std::list<std::string>::iterator pos;
  };
  std::size_t capacity_;
  std::list<std::string> order_;
  std::unordered_map<std::string, Node> map_;
};

Config memory_config(const fs::path& root, std::uint64_t max_entries) {
  Config c;
  c.cache_root = root;
  c.strategy = larder::Strategy::disabled;
  c.max_entries = max_entries;
  c.max_size_bytes = 0;
  c.default_ttl = std::chrono::seconds(0);
  c.cleanup_interval = std::chrono::seconds(0);
  return c;
}

Config rocks_config(const fs::path& root, std::uint64_t max_entries) {
  Config c = memory_config(root, max_entries);
  c.strategy = larder::Strategy::process_isolated;
  return c;
}

void print_ratio(const char* what, const std::vector<double>& base,
                 const std::vector<double>& ours) {
  std::vector<double> ratios;
  for (std::size_t i = 0; i < base.size(); ++i) ratios.push_back(ours[i] / base[i]);
  std::printf("%-34s %12.0f %12.0f %7.2f\n", what, median(base), median(ours), median(ratios));
}

void bench_memory(int rounds) {
  constexpr std::size_t kKeys = 100'000, kOps = 400'000;
  const std::string value(100, 'v');
  std::printf("memory store vs unordered_map + list LRU, 100 B values, %zu keys, %d rounds\n",
              kKeys, rounds);
  std::printf("%-34s %12s %12s %7s\n", "workload", "map ops/s", "larder ops/s", "ratio");
  std::vector<double> b_hot, l_hot, b_uni, l_uni, b_set, l_set, b_lim, l_lim;
  for (int r = 0; r < rounds; ++r) {
    std::mt19937_64 rng(static_cast<unsigned>(r));
    std::vector<std::size_t> uniform(kOps), hot(kOps);
    for (auto& k : uniform) k = rng() % kKeys;
    for (auto& k : hot) k = rng() % 1000;
    std::vector<std::string> keys;
    for (std::size_t i = 0; i < kKeys; ++i) keys.push_back(key_of(i));
    TempDir dir;
    {
      MapLru m(0);
      b_set.push_back(kKeys / seconds_of([&] {
                        for (const auto& k : keys) m.set(k, value);
                      }));
      std::size_t sink = 0;
      b_uni.push_back(kOps / seconds_of([&] {
                        for (auto i : uniform) sink += m.get(keys[i])->size();
                      }));
      b_hot.push_back(kOps / seconds_of([&] {
                        for (auto i : hot) sink += m.get(keys[i])->size();
                      }));
      MapLru lim(kKeys / 10);
      for (std::size_t i = 0; i < kKeys / 10; ++i) lim.set(keys[i], value);
      b_lim.push_back(kKeys / seconds_of([&] {
                        for (const auto& k : keys) lim.set(k + "x", value);
                      }));
      if (sink == 0) std::printf("?");
    }
    {
      Cache c = Cache::open(memory_config(dir.path, 0));
      l_set.push_back(kKeys / seconds_of([&] {
                        for (const auto& k : keys) (void)c.set(k, value);
                      }));
      std::size_t sink = 0;
      l_uni.push_back(kOps / seconds_of([&] {
                        for (auto i : uniform) sink += c.get(keys[i])->size();
                      }));
      l_hot.push_back(kOps / seconds_of([&] {
                        for (auto i : hot) sink += c.get(keys[i])->size();
                      }));
      if (sink == 0) std::printf("?");
    }
    {
      TempDir d2;
      Cache c = Cache::open(memory_config(d2.path, kKeys / 10));
      for (std::size_t i = 0; i < kKeys / 10; ++i) (void)c.set(keys[i], value);
      l_lim.push_back(kKeys / seconds_of([&] {
                        for (const auto& k : keys) (void)c.set(k + "x", value);
                      }));
    }
  }
  print_ratio("hot get (1000 keys)", b_hot, l_hot);
  print_ratio("uniform get", b_uni, l_uni);
  print_ratio("set below the limit", b_set, l_set);
  print_ratio("set at the limit (every set evicts)", b_lim, l_lim);
}

void print_latencies(const char* what, std::vector<double>& ns) {
  std::sort(ns.begin(), ns.end());
  auto at = [&](double q) {
    return ns[std::min(ns.size() - 1, static_cast<std::size_t>(q * ns.size()))] / 1000.0;
  };
  std::printf("%-10s %10.1f %10.1f %10.1f %10.1f\n", what, at(0.5), at(0.99), at(0.999),
              ns.back() / 1000.0);
}

void bench_tail() {
  constexpr std::size_t kKeys = 100'000, kOps = 1'000'000;
  std::printf("1M uniform gets over 100k keys of 100 B, housekeeper running (cleanup every 1 s)\n");
  std::printf("%-10s %10s %10s %10s %10s\n", "store", "p50 us", "p99 us", "p99.9 us", "max us");
  for (const bool rocks : {false, true}) {
    TempDir dir;
    Config cfg = rocks ? rocks_config(dir.path, 0) : memory_config(dir.path, 0);
    cfg.cleanup_interval = std::chrono::seconds(1);
    Cache c = Cache::open(cfg);
    const std::string value(100, 'v');
    std::vector<std::string> keys;
    for (std::size_t i = 0; i < kKeys; ++i) {
      keys.push_back(key_of(i));
      (void)c.set(keys.back(), value);
    }
    std::mt19937_64 rng(1);
    std::vector<double> ns;
    ns.reserve(kOps);
    for (std::size_t i = 0; i < kOps; ++i) {
      const std::string& k = keys[rng() % kKeys];
      const auto t0 = Clock::now();
      auto v = c.get(k);
      ns.push_back(std::chrono::duration<double, std::nano>(Clock::now() - t0).count());
      if (!v) std::printf("miss?\n");
    }
    print_latencies(rocks ? "rocksdb" : "memory", ns);
  }
}

// The longest get of a hot key while another thread sets 1M new keys (the store's maps grow,
// and rehash, under it), memory and RocksDB; gets are spaced 20 us apart.
void bench_growth() {
  constexpr std::size_t kSets = 1'000'000;
  std::printf("gets of 1000 hot keys while another thread sets 1M new keys of 100 B\n");
  std::printf("%-10s %10s %14s %14s\n", "store", "gets", "longest get ms", "longest set ms");
  for (const bool rocks : {false, true}) {
    TempDir dir;
    Cache c = Cache::open(rocks ? rocks_config(dir.path, 0) : memory_config(dir.path, 0));
    const std::string value(100, 'v');
    for (std::size_t i = 0; i < 1000; ++i) (void)c.set(key_of(i), value);
    std::atomic<bool> done{false};
    double worst_get = 0, worst_set = 0;
    std::size_t gets = 0;
    std::thread reader([&] {
      for (; !done.load(); ++gets) {
        const std::string k = key_of(gets % 1000);
        const auto t0 = Clock::now();
        auto v = c.get(k);
        worst_get = std::max(worst_get, std::chrono::duration<double>(Clock::now() - t0).count());
        if (!v) std::printf("miss?\n");
        std::this_thread::sleep_for(std::chrono::microseconds(20));
      }
    });
    for (std::size_t i = 0; i < kSets; ++i) {
      const std::string k = fmt::format("new:{:08}", (i * 2654435761u) % 100'000'000);
      worst_set = std::max(worst_set, seconds_of([&] { (void)c.set(k, value); }));
    }
    done = true;
    reader.join();
    std::printf("%-10s %10zu %14.1f %14.1f\n", rocks ? "rocksdb" : "memory", gets, worst_get * 1000,
                worst_set * 1000);
  }
}

double threaded_ops(int threads, std::size_t ops_each,
                    const std::function<void(int, std::size_t)>& op) {
  std::vector<std::thread> ts;
  std::atomic<int> ready{0};
  std::atomic<bool> go{false};
  Clock::time_point t0;
  for (int t = 0; t < threads; ++t)
    ts.emplace_back([&, t] {
      ++ready;
      while (!go.load()) std::this_thread::yield();
      for (std::size_t i = 0; i < ops_each; ++i) op(t, i);
    });
  while (ready.load() < threads) std::this_thread::yield();
  t0 = Clock::now();
  go = true;
  for (auto& t : ts) t.join();
  return static_cast<double>(threads * ops_each) /
         std::chrono::duration<double>(Clock::now() - t0).count();
}

void bench_threads(int rounds, const std::string& only) {
  constexpr std::size_t kKeys = 100'000, kOps = 300'000;
  std::printf("threads: ops/s on 1 and 2 threads (medians of %d rounds)\n", rounds);
  std::printf("%-40s %12s %12s %7s\n", "workload", "1 thread", "2 threads", "ratio");
  const std::string value(100, 'v');
  std::vector<std::string> keys;
  for (std::size_t i = 0; i < kKeys; ++i) keys.push_back(key_of(i));
  struct Row {
    const char* name;
    bool rocks;
    std::size_t key_range;
    bool sets;
  };
  for (const Row row :
       {Row{"memory: uniform get", false, kKeys, false},
        Row{"rocksdb: hot get (1000 keys)", true, 1000, false},
        Row{"memory: set", false, kKeys, true}, Row{"rocksdb: set", true, kKeys, true}}) {
    if (!only.empty() && std::string_view(row.name).find(only) == std::string_view::npos) continue;
    std::vector<double> one, two, ratio;
    for (int r = 0; r < rounds; ++r) {
      TempDir dir;
      Cache c = Cache::open(row.rocks ? rocks_config(dir.path, 0) : memory_config(dir.path, 0));
      for (const auto& k : keys) (void)c.set(k, value);
      auto op = [&](int t, std::size_t i) {
        const std::size_t k =
            (i * 2654435761u + static_cast<std::size_t>(t) * 7919) % row.key_range;
        if (row.sets)
          (void)c.set(keys[k], value);
        else
          (void)c.get(keys[k]);
      };
      one.push_back(threaded_ops(1, kOps, op));
      two.push_back(threaded_ops(2, kOps / 2, op));
      ratio.push_back(two.back() / one.back());
    }
    std::printf("%-40s %12.0f %12.0f %7.2f\n", row.name, median(one), median(two), median(ratio));
  }
}

// Runs `body` while another thread sets keys; returns the body's time and the longest set.
std::pair<double, double> with_setter(Cache& c, const std::function<void()>& body) {
  std::atomic<bool> stop{false};
  double longest = 0;
  std::thread setter([&] {
    std::size_t i = 0;
    while (!stop.load()) {
      const auto t0 = Clock::now();
      (void)c.set(fmt::format("other:{}", i++ % 1000), "x");
      longest =
          std::max(longest, std::chrono::duration<double, std::milli>(Clock::now() - t0).count());
    }
  });
  const double s = seconds_of(body);
  stop = true;
  setter.join();
  return {s * 1000, longest};
}

void bench_invalidate() {
  constexpr std::size_t kKeys = 100'000;
  std::printf("invalidation and cleanup over 100k keys of 100 B, with a concurrent setter\n");
  std::printf("%-10s %-44s %10s %16s\n", "store", "operation", "ms", "longest set ms");
  const std::string value(100, 'v');
  for (const bool rocks : {false, true}) {
    const char* store = rocks ? "rocksdb" : "memory";
    for (const char* pattern : {"p3:*", "*:00001*"}) {
      TempDir dir;
      Cache c = Cache::open(rocks ? rocks_config(dir.path, 0) : memory_config(dir.path, 0));
      for (std::size_t i = 0; i < kKeys; ++i)
        (void)c.set(fmt::format("p{}:{:08}", i % 9, i), value);
      std::size_t n = 0;
      const auto [ms, longest] = with_setter(c, [&] { n = c.invalidate_pattern(pattern); });
      std::printf("%-10s %-44s %10.1f %16.2f\n", store,
                  fmt::format("invalidate_pattern(\"{}\"): {} keys", pattern, n).c_str(), ms,
                  longest);
    }
    TempDir dir;
    auto now = std::make_shared<std::atomic<std::int64_t>>(1'800'000'000LL * 1'000'000'000LL);
    Config cfg = rocks ? rocks_config(dir.path, 0) : memory_config(dir.path, 0);
    cfg.clock = [now] {
      return std::chrono::system_clock::time_point(std::chrono::nanoseconds(now->load()));
    };
    Cache c = Cache::open(cfg);
    larder::SetOptions o;
    o.ttl = std::chrono::seconds(10);
    for (std::size_t i = 0; i < kKeys; ++i) (void)c.set(key_of(i), value, o);
    now->fetch_add(3600LL * 1'000'000'000LL);
    std::size_t n = 0;
    const auto [ms, longest] = with_setter(c, [&] { n = c.cleanup(); });
    std::printf("%-10s %-44s %10.1f %16.2f\n", store,
                fmt::format("cleanup(): {} expired entries", n).c_str(), ms, longest);
  }
}

}  // namespace

int main(int argc, char** argv) {
  std::string what = argc > 1 ? argv[1] : "all";
  int rounds = 3;
  std::string only;  // threads: only the rows whose name contains this
  for (int i = 2; i + 1 < argc; ++i) {
    if (std::strcmp(argv[i], "--rounds") == 0) rounds = std::max(1, std::atoi(argv[i + 1]));
    if (std::strcmp(argv[i], "--only") == 0) only = argv[i + 1];
  }
  if (what != "all" && what != "memory" && what != "tail" && what != "growth" &&
      what != "threads" && what != "invalidate") {
    std::fprintf(
        stderr,
        "usage: larder-engine-bench [memory|tail|growth|threads|invalidate|all] [--rounds R] "
        "[--only TEXT]\n");
    return 2;
  }
  if (what == "all" || what == "memory") bench_memory(rounds);
  if (what == "all" || what == "tail") bench_tail();
  if (what == "all" || what == "growth") bench_growth();
  if (what == "all" || what == "threads") bench_threads(rounds, only);
  if (what == "all" || what == "invalidate") bench_invalidate();
  return 0;
}
