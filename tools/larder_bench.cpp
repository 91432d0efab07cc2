// larder-bench: larder's benchmark program (run by hand; figures in docs/performance.md).
//
//   larder-bench run [--keys N] [--rounds R] [--sizes 100,1000,65536]
//                    [--policies lru,lfu,fifo,ttl] [--json]
//       the workload table: larder against raw RocksDB opened with the same options, and with
//       default rocksdb::Options, in the same process and run (set below / at the limits, hot
//       get, cold get after reopen, Zipf 95/5 and 50/50 mixes), medians and ratios
//   larder-bench open [--entries 10000,100000,1000000] [--rounds R] [--json]
//       open time after a clean close, time to the first get, to the first set and to the index
//       loaded (the first stats()), stats() time, peak RSS and the index's RSS per entry (each
//       size in its own process)
//   larder-bench getset [--keys N] [--value-size B] [--policy P] [--json]
//       the workload bench/peer_diskcache.py compares with python-diskcache
//   larder-bench replay TRACE [--policy lru|lfu|fifo|s3fifo|all] (--capacity-entries N |
//                       --capacity-bytes N|P%) [--store memory|rocksdb] [--dir DIR] [--json]
//       replays a request trace (CSV `timestamp,key,size` or libCacheSim oracleGeneral,
//       optionally .zst) through larder's real eviction code; miss and byte miss ratios
//
// Exit status: 0 done, 1 a measurement or the trace failed (the message says which record),
// 2 usage error.
#include <malloc.h>
#include <stdlib.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <functional>
#include <map>
#include <random>
#include <stdexcept>
#include <string>
#include <vector>

#include <fmt/format.h>
#include <CLI/CLI.hpp>

#ifdef LARDER_BENCH_REMOTE
#include "bench_http.hpp"
#include "bench_remote.hpp"
#include "bench_run.hpp"
#endif

#include "core/config.hpp"
#include "kv/rocks_kv.hpp"
#include "rocksdb/db.h"
#include "trace/trace.hpp"

namespace {

using larder::EvictionPolicy;
namespace fs = std::filesystem;

const char* name_of(EvictionPolicy p) {
  return larder::core::to_string(p);
}

std::string json_string(const std::string& s) {
  std::string out = "\"";
  for (const char c : s) {
    if (c == '"' || c == '\\')
      out += {'\\', c};
    else if (static_cast<unsigned char>(c) < 0x20)
      out += fmt::format("\\u{:04x}", static_cast<unsigned>(c));
    else
      out += c;
  }
  return out + "\"";
}

// "1000" or "5%" (of the trace's unique bytes). False when neither.
bool parse_bytes(const std::string& text, std::uint64_t unique_bytes, std::uint64_t* out) {
  try {
    std::size_t used = 0;
    if (!text.empty() && text.back() == '%') {
      const double pct = std::stod(text.substr(0, text.size() - 1), &used);
      if (used != text.size() - 1 || pct <= 0 || pct > 100) return false;
      *out = static_cast<std::uint64_t>(static_cast<double>(unique_bytes) * pct / 100.0);
      if (*out == 0) *out = 1;
      return true;
    }
    const unsigned long long v = std::stoull(text, &used);
    if (used != text.size() || v == 0) return false;
    *out = v;
    return true;
  } catch (const std::exception&) {
    return false;
  }
}

int replay(const std::string& path, const std::string& policy, std::uint64_t entries,
           const std::string& bytes_text, const std::string& store, const std::string& dir,
           bool json) {
  auto loaded = larder::trace::load(path);
  if (!loaded) {
    std::fprintf(stderr, "larder-bench: %s\n", loaded.error().c_str());
    return 1;
  }
  const larder::trace::Trace& trace = *loaded;
  larder::trace::Capacity cap;
  cap.entries = entries;
  if (!bytes_text.empty() && !parse_bytes(bytes_text, trace.unique_bytes, &cap.bytes)) {
    std::fprintf(stderr,
                 "larder-bench: --capacity-bytes: expected a positive number of bytes or a "
                 "percentage like 5%%, got '%s'\n",
                 bytes_text.c_str());
    return 2;
  }
  // (ttl never evicts live entries: nothing to replay)
  const std::vector<EvictionPolicy> policies =
      policy == "all" ? std::vector<EvictionPolicy>{EvictionPolicy::lru, EvictionPolicy::lfu,
                                                    EvictionPolicy::fifo, EvictionPolicy::s3fifo}
                      : std::vector<EvictionPolicy>{
                            larder::core::policy_from_string(policy).value_or(EvictionPolicy::lru)};

  std::vector<larder::trace::Result> results;
  for (EvictionPolicy p : policies) {
    fs::path store_dir;
    std::string made;
    if (store == "rocksdb") {
      if (dir.empty()) {
        char tmpl[] = "/tmp/larder-replay-XXXXXX";
        if (::mkdtemp(tmpl) == nullptr) {
          std::fprintf(stderr, "larder-bench: cannot create a temporary directory\n");
          return 1;
        }
        made = tmpl;
        store_dir = made;
      } else {
        store_dir = fs::path(dir) / name_of(p);
      }
    }
    results.push_back(larder::trace::replay(trace, p, cap, store_dir));
    if (!made.empty()) fs::remove_all(made);
  }

  if (json) {
    std::string out = fmt::format(
        "{{\"trace\": {}, \"requests\": {}, \"unique_keys\": {}, \"unique_bytes\": {}, "
        "\"capacity_entries\": {}, \"capacity_bytes\": {}, \"store\": \"{}\", \"results\": [",
        json_string(path), trace.requests.size(), trace.unique_keys, trace.unique_bytes,
        cap.entries, cap.bytes, store);
    for (std::size_t i = 0; i < results.size(); ++i) {
      const auto& r = results[i];
      out += fmt::format(
          "{}{{\"policy\": \"{}\", \"misses\": {}, \"miss_ratio\": {:.6f}, "
          "\"byte_miss_ratio\": {:.6f}, \"not_admitted\": {}, \"seconds\": {:.3f}}}",
          i ? ", " : "", name_of(r.policy), r.misses, r.miss_ratio(), r.byte_miss_ratio(),
          r.not_admitted, r.seconds);
    }
    std::printf("%s]}\n", out.c_str());
    return 0;
  }
  std::printf("trace %s: %zu requests, %llu unique keys, %llu unique bytes\n", path.c_str(),
              trace.requests.size(), static_cast<unsigned long long>(trace.unique_keys),
              static_cast<unsigned long long>(trace.unique_bytes));
  std::printf("capacity: %s entries, %s bytes; store: %s\n\n",
              cap.entries ? std::to_string(cap.entries).c_str() : "unlimited",
              cap.bytes ? std::to_string(cap.bytes).c_str() : "unlimited", store.c_str());
  std::printf("%-6s %12s %12s %16s %14s %10s\n", "policy", "misses", "miss ratio",
              "byte miss ratio", "not admitted", "seconds");
  for (const auto& r : results)
    std::printf("%-6s %12llu %12.4f %16.4f %14llu %10.2f\n", name_of(r.policy),
                static_cast<unsigned long long>(r.misses), r.miss_ratio(), r.byte_miss_ratio(),
                static_cast<unsigned long long>(r.not_admitted), r.seconds);
  return 0;
}

// A shared-strategy cache in `root` with `policy`, no limits and no periodic cleanup.

// The peer workload (bench/peer_diskcache.py runs the same one through python-diskcache):
// `keys` sets of `value_size` bytes into a fresh cache, then `keys` gets of random stored keys.
// Prints sets/s and gets/s, medians of `rounds`.
int getset(std::size_t keys, std::size_t value_size, const std::string& policy,
           const std::string& dir, int rounds, bool json) {
  std::vector<double> sets, gets;
  const std::string value(value_size, 'v');
  std::vector<std::string> names(keys);
  for (std::size_t i = 0; i < keys; ++i) names[i] = fmt::format("key{:08}", i);
  std::vector<std::size_t> order(keys);
  std::mt19937_64 rng(7);
  for (auto& o : order) o = rng() % keys;
  for (int r = 0; r < rounds; ++r) {
    char tmpl[] = "/tmp/larder-getset-XXXXXX";
    const fs::path root = dir.empty() ? fs::path(::mkdtemp(tmpl)) : fs::path(dir) / "getset";
    if (!dir.empty()) {
      fs::remove_all(root);
      fs::create_directories(root);
      fs::permissions(root, fs::perms::owner_all);
    }
    const larder::Config c = bench_config(root, policy);
    {
      larder::Cache cache = larder::Cache::open(c);
      auto t0 = std::chrono::steady_clock::now();
      for (const auto& k : names) cache.set(k, value);
      auto t1 = std::chrono::steady_clock::now();
      std::size_t hits = 0;
      for (std::size_t i : order) hits += cache.get(names[i]) ? 1 : 0;
      auto t2 = std::chrono::steady_clock::now();
      if (hits != keys)
        std::fprintf(stderr, "warning: %zu of %zu gets missed\n", keys - hits, keys);
      sets.push_back(static_cast<double>(keys) / std::chrono::duration<double>(t1 - t0).count());
      gets.push_back(static_cast<double>(keys) / std::chrono::duration<double>(t2 - t1).count());
    }
    fs::remove_all(root);
  }
  auto median = [](std::vector<double> v) {
    std::sort(v.begin(), v.end());
    return v[v.size() / 2];
  };
  if (json)
    std::printf(
        "{\"keys\": %zu, \"value_size\": %zu, \"policy\": \"%s\", \"sets_per_s\": %.0f, "
        "\"gets_per_s\": %.0f}\n",
        keys, value_size, policy.c_str(), median(sets), median(gets));
  else
    std::printf("larder (%s): %.0f sets/s, %.0f gets/s (%zu keys of %zu B, median of %d)\n",
                policy.c_str(), median(sets), median(gets), keys, value_size, rounds);
  return 0;
}

// Open time of a cache holding `n` entries of 100 B after a clean close (median of `rounds`),
// the time of stats() on it, and the peak RSS of the process that filled and reopened it. Each
// size runs in a child process so that its peak RSS is its own.
struct OpenResult {
  double open_ms = 0, stats_ms = 0;
  long peak_rss_kb = 0;
  // From the start of open(): a get returned, then a set, then stats() (which waits for the
  // index load: index_ms).
  double first_get_ms = 0, first_set_ms = 0, index_ms = 0;
  double index_bytes_per_entry = 0;  // RSS growth of a reopen with its index, per entry
};

long current_rss_kb() {
  long pages = 0, resident = 0;
  if (FILE* f = std::fopen("/proc/self/statm", "r")) {
    if (std::fscanf(f, "%ld %ld", &pages, &resident) != 2) resident = 0;
    std::fclose(f);
  }
  return resident * (::sysconf(_SC_PAGESIZE) / 1024);
}

OpenResult measure_open(std::size_t n, int rounds) {
  int fds[2];
  if (::pipe(fds) != 0) return {};
  const pid_t pid = ::fork();
  if (pid == 0) {
    char tmpl[] = "/tmp/larder-open-XXXXXX";
    const fs::path root = ::mkdtemp(tmpl);
    larder::Config c = bench_config(root, "lru");
    c.default_ttl = std::chrono::hours(24);  // entries with a TTL: stats() scans their index
    {
      larder::Cache cache = larder::Cache::open(c);
      const std::string value(100, 'v');
      for (std::size_t i = 0; i < n; ++i) cache.set(fmt::format("key{:08}", i), value);
    }
    std::vector<double> open_ms, stats_ms, get_ms, set_ms, index_ms, per_entry;
    auto ms = [](auto a, auto b) {
      return std::chrono::duration<double, std::milli>(b - a).count();
    };
    for (int r = 0; r < rounds; ++r) {
      ::malloc_trim(0);
      const long rss0 = current_rss_kb();
      const auto t0 = std::chrono::steady_clock::now();
      larder::Cache cache = larder::Cache::open(c);
      const auto t1 = std::chrono::steady_clock::now();
      if (!cache.get(fmt::format("key{:08}", n / 2))) ::_exit(1);
      const auto t2 = std::chrono::steady_clock::now();
      if (!cache.set("another key", "v")) ::_exit(1);  // needs no eviction: no wait for the index
      const auto t3 = std::chrono::steady_clock::now();
      (void)cache.stats();  // its status counts wait for the index
      const auto t4 = std::chrono::steady_clock::now();
      const long rss1 = current_rss_kb();
      (void)cache.remove("another key");
      const auto t5 = std::chrono::steady_clock::now();
      const larder::Stats st = cache.stats();
      const auto t6 = std::chrono::steady_clock::now();
      if (st.total_entries != n) ::_exit(1);
      open_ms.push_back(ms(t0, t1));
      get_ms.push_back(ms(t0, t2));
      set_ms.push_back(ms(t0, t3));
      index_ms.push_back(ms(t0, t4));
      stats_ms.push_back(ms(t5, t6));
      per_entry.push_back(static_cast<double>(rss1 - rss0) * 1024.0 / static_cast<double>(n));
    }
    auto med = [](std::vector<double> v) {
      std::sort(v.begin(), v.end());
      return v[v.size() / 2];
    };
    rusage ru{};
    ::getrusage(RUSAGE_SELF, &ru);
    OpenResult r{med(open_ms), med(stats_ms), ru.ru_maxrss,  med(get_ms),
                 med(set_ms),  med(index_ms), med(per_entry)};
    (void)!::write(fds[1], &r, sizeof r);
    fs::remove_all(root);
    ::_exit(0);
  }
  ::close(fds[1]);
  OpenResult r;
  if (::read(fds[0], &r, sizeof r) != sizeof r) r = {};
  ::close(fds[0]);
  ::waitpid(pid, nullptr, 0);
  return r;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"larder-bench: benchmarks and trace replay for larder"};
  app.require_subcommand(1);
  auto* rp = app.add_subcommand(
      "replay", "Replay a request trace through larder's eviction code; print miss ratios");
  std::string path, policy = "all", bytes, store = "memory", dir;
  std::uint64_t entries = 0;
  bool json = false;
  rp->add_option("trace", path,
                 "Trace file: .csv (timestamp,key,size) or libCacheSim oracleGeneral "
                 "(binary, 24-byte records); .zst compressed too")
      ->required();
  rp->add_option("--policy", policy, "lru, lfu, fifo, s3fifo or all")
      ->check(CLI::IsMember({"lru", "lfu", "fifo", "s3fifo", "all"}));
  auto* by_entries = rp->add_option("--capacity-entries", entries, "Cache capacity in entries")
                         ->check(CLI::PositiveNumber);
  auto* by_bytes = rp->add_option("--capacity-bytes", bytes,
                                  "Cache capacity in bytes, or a percentage of the trace's unique "
                                  "bytes (e.g. 5%)");
  rp->add_option("--store", store, "memory (default) or rocksdb (a temporary store)")
      ->check(CLI::IsMember({"memory", "rocksdb"}));
  rp->add_option("--dir", dir, "With --store rocksdb: keep the stores in DIR/<policy>");
  rp->add_flag("--json", json, "Machine-readable output");
  auto* gs = app.add_subcommand(
      "getset", "The peer workload: N sets into a fresh cache, then N random gets; ops/s");
  std::size_t gs_keys = 100'000, gs_value = 1000;
  int gs_rounds = 3;
  std::string gs_policy = "lru", gs_dir;
  bool gs_json = false;
  gs->add_option("--keys", gs_keys, "Number of keys")->check(CLI::PositiveNumber);
  gs->add_option("--value-size", gs_value, "Value size in bytes");
  gs->add_option("--policy", gs_policy, "lru, lfu, fifo or s3fifo")
      ->check(CLI::IsMember({"lru", "lfu", "fifo", "s3fifo"}));
  gs->add_option("--rounds", gs_rounds, "Rounds (the median is printed)")
      ->check(CLI::PositiveNumber);
  gs->add_option("--dir", gs_dir, "Directory for the cache (default: a temporary one)");
  gs->add_flag("--json", gs_json, "Machine-readable output");
  auto* op = app.add_subcommand(
      "open", "Open time and stats() time of caches holding N entries; peak RSS per size");
  std::vector<std::size_t> op_sizes = {10'000, 100'000, 1'000'000};
  int op_rounds = 3;
  bool op_json = false;
  op->add_option("--entries", op_sizes, "Cache sizes (entries of 100 B)")->delimiter(',');
  op->add_option("--rounds", op_rounds, "Opens per size (the median is printed)")
      ->check(CLI::PositiveNumber);
  op->add_flag("--json", op_json, "Machine-readable output");
#ifdef LARDER_BENCH_REMOTE
  auto* rm = app.add_subcommand(
      "remote", "The remote tier beside bare hiredis GET/SET round trips to the same Redis");
  std::string rm_url;
  std::size_t rm_keys = 5000, rm_value = 1024;
  int rm_rounds = 5;
  rm->add_option("--url", rm_url, "Redis URL (default: start a redis-server from PATH)");
  rm->add_option("--keys", rm_keys, "Keys per round")->check(CLI::PositiveNumber);
  rm->add_option("--value-size", rm_value, "Value bytes");
  rm->add_option("--rounds", rm_rounds, "Rounds (medians are printed)")->check(CLI::PositiveNumber);
#endif
  auto* ht = app.add_subcommand(
      "http",
      "cachectl serve beside a bare cpp-httplib server: GET of a 1 KB entry, 1 and 8 clients");
  int ht_rounds = 5;
  double ht_seconds = 2.0;
  ht->add_option("--rounds", ht_rounds, "Rounds (medians are printed)")->check(CLI::PositiveNumber);
  ht->add_option("--seconds", ht_seconds, "Seconds per measurement")->check(CLI::PositiveNumber);
  auto* rn = app.add_subcommand(
      "run", "The workload table: larder against raw RocksDB (same options, same run)");
  std::size_t rn_keys = 50'000;
  int rn_rounds = 3;
  std::vector<std::size_t> rn_sizes = {100, 1000, 65536};
  std::vector<std::string> rn_policies = {"lru", "lfu", "fifo", "ttl", "s3fifo"};
  bool rn_json = false;
  rn->add_option("--keys", rn_keys, "Keys per value size (capped at 256 MiB of values)")
      ->check(CLI::PositiveNumber);
  rn->add_option("--rounds", rn_rounds, "Rounds (medians are printed)")->check(CLI::PositiveNumber);
  rn->add_option("--sizes", rn_sizes, "Value sizes in bytes")->delimiter(',');
  rn->add_option("--policies", rn_policies, "Policies")
      ->delimiter(',')
      ->check(CLI::IsMember({"lru", "lfu", "fifo", "ttl", "s3fifo"}));
  rn->add_flag("--json", rn_json, "Machine-readable output");
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e) == 0 ? 0 : 2;
  }
  if (rp->parsed()) {
    if (by_entries->count() == 0 && by_bytes->count() == 0) {
      std::fprintf(stderr,
                   "larder-bench replay: give --capacity-entries or --capacity-bytes (or both)\n");
      return 2;
    }
    return replay(path, policy, entries, bytes, store, dir, json);
  }
#ifdef LARDER_BENCH_REMOTE
  if (rm->parsed()) return bench_remote(rm_url, rm_keys, rm_value, rm_rounds);
#endif
  if (ht->parsed()) return bench_http(ht_rounds, ht_seconds);
  if (rn->parsed()) return run_table(rn_keys, rn_rounds, rn_sizes, rn_policies, rn_json);
  if (gs->parsed()) return getset(gs_keys, gs_value, gs_policy, gs_dir, gs_rounds, gs_json);
  if (op->parsed()) {
    if (!op_json)
      std::printf("%-10s %8s %13s %13s %14s %11s %13s %14s\n", "entries", "open ms", "first get ms",
                  "first set ms", "index done ms", "stats() ms", "peak RSS MiB", "index B/entry");
    std::string json = "[";
    for (std::size_t n : op_sizes) {
      const OpenResult r = measure_open(n, op_rounds);
      if (r.peak_rss_kb == 0) {
        std::fprintf(stderr, "larder-bench open: the measurement of %zu entries failed\n", n);
        return 1;
      }
      if (op_json)
        json += fmt::format(
            "{}{{\"entries\": {}, \"open_ms\": {:.2f}, \"first_get_ms\": {:.2f}, "
            "\"first_set_ms\": {:.2f}, \"index_ms\": {:.2f}, \"stats_ms\": {:.2f}, "
            "\"peak_rss_kb\": {}, \"index_bytes_per_entry\": {:.1f}}}",
            json.size() > 1 ? ", " : "", n, r.open_ms, r.first_get_ms, r.first_set_ms, r.index_ms,
            r.stats_ms, r.peak_rss_kb, r.index_bytes_per_entry);
      else
        std::printf("%-10zu %8.1f %13.1f %13.1f %14.1f %11.1f %13.1f %14.1f\n", n, r.open_ms,
                    r.first_get_ms, r.first_set_ms, r.index_ms, r.stats_ms,
                    static_cast<double>(r.peak_rss_kb) / 1024.0, r.index_bytes_per_entry);
    }
    if (op_json) std::printf("%s]\n", json.c_str());
    return 0;
  }
  return 2;
}
