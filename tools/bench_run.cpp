// larder-bench run: the workload table (bench_run.hpp, docs/performance.md).
#include "bench_run.hpp"

#include <fmt/format.h>
#include <malloc.h>
#include <stdlib.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>
#include <CLI/CLI.hpp>
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
#include "core/config.hpp"
#include "kv/rocks_kv.hpp"
#include "rocksdb/db.h"
#include "trace/trace.hpp"

namespace fs = std::filesystem;
using larder::EvictionPolicy;

larder::Config bench_config(const fs::path& root, const std::string& policy) {
  larder::Config c;
  c.cache_root = root;
  c.strategy = larder::Strategy::shared;
  c.max_entries = 0;
  c.max_size_bytes = 0;
  c.default_ttl = std::chrono::seconds(0);
  c.cleanup_interval = std::chrono::seconds(0);
  c.eviction_policy = larder::core::policy_from_string(policy).value_or(EvictionPolicy::lru);
  return c;
}

namespace {

double timed(std::size_t ops, const std::function<void()>& body) {
  const auto t0 = std::chrono::steady_clock::now();
  body();
  return static_cast<double>(ops) /
         std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

double median_of(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v.empty() ? 0.0 : v[v.size() / 2];
}

fs::path fresh(const fs::path& base, const std::string& name) {
  const fs::path p = base / name;
  fs::remove_all(p);
  fs::create_directories(p);
  fs::permissions(p, fs::perms::owner_all);
  return p;
}

struct WorkItem {
  std::size_t key;
  bool set;
};

// Zipf(0.99) over n keys; `set_share` of the operations are sets.
std::vector<WorkItem> zipf_ops(std::size_t n, std::size_t count, double set_share,
                               std::uint64_t seed) {
  std::vector<double> cum(n);
  double total = 0;
  for (std::size_t i = 0; i < n; ++i) cum[i] = total += 1.0 / std::pow(double(i + 1), 0.99);
  std::mt19937_64 rng(seed);
  std::uniform_real_distribution<double> u(0, 1);
  std::vector<WorkItem> ops(count);
  for (auto& op : ops) {
    op.key = static_cast<std::size_t>(std::lower_bound(cum.begin(), cum.end(), u(rng) * total) -
                                      cum.begin());
    op.set = u(rng) < set_share;
  }
  return ops;
}

// RocksDB as a developer rolling their own cache opens it: default rocksdb::Options, the default
// column family, one Put / Get per operation.
class DefaultRocks {
 public:
  explicit DefaultRocks(const fs::path& dir) {
    rocksdb::Options o;
    o.create_if_missing = true;
    rocksdb::DB* db = nullptr;
    if (!rocksdb::DB::Open(o, dir.string(), &db).ok()) throw std::runtime_error("RocksDB open");
    db_.reset(db);
  }
  void put(const std::string& k, const std::string& v) {
    if (!db_->Put(rocksdb::WriteOptions(), k, v).ok())
      throw std::runtime_error("raw RocksDB write failed");
  }
  bool get(const std::string& k, std::string* v) {
    return db_->Get(rocksdb::ReadOptions(), k, v).ok();
  }

 private:
  std::unique_ptr<rocksdb::DB> db_;
};

}  // namespace

int run_table(std::size_t keys, int rounds, const std::vector<std::size_t>& sizes,
              const std::vector<std::string>& policies, bool json) {
  char tmpl[] = "/tmp/larder-bench-XXXXXX";
  const fs::path base = ::mkdtemp(tmpl);
  const std::vector<std::string> rows = {"set below limits",    "hot get (1000 keys)",
                                         "cold get (reopened)", "set at limits",
                                         "mixed 95/5 zipf",     "mixed 50/50 zipf"};
  // results[size][policy][row] = {raw, larder} medians
  std::string json_out = "[";
  std::size_t sink = 0;
  if (!json)
    std::printf("%-8s %-6s %-22s %12s %12s %7s %12s %8s\n", "value", "policy", "workload",
                "raw ops/s", "larder ops/s", "ratio", "default ops/s", "vs default");
  for (std::size_t size : sizes) {
    const std::size_t n = std::max<std::size_t>(1000, std::min(keys, (256u << 20) / size));
    const std::string value(size, 'v');
    std::vector<std::string> names(n);
    for (std::size_t i = 0; i < n; ++i) names[i] = fmt::format("key{:08}", i);
    std::vector<std::size_t> order(n);
    for (std::size_t i = 0; i < n; ++i) order[i] = i;
    std::shuffle(order.begin(), order.end(), std::mt19937_64(7));
    const auto mix95 = zipf_ops(n, n, 0.05, 1), mix50 = zipf_ops(n, n, 0.5, 2);
    const std::size_t hot = std::min<std::size_t>(1000, n), hot_rounds = 100;
    // Rounds outside, policies inside: a shared machine's drift then hits every policy alike, and
    // policies can be compared round by round.
    struct Figures {
      std::vector<std::vector<double>> raw, lar, dflt;  // per row, per round
    };
    std::map<std::string, Figures> figures;
    for (const std::string& policy : policies)
      figures[policy] = {std::vector<std::vector<double>>(rows.size()),
                         std::vector<std::vector<double>>(rows.size()),
                         std::vector<std::vector<double>>(rows.size())};
    for (int r = 0; r < rounds; ++r) {
      for (const std::string& policy : policies) {
        Figures& fig = figures[policy];
        auto& raw = fig.raw;
        auto& lar = fig.lar;
        auto& dflt = fig.dflt;
        // Raw RocksDB with default options (the second baseline).
        {
          const fs::path dir = fresh(base, "default");
          std::string out;
          {
            DefaultRocks db(dir);
            dflt[0].push_back(timed(n, [&] {
              for (std::size_t i : order) db.put(names[i], value);
            }));
            dflt[1].push_back(timed(hot * hot_rounds, [&] {
              for (std::size_t k = 0; k < hot_rounds; ++k)
                for (std::size_t i = 0; i < hot; ++i) sink += db.get(names[order[i]], &out);
            }));
            dflt[3].push_back(dflt[0].back());
            for (int m = 0; m < 2; ++m) {
              const auto& ops = m == 0 ? mix95 : mix50;
              dflt[4 + m].push_back(timed(ops.size(), [&] {
                for (const WorkItem& op : ops)
                  if (op.set)
                    db.put(names[op.key], value);
                  else
                    sink += db.get(names[op.key], &out);
              }));
            }
          }
          DefaultRocks db(dir);
          dflt[2].push_back(timed(n, [&] {
            for (std::size_t i : order) sink += db.get(names[i], &out);
          }));
        }
        // Raw RocksDB: the entries column family, one Put / Get per operation.
        const fs::path raw_dir = fresh(base, "raw");
        std::string out;
        {
          std::unique_ptr<larder::kv::Kv> db;
          if (!larder::kv::open_rocks_kv(raw_dir, {}, &db).ok()) return 1;
          auto put = [&](const std::string& k) {
            auto b = db->new_batch();
            b->put(larder::kv::Cf::entries, k, value);
            if (!db->write(*b).ok()) throw std::runtime_error("raw RocksDB write failed");
          };
          raw[0].push_back(timed(n, [&] {
            for (std::size_t i : order) put(names[i]);
          }));
          raw[1].push_back(timed(hot * hot_rounds, [&] {
            for (std::size_t k = 0; k < hot_rounds; ++k)
              for (std::size_t i = 0; i < hot; ++i)
                sink += db->get(larder::kv::Cf::entries, names[order[i]], &out).ok();
          }));
          raw[3].push_back(raw[0].back());  // any set's baseline is a raw put
          for (int m = 0; m < 2; ++m) {
            const auto& ops = m == 0 ? mix95 : mix50;
            raw[4 + m].push_back(timed(ops.size(), [&] {
              for (const WorkItem& op : ops)
                if (op.set)
                  put(names[op.key]);
                else
                  sink += db->get(larder::kv::Cf::entries, names[op.key], &out).ok();
            }));
          }
        }
        {
          std::unique_ptr<larder::kv::Kv> db;
          if (!larder::kv::open_rocks_kv(raw_dir, {}, &db).ok()) return 1;
          raw[2].push_back(timed(n, [&] {
            for (std::size_t i : order)
              sink += db->get(larder::kv::Cf::entries, names[i], &out).ok();
          }));
        }
        // larder with the policy: no limits for the set/get rows, then at a limit of n/10.
        larder::Config c = bench_config(fresh(base, "larder"), policy);
        if (policy == "ttl") c.default_ttl = std::chrono::seconds(3600);  // entries with a TTL
        {
          larder::Cache cache = larder::Cache::open(c);
          lar[0].push_back(timed(n, [&] {
            for (std::size_t i : order) sink += cache.set(names[i], value);
          }));
          cache.flush();
          lar[1].push_back(timed(hot * hot_rounds, [&] {
            for (std::size_t k = 0; k < hot_rounds; ++k)
              for (std::size_t i = 0; i < hot; ++i) sink += cache.get(names[order[i]]).has_value();
          }));
          cache.flush();
          for (int m = 0; m < 2; ++m) {
            const auto& ops = m == 0 ? mix95 : mix50;
            lar[4 + m].push_back(timed(ops.size(), [&] {
              for (const WorkItem& op : ops)
                if (op.set)
                  sink += cache.set(names[op.key], value);
                else
                  sink += cache.get(names[op.key]).has_value();
            }));
            cache.flush();
          }
        }
        {
          larder::Cache cache = larder::Cache::open(c);
          lar[2].push_back(timed(n, [&] {
            for (std::size_t i : order) sink += cache.get(names[i]).has_value();
          }));
        }
        // At the limit every set evicts. The ttl policy never evicts live entries, so its cache
        // is filled with n entries that have expired (a clock moved past their TTL): every set
        // then removes an expired entry, which is what a full ttl-policy cache does.
        c.cache_root = fresh(base, "larder-limit");
        c.max_entries = policy == "ttl" ? n : n / 10;
        auto clock_ns = std::make_shared<std::atomic<std::int64_t>>(
            std::chrono::duration_cast<std::chrono::nanoseconds>(
                std::chrono::system_clock::now().time_since_epoch())
                .count());
        c.clock = [clock_ns] {
          return std::chrono::system_clock::time_point(
              std::chrono::duration_cast<std::chrono::system_clock::duration>(
                  std::chrono::nanoseconds(clock_ns->load())));
        };
        {
          larder::Cache cache = larder::Cache::open(c);
          larder::SetOptions fill;
          if (policy == "ttl") fill.ttl = std::chrono::seconds(1);
          for (std::size_t i = 0; i < c.max_entries; ++i)
            cache.set(fmt::format("fill{:08}", i), value, fill);
          clock_ns->fetch_add(std::chrono::nanoseconds(std::chrono::hours(1)).count());
          std::size_t stored = 0;
          lar[3].push_back(timed(n, [&] {
            for (std::size_t i : order) stored += cache.set(names[i], value);
          }));
          sink += stored;
          if (stored != n)
            std::fprintf(stderr, "warning: %zu of %zu sets at the limit were refused\n", n - stored,
                         n);
        }
      }
    }
    for (const std::string& policy : policies) {
      Figures& fig = figures[policy];
      auto& raw = fig.raw;
      auto& lar = fig.lar;
      auto& dflt = fig.dflt;
      for (std::size_t row = 0; row < rows.size(); ++row) {
        const double a = median_of(raw[row]), b = median_of(lar[row]);
        // The ratio is the median of the per-round ratios: raw and larder run minutes apart at
        // most within a round, so this cancels much of a shared machine's drift.
        std::vector<double> per_round;
        for (std::size_t r = 0; r < raw[row].size() && r < lar[row].size(); ++r)
          per_round.push_back(lar[row][r] / raw[row][r]);
        const double ratio = median_of(per_round);
        std::vector<double> per_round_default;
        for (std::size_t r = 0; r < dflt[row].size() && r < lar[row].size(); ++r)
          per_round_default.push_back(lar[row][r] / dflt[row][r]);
        const double d = median_of(dflt[row]), ratio_default = median_of(per_round_default);
        if (json)
          json_out += fmt::format(
              "{}{{\"value_size\": {}, \"keys\": {}, \"policy\": \"{}\", \"workload\": \"{}\", "
              "\"raw_ops_per_s\": {:.0f}, \"larder_ops_per_s\": {:.0f}, \"ratio\": {:.3f}, "
              "\"default_ops_per_s\": {:.0f}, \"ratio_default\": {:.3f}}}",
              json_out.size() > 1 ? ", " : "", size, n, policy, rows[row], a, b, ratio, d,
              ratio_default);
        else
          std::printf("%-8zu %-6s %-22s %12.0f %12.0f %7.2f %12.0f %8.2f\n", size, policy.c_str(),
                      rows[row].c_str(), a, b, ratio, d, ratio_default);
      }
    }
    // S3-FIFO's hit cost against LRU's (a hit bumps a counter instead of moving the entry): the
    // median of the per-round ratios.
    if (figures.contains("s3fifo") && figures.contains("lru") && !json)
      for (const std::size_t row : {std::size_t{1}, std::size_t{2}}) {
        const auto& s3 = figures["s3fifo"].lar[row];
        const auto& lru = figures["lru"].lar[row];
        std::vector<double> per_round;
        for (std::size_t r = 0; r < s3.size() && r < lru.size(); ++r)
          per_round.push_back(s3[r] / lru[r]);
        std::printf("%-8zu s3fifo %-22s vs lru: %.0f / %.0f ops/s, ratio %.2f\n", size,
                    rows[row].c_str(), median_of(s3), median_of(lru), median_of(per_round));
      }
  }
  if (json) std::printf("%s]\n", json_out.c_str());
  fs::remove_all(base);
  return sink == 0 ? 1 : 0;
}
