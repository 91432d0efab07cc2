#include "engine/engine.hpp"

#include <algorithm>
#include <cstring>
#include <limits>
#include <set>

#include <fmt/format.h>

namespace larder::engine {

using kv::Cf;
using kv::Code;
using kv::Status;

namespace {

constexpr std::size_t kPage = 512;  // records handled per batch in scans
constexpr std::int64_t kNoWatermark = std::numeric_limits<std::int64_t>::min();

// counters family keys
constexpr std::string_view kFormatKey = "format";
constexpr std::string_view kPolicyKey = "policy";
constexpr std::string_view kStaleFactorKey = "stale_factor";
constexpr std::string_view kTotalsKey = "totals";  // LE64 entries, LE64 bytes, LE64 tick
constexpr std::string_view kWatermarkKey = "watermark";
constexpr std::string_view kRebuildingKey = "rebuilding";
// LE64 max entries, LE64 max bytes, LE64 default TTL in seconds (only informative: tools).
constexpr std::string_view kLimitsKey = "limits";
constexpr std::string_view kCategoryCounterPrefix = "c/";
constexpr std::string_view kCategoryCounterEnd = "c0";  // '/' + 1

std::string le64(std::uint64_t v) {
  std::string s;
  put_le64(s, v);
  return s;
}

std::string totals(std::uint64_t entries, std::uint64_t bytes, std::uint64_t tick) {
  std::string s;
  put_le64(s, entries);
  put_le64(s, bytes);
  put_le64(s, tick);
  return s;
}

std::string category_counter(std::string_view category) {
  std::string s(kCategoryCounterPrefix);
  s.append(category);
  return s;
}

Status corrupt(std::string_view what, std::string_view key) {
  return {Code::corruption, fmt::format("undecodable {} record for key '{}'", what, key)};
}

// Bytes after `s` in key order with `s` as a prefix-free bound: s + '\0'.
std::string successor(std::string_view s) {
  std::string out(s);
  out.push_back('\0');
  return out;
}

// The smallest key greater than every key starting with `prefix`; empty when there is none.
std::string prefix_end(std::string_view prefix) {
  std::string end(prefix);
  while (!end.empty()) {
    auto& c = reinterpret_cast<unsigned char&>(end.back());
    if (c != 0xff) {
      ++c;
      return end;
    }
    end.pop_back();
  }
  return end;
}

using Page = std::vector<std::pair<std::string, std::string>>;

// Visits a whole column family in pages of kPage records (copied out, so `fn` may read and write
// the store). Stops at the first failure, from the scan or from `fn`.
Status for_each_page(kv::Kv& kv, Cf cf, const std::function<Status(const Page&)>& fn) {
  std::string from;
  for (;;) {
    Page page;
    Status s = kv.scan(cf, from, "", [&](std::string_view k, std::string_view v) {
      page.emplace_back(k, v);
      return page.size() < kPage;
    });
    if (!s.ok()) return s;
    if (page.empty()) return Status();
    if (s = fn(page); !s.ok()) return s;
    if (page.size() < kPage) return Status();
    from = successor(page.back().first);
  }
}

}  // namespace

struct Engine::Txn {
  explicit Txn(kv::Kv& kv) : batch(kv.new_batch()) {}
  std::unique_ptr<kv::Batch> batch;
  std::int64_t d_entries = 0, d_bytes = 0;
  std::map<std::string, std::int64_t> d_cats;
  std::set<std::string, std::less<>> removed;  // keys removed in this transaction
  std::uint64_t evictions = 0, expirations = 0, invalidations = 0;
  std::optional<std::string> order_floor, expiry_floor;  // new floors on success
  std::optional<std::int64_t> watermark;
  bool counters_dirty = false;
  // Eviction candidates (Engine::victims_): how many leading ones this transaction used, the
  // candidates that replace them (read by this transaction's scan), and whether it put an order
  // key (any, or one below the candidates kept: that makes them incomplete).
  std::size_t victims_used = 0;
  std::optional<std::deque<std::string>> new_victims;
  bool order_put = false, order_put_below_victims = false;
};

void Engine::put_order(Txn& t, std::string_view key) {
  const std::deque<std::string>& kept = t.new_victims ? *t.new_victims : victims_;
  if (!kept.empty() && key < kept.back()) t.order_put_below_victims = true;
  t.order_put = true;
  t.batch->put(Cf::order, key, "");
}

Engine::Engine(std::unique_ptr<kv::Kv> kv, Options options,
               std::shared_ptr<std::atomic<std::int64_t>> watermark, Counters* counters,
               const util::Logger* log)
    : kv_(std::move(kv)),
      options_(options),
      watermark_(std::move(watermark)),
      counters_(counters),
      log_(log) {
  if (!watermark_) watermark_ = std::make_shared<std::atomic<std::int64_t>>(kNoWatermark);
}

Engine::~Engine() {
  std::lock_guard lock(mu_);
  const Status s = flush_access_locked();
  if (!s.ok()) log_->logf(util::Level::warn, "could not save access data on close: {}", s.message);
}

std::function<bool(std::string_view)> Engine::drop_predicate(
    std::shared_ptr<std::atomic<std::int64_t>> watermark, double stale_factor) {
  return drop_predicate(std::move(watermark), std::make_shared<std::atomic<double>>(stale_factor));
}

std::function<bool(std::string_view)> Engine::drop_predicate(
    std::shared_ptr<std::atomic<std::int64_t>> watermark,
    std::shared_ptr<const std::atomic<double>> stale_factor_in) {
  return [watermark = std::move(watermark),
          factor = std::move(stale_factor_in)](std::string_view record) {
    const double stale_factor = factor->load(std::memory_order_relaxed);
    std::uint8_t flags = 0;
    std::int64_t created = 0, ttl = 0;
    if (!decode_entry_times(record, &flags, &created, &ttl) || ttl <= 0) return false;
    return deadlines(created, ttl, stale_factor).expired_at < watermark->load();
  };
}

// ---------------------------------------------------------------- open, meta, rebuild

void Engine::write_meta(kv::Batch& batch) {
  batch.put(Cf::counters, kFormatKey, le64(kStoreFormat));
  batch.put(Cf::counters, kPolicyKey, le64(static_cast<std::uint64_t>(options_.policy)));
  std::uint64_t bits = 0;
  std::memcpy(&bits, &options_.stale_factor, sizeof bits);
  batch.put(Cf::counters, kStaleFactorKey, le64(bits));
  batch.put(Cf::counters, kLimitsKey, limits_record());
}

std::string Engine::limits_record() const {
  return le64(options_.max_entries) + le64(options_.max_bytes) +
         le64(static_cast<std::uint64_t>(options_.default_ttl_s));
}

Status Engine::open() {
  std::lock_guard lock(mu_);
  return open_locked();
}

Status Engine::recover_store() {
  std::lock_guard lock(mu_);
  bool reopened = false;
  Status s = kv_->recover(&reopened);
  if (!reopened) return s;
  // A write reported as failed may still have reached the log that the reopen replayed: the
  // store's counters are the truth, and cached scan positions may be stale.
  order_floor_.clear();
  expiry_floor_.clear();
  victims_.clear();
  cats_.clear();
  if (Status o = open_locked(); !o.ok()) return o;
  return s;
}

Status Engine::open_locked() {
  std::map<std::string, std::string, std::less<>> counters;
  Status s = kv_->scan(Cf::counters, "", "", [&](std::string_view k, std::string_view v) {
    if (!k.starts_with(kCategoryCounterPrefix)) counters.emplace(k, v);
    return true;
  });
  if (!s.ok()) return s;
  auto u64 = [&](std::string_view name, std::uint64_t* out) {
    auto it = counters.find(name);
    if (it == counters.end() || it->second.size() != 8) return false;
    *out = get_le64(it->second);
    return true;
  };
  std::uint64_t format = 0;
  if (!u64(kFormatKey, &format)) {
    // A new store, or one whose counters were lost: the entries family is the truth.
    bool any = false;
    s = kv_->scan(Cf::entries, "", "", [&](std::string_view, std::string_view) {
      any = true;
      return false;
    });
    if (!s.ok()) return s;
    if (any) return rebuild_locked();
    auto batch = kv_->new_batch();
    write_meta(*batch);
    batch->put(Cf::counters, kTotalsKey, totals(0, 0, 0));
    return kv_->write(*batch);
  }
  if (format > kStoreFormat)
    return {Code::io_error, fmt::format("the store has format {}, newer than this larder's {}",
                                        format, kStoreFormat)};
  if (auto it = counters.find(kTotalsKey); it != counters.end() && it->second.size() == 24) {
    const std::string_view t = it->second;
    entries_ = get_le64(t);
    bytes_ = get_le64(t.substr(8));
    tick_ = get_le64(t.substr(16));
  }
  std::uint64_t policy = 0, factor_bits = 0, rebuilding = 0, wm = 0;
  u64(kPolicyKey, &policy);
  u64(kStaleFactorKey, &factor_bits);
  u64(kRebuildingKey, &rebuilding);
  double factor = 0;
  std::memcpy(&factor, &factor_bits, sizeof factor);
  auto limits = counters.find(kLimitsKey);
  s = kv_->scan(Cf::counters, kCategoryCounterPrefix, kCategoryCounterEnd,
                [&](std::string_view k, std::string_view val) {
                  if (val.size() == 8)
                    cats_[std::string(k.substr(kCategoryCounterPrefix.size()))] = get_le64(val);
                  return true;
                });
  if (!s.ok()) return s;
  const bool factor_changed = factor != options_.stale_factor;
  if (!factor_changed && u64(kWatermarkKey, &wm)) watermark_->store(static_cast<std::int64_t>(wm));
  if (policy != static_cast<std::uint64_t>(options_.policy) || factor_changed || rebuilding != 0) {
    log_->logf(util::Level::info,
               "rebuilding indexes (policy or stale factor changed, or an "
               "earlier rebuild was interrupted)");
    return rebuild_locked();
  }
  if (limits == counters.end() || limits->second != limits_record()) {
    auto batch = kv_->new_batch();
    batch->put(Cf::counters, kLimitsKey, limits_record());
    return kv_->write(*batch);
  }
  return Status();
}

Status Engine::read_settings(kv::Kv& kv, Options* out, bool* found) {
  *found = false;
  std::string v;
  Status s = kv.get(Cf::counters, kFormatKey, &v);
  if (s.not_found()) return Status();
  if (!s.ok()) return s;
  if (v.size() != 8 || get_le64(v) > kStoreFormat) return Status();
  *found = true;
  if (kv.get(Cf::counters, kPolicyKey, &v).ok() && v.size() == 8 &&
      get_le64(v) <= static_cast<std::uint64_t>(EvictionPolicy::ttl))
    out->policy = static_cast<EvictionPolicy>(get_le64(v));
  if (kv.get(Cf::counters, kStaleFactorKey, &v).ok() && v.size() == 8) {
    const std::uint64_t bits = get_le64(v);
    double factor = 0;
    std::memcpy(&factor, &bits, sizeof factor);
    if (factor >= 1.0) out->stale_factor = factor;
  }
  if (kv.get(Cf::counters, kLimitsKey, &v).ok() && v.size() == 24) {
    const std::string_view l = v;
    out->max_entries = get_le64(l);
    out->max_bytes = get_le64(l.substr(8));
    out->default_ttl_s = static_cast<std::int64_t>(get_le64(l.substr(16)));
  }
  return Status();
}

Status Engine::compact() {
  for (int cf = 0; cf < kv::kCfCount; ++cf)
    if (Status s = kv_->compact(static_cast<Cf>(cf)); !s.ok()) return s;
  return Status();
}

Status Engine::rebuild() {
  std::lock_guard lock(mu_);
  return rebuild_locked();
}

Status Engine::rebuild_locked() {
  drain_pending();
  victims_.clear();
  {
    auto batch = kv_->new_batch();
    batch->put(Cf::counters, kRebuildingKey, le64(1));
    batch->delete_range(Cf::counters, kCategoryCounterPrefix, kCategoryCounterEnd);
    if (Status s = kv_->write(*batch); !s.ok()) return s;
  }
  // The order, expiry and category families are derived from the entries: dropping them (rather
  // than deleting their records) also discards table files too damaged to read. The access
  // family holds what cannot be derived (access history) and is kept, unless it cannot be read.
  for (const Cf cf : {Cf::order, Cf::expiry, Cf::category})
    if (Status s = kv_->reset(cf); !s.ok()) return s;
  if (Status s =
          kv_->scan(Cf::access, "", "", [](std::string_view, std::string_view) { return true; });
      s.code == kv::Code::corruption) {
    ++counters_->error;
    log_->logf(util::Level::warn,
               "the access family is damaged ({}); rebuilding it from the entries", s.message);
    if (s = kv_->reset(Cf::access); !s.ok()) return s;
  } else if (!s.ok()) {
    return s;
  }
  watermark_->store(kNoWatermark);
  std::uint64_t entries = 0, bytes = 0, dropped = 0;
  std::map<std::string, std::uint64_t> cats;
  Status scanned = for_each_page(*kv_, Cf::entries, [&](const Page& page) {
    auto batch = kv_->new_batch();
    for (const auto& [key, record] : page) {
      EntryHeader h;
      std::size_t offset = 0;
      if (!decode_entry(record, &h, &offset)) {
        batch->del(Cf::entries, key);
        batch->del(Cf::access, key);
        ++dropped;
        continue;
      }
      AccessRecord a;
      bool found = false;
      std::string bytes_a;
      if (kv_->get(Cf::access, key, &bytes_a).ok() && decode_access(bytes_a, &a)) found = true;
      if (!found) {
        a = AccessRecord{};
        a.last_tick = a.insert_tick = ++tick_;
        a.access_count = 1;
        a.last_access_ns = h.created_ns;
      }
      a.size = record.size() - offset;
      a.category = h.category;
      a.has_expiry = false;
      a.stale_t = 0;
      if (h.invalid()) {
        a.has_expiry = true;
        a.expiry_t = 0;
      }
      if (h.ttl_s > 0) {
        const Deadlines d = deadlines(h.created_ns, h.ttl_s, options_.stale_factor);
        a.stale_t = static_cast<std::uint64_t>(std::max<std::int64_t>(d.stale_at, 0));
        if (!h.invalid()) {
          a.has_expiry = true;
          a.expiry_t = expiry_time(d.expired_at);
        }
      }
      batch->put(Cf::access, key, encode_access(a));
      if (options_.policy != EvictionPolicy::ttl)
        batch->put(Cf::order, order_key(options_.policy, a, key), "");
      if (a.has_expiry) batch->put(Cf::expiry, expiry_key(a.expiry_t, key), le64(a.stale_t));
      batch->put(Cf::category, category_key(a.category, key), "");
      ++entries;
      bytes += a.size;
      ++cats[a.category];
    }
    return kv_->write(*batch);
  });
  if (!scanned.ok()) return scanned;
  // Access records without an entry.
  std::string scratch;
  scanned = for_each_page(*kv_, Cf::access, [&](const Page& page) {
    auto batch = kv_->new_batch();
    for (const auto& [key, unused] : page)
      if (kv_->get(Cf::entries, key, &scratch).not_found()) batch->del(Cf::access, key);
    return batch->count() == 0 ? Status() : kv_->write(*batch);
  });
  if (!scanned.ok()) return scanned;
  auto batch = kv_->new_batch();
  write_meta(*batch);
  batch->put(Cf::counters, kTotalsKey, totals(entries, bytes, tick_.load()));
  batch->put(Cf::counters, kWatermarkKey, le64(static_cast<std::uint64_t>(kNoWatermark)));
  for (const auto& [cat, n] : cats) batch->put(Cf::counters, category_counter(cat), le64(n));
  batch->del(Cf::counters, kRebuildingKey);
  if (Status s2 = kv_->write(*batch); !s2.ok()) return s2;
  entries_ = entries;
  bytes_ = bytes;
  cats_ = std::move(cats);
  order_floor_.clear();
  victims_.clear();
  expiry_floor_.clear();
  if (dropped > 0) {
    counters_->error += dropped;
    log_->logf(util::Level::warn, "rebuild dropped {} undecodable entries", dropped);
  }
  return Status();
}

// ---------------------------------------------------------------- verify

Status Engine::verify(VerifyReport* report) {
  constexpr std::uint64_t kUnknownCount = ~std::uint64_t{0};
  std::lock_guard lock(mu_);
  if (Status s = flush_access_locked(); !s.ok()) return s;
  *report = {};
  auto problem = [&](std::string line) {
    if (report->problems.size() < 1000) report->problems.push_back(std::move(line));
  };
  std::map<std::string, std::uint64_t> cats;
  std::uint64_t with_expiry = 0;
  const bool has_order = options_.policy != EvictionPolicy::ttl;
  std::string scratch;
  // An index family the store cannot read (a damaged table file) is one problem, reported once;
  // verify goes on with the rest. A damaged entries family fails verify (values are lost).
  bool damaged[kv::kCfCount] = {};
  auto index_damaged = [&](Cf cf, const Status& st) {
    if (cf == Cf::entries || st.code != kv::Code::corruption) return false;
    if (!damaged[static_cast<int>(cf)])
      problem(fmt::format("the {} family cannot be read ({}); verify --repair rebuilds it",
                          kv::to_string(cf), st.message));
    damaged[static_cast<int>(cf)] = true;
    return true;
  };
  auto exists = [&](Cf cf, const std::string& key, Status* st) {
    *st = kv_->get(cf, key, &scratch);
    if (index_damaged(cf, *st)) {
      *st = Status();
      return true;
    }
    return st->ok();
  };
  Status failure;
  Status scanned = for_each_page(*kv_, Cf::entries, [&](const Page& page) {
    Status s;
    for (const auto& [key, record] : page) {
      EntryHeader h;
      std::size_t offset = 0;
      if (!decode_entry(record, &h, &offset)) {
        problem(fmt::format("entry '{}': undecodable record", key));
        continue;
      }
      ++report->entries;
      report->bytes += record.size() - offset;
      ++cats[h.category];
      AccessRecord a;
      bool found = false;
      if (s = load_access(key, &a, &found); !s.ok()) {
        if (!index_damaged(Cf::access, s)) failure = s;
        continue;
      }
      if (!found) {
        problem(fmt::format("entry '{}': no access record", key));
        continue;
      }
      if (a.size != record.size() - offset)
        problem(fmt::format("entry '{}': access record says {} bytes, value has {}", key, a.size,
                            record.size() - offset));
      if (a.category != h.category)
        problem(fmt::format("entry '{}': access record says category '{}', entry '{}'", key,
                            a.category, h.category));
      if (has_order && !exists(Cf::order, order_key(options_.policy, a, key), &s))
        problem(fmt::format("entry '{}': no eviction-order record", key));
      const bool want_expiry = h.invalid() || h.ttl_s > 0;
      if (want_expiry) {
        ++with_expiry;
        const std::uint64_t t =
            h.invalid()
                ? 0
                : expiry_time(deadlines(h.created_ns, h.ttl_s, options_.stale_factor).expired_at);
        if (!a.has_expiry || a.expiry_t != t || !exists(Cf::expiry, expiry_key(t, key), &s))
          problem(fmt::format("entry '{}': expiry index does not match its ttl/status", key));
      } else if (a.has_expiry) {
        problem(fmt::format("entry '{}': expiry record for an entry without ttl", key));
      }
      if (!exists(Cf::category, category_key(h.category, key), &s))
        problem(fmt::format("entry '{}': no category-index record", key));
      if (s.failed()) failure = s;
    }
    return Status();
  });
  if (!scanned.ok()) return scanned;
  if (failure.failed()) return failure;
  // Counts a family's records: ok, ok with *n unset (-1) when the family is damaged, or a failure.
  auto count = [&](Cf cf, std::uint64_t* n) {
    *n = 0;
    Status st = kv_->scan(cf, "", "", [&](std::string_view, std::string_view) {
      ++*n;
      return true;
    });
    if (index_damaged(cf, st) || damaged[static_cast<int>(cf)]) {
      *n = kUnknownCount;
      return Status();
    }
    return st;
  };
  std::uint64_t n = 0;
  if (Status s = count(Cf::access, &n); !s.ok()) return s;
  if (n != kUnknownCount && n != report->entries)
    problem(fmt::format("{} access records for {} entries", n, report->entries));
  if (has_order) {
    if (Status s = count(Cf::order, &n); !s.ok()) return s;
    if (n != kUnknownCount && n != report->entries)
      problem(fmt::format("{} eviction-order records for {} entries", n, report->entries));
  }
  if (Status s = count(Cf::expiry, &n); !s.ok()) return s;
  if (n != kUnknownCount && n != with_expiry)
    problem(fmt::format("{} expiry records for {} entries with a ttl or invalid", n, with_expiry));
  if (Status s = count(Cf::category, &n); !s.ok()) return s;
  if (n != kUnknownCount && n != report->entries)
    problem(fmt::format("{} category-index records for {} entries", n, report->entries));
  // Counters as stored (not only as held in memory).
  std::string totals_bytes;
  if (Status s = kv_->get(Cf::counters, kTotalsKey, &totals_bytes);
      s.ok() && totals_bytes.size() == 24) {
    if (get_le64(totals_bytes) != report->entries ||
        get_le64(totals_bytes.substr(8)) != report->bytes)
      problem(fmt::format("counters say {} entries / {} bytes, the store holds {} / {}",
                          get_le64(totals_bytes), get_le64(totals_bytes.substr(8)), report->entries,
                          report->bytes));
  } else {
    problem("the totals counter is missing or malformed");
  }
  std::map<std::string, std::uint64_t> stored_cats;
  if (Status s = kv_->scan(Cf::counters, kCategoryCounterPrefix, kCategoryCounterEnd,
                           [&](std::string_view k, std::string_view v) {
                             stored_cats[std::string(k.substr(kCategoryCounterPrefix.size()))] =
                                 v.size() == 8 ? get_le64(v) : 0;
                             return true;
                           });
      !s.ok())
    return s;
  if (stored_cats != cats) problem("per-category counters do not match the entries");
  if (entries_.load() != report->entries || bytes_.load() != report->bytes)
    problem("in-memory totals do not match the store");
  return Status();
}

// ---------------------------------------------------------------- access buffer

Engine::Shard& Engine::shard_of(std::string_view key) {
  return shards_[Hash{}(key) % shards_.size()];
}

void Engine::record_access(std::string_view key, std::int64_t now_ns) {
  const std::uint64_t tick = tick_.fetch_add(1) + 1;
  {
    Shard& shard = shard_of(key);
    std::lock_guard lock(shard.mu);
    auto it = shard.map.find(key);
    if (it == shard.map.end()) {
      it = shard.map.emplace(std::string(key), Pending{}).first;
      pending_size_.fetch_add(1, std::memory_order_relaxed);
    }
    it->second.count += 1;
    it->second.tick = tick;
    it->second.ns = now_ns;
  }
  const std::size_t pending = pending_size_.load(std::memory_order_relaxed);
  if (pending < kAccessFlushBatch) return;
  // Hand the flush to the housekeeper when there is one; flush here only when the buffer grows
  // far beyond a batch (back-pressure) or nobody else will.
  if (flusher_ != nullptr && pending < 16 * kAccessFlushBatch) {
    if (!flush_requested_.exchange(true, std::memory_order_acq_rel)) flusher_->flush_soon();
    return;
  }
  std::unique_lock lock(mu_, std::try_to_lock);
  if (!lock.owns_lock()) {
    if (pending < 16 * kAccessFlushBatch) return;
    lock.lock();
  }
  if (Status s = flush_access_locked(); !s.ok()) {
    counters_->error++;
    log_->logf(util::Level::warn, "could not save access data: {}", s.message);
  }
}

Engine::Pending Engine::take_pending(std::string_view key) {
  Shard& shard = shard_of(key);
  std::lock_guard lock(shard.mu);
  auto it = shard.map.find(key);
  if (it == shard.map.end()) return {};
  Pending p = it->second;
  shard.map.erase(it);
  pending_size_.fetch_sub(1, std::memory_order_relaxed);
  return p;
}

std::unordered_map<std::string, Engine::Pending, Engine::Hash, std::equal_to<>>
Engine::drain_pending() {
  std::unordered_map<std::string, Pending, Hash, std::equal_to<>> all;
  for (Shard& shard : shards_) {
    std::unordered_map<std::string, Pending, Hash, std::equal_to<>> taken;
    {
      std::lock_guard lock(shard.mu);
      taken.swap(shard.map);
    }
    pending_size_.fetch_sub(taken.size(), std::memory_order_relaxed);
    all.merge(taken);
  }
  return all;
}

Status Engine::flush_access() {
  std::lock_guard lock(mu_);
  return flush_access_locked();
}

Status Engine::flush_access_locked() {
  flush_requested_.store(false, std::memory_order_release);
  auto pending = drain_pending();
  if (pending.empty()) return Status();
  Txn t(*kv_);
  for (const auto& [key, p] : pending) {
    AccessRecord a;
    bool found = false;
    if (Status s = load_access(key, &a, &found); !s.ok()) return s;
    if (!found) continue;  // removed since the hit
    const std::string old_order = order_key(options_.policy, a, key);
    a.access_count += p.count;
    a.last_tick = std::max(a.last_tick, p.tick);
    a.last_access_ns = std::max(a.last_access_ns, p.ns);
    t.batch->put(Cf::access, key, encode_access(a));
    if (options_.policy == EvictionPolicy::lru || options_.policy == EvictionPolicy::lfu) {
      const std::string new_order = order_key(options_.policy, a, key);
      t.batch->del(Cf::order, old_order);
      put_order(t, new_order);
    }
  }
  t.counters_dirty = true;  // the tick moved
  return commit(t);
}

Status Engine::load_access(std::string_view key, AccessRecord* out, bool* found) {
  std::string bytes;
  Status s = kv_->get(Cf::access, key, &bytes);
  *found = false;
  if (s.not_found()) return Status();
  if (!s.ok()) return s;
  if (!decode_access(bytes, out)) return corrupt("access", key);
  *found = true;
  return Status();
}

Status Engine::access_of(std::string_view key, AccessRecord* out) {
  bool found = false;
  if (Status s = load_access(key, out, &found); !s.ok()) return s;
  if (!found) return Status::missing();
  Shard& shard = shard_of(key);
  std::lock_guard lock(shard.mu);
  if (auto it = shard.map.find(key); it != shard.map.end()) {
    out->access_count += it->second.count;
    out->last_tick = std::max(out->last_tick, it->second.tick);
    out->last_access_ns = std::max(out->last_access_ns, it->second.ns);
  }
  return Status();
}

// ---------------------------------------------------------------- reads

Status Engine::read(std::string_view key, std::int64_t now_ns, Want want, Found* out) {
  std::string record;
  Status s = kv_->get(Cf::entries, key, &record);
  if (!s.ok()) return s;
  std::size_t offset = 0;
  if (!decode_entry(record, &out->header, &offset)) return corrupt("entry", key);
  out->size = record.size() - offset;
  out->status = status_at(out->header.flags, out->header.created_ns, out->header.ttl_s,
                          options_.stale_factor, now_ns);
  if (want == Want::value) {
    record.erase(0, offset);
    out->value = std::move(record);
  }
  return Status();
}

Status Engine::keys(std::string_view prefix, std::vector<std::string>* out) {
  const std::string end = prefix_end(prefix);
  return kv_->scan(Cf::access, prefix, end, [&](std::string_view k, std::string_view) {
    out->emplace_back(k);
    return true;
  });
}

Status Engine::keys_in_category(std::string_view category, std::vector<std::string>* out) {
  const std::string prefix = category_prefix(category);
  return kv_->scan(Cf::category, prefix, prefix_end(prefix),
                   [&](std::string_view k, std::string_view) {
                     out->emplace_back(k.substr(prefix.size()));
                     return true;
                   });
}

Status Engine::status_counts(std::int64_t now_ns, StatusCounts* out) {
  *out = {};
  Status s = kv_->scan(Cf::expiry, "", "", [&](std::string_view k, std::string_view v) {
    const std::uint64_t t = time_of_expiry(k);
    const std::uint64_t stale_t = v.size() == 8 ? get_le64(v) : 0;
    const auto now = static_cast<std::uint64_t>(std::max<std::int64_t>(now_ns, 0));
    if (t == 0)
      ++out->invalid;
    else if (t <= now)
      ++out->expired;
    else if (stale_t <= now)
      ++out->stale;
    return true;
  });
  const std::uint64_t total = entries_.load();
  const std::uint64_t other = out->invalid + out->expired + out->stale;
  out->fresh = total > other ? total - other : 0;
  return s;
}

std::map<std::string, std::uint64_t> Engine::categories() {
  std::lock_guard lock(mu_);
  return cats_;
}

// ---------------------------------------------------------------- writes

bool Engine::over_limits(const Txn& t) const {
  const auto e = static_cast<std::int64_t>(entries_.load()) + t.d_entries;
  const auto b = static_cast<std::int64_t>(bytes_.load()) + t.d_bytes;
  return (options_.max_entries != 0 && e > static_cast<std::int64_t>(options_.max_entries)) ||
         (options_.max_bytes != 0 && b > static_cast<std::int64_t>(options_.max_bytes));
}

void Engine::remove_in_txn(Txn& t, std::string_view key, const AccessRecord& a) {
  t.batch->del(Cf::entries, key);
  t.batch->del(Cf::access, key);
  if (options_.policy != EvictionPolicy::ttl)
    t.batch->del(Cf::order, order_key(options_.policy, a, key));
  if (a.has_expiry) t.batch->del(Cf::expiry, expiry_key(a.expiry_t, key));
  t.batch->del(Cf::category, category_key(a.category, key));
  t.d_entries -= 1;
  t.d_bytes -= static_cast<std::int64_t>(a.size);
  t.d_cats[a.category] -= 1;
  t.removed.emplace(key);
  t.counters_dirty = true;
}

// Removes entries until the limits hold: in the expired pass, expired and invalid entries in
// expiry order (invalid first); in the policy pass, live entries in eviction order. Never removes
// `keep`. Moves the pass's floor past what it removed, so later scans skip the tombstones.
Status Engine::evict(Txn& t, Pass pass, std::int64_t now_ns, std::string_view keep) {
  const bool expired_pass = pass == Pass::expired;
  const Cf cf = expired_pass ? Cf::expiry : Cf::order;
  const std::string& floor = expired_pass ? expiry_floor_ : order_floor_;
  std::optional<std::string>& new_floor = expired_pass ? t.expiry_floor : t.order_floor;
  const auto now = static_cast<std::uint64_t>(std::max<std::int64_t>(now_ns, 0));
  // The floor is the smallest live expiry key: nothing is expired before its time.
  if (expired_pass && floor.size() >= 8 && time_of_expiry(floor) > now) return Status();
  std::string from = floor;
  bool floor_fixed = false;
  std::size_t page_size = 4;  // usually one victim is enough; grow when it is not
  if (!expired_pass) {
    // The cached candidates first (each checked against its access record: a key touched or
    // removed since it was read has another order record now, or none), then a scan after them
    // that reads a page of candidates for the next evictions.
    for (std::size_t i = t.victims_used; i < victims_.size(); ++i) {
      if (!over_limits(t)) return Status();
      const std::string& ik = victims_[i];
      t.victims_used = i + 1;
      const std::string_view key = user_key_of_order(options_.policy, ik);
      if (key == keep || t.removed.contains(key)) {
        floor_fixed = true;
        continue;
      }
      AccessRecord a;
      bool found = false;
      if (Status s = load_access(key, &a, &found); !s.ok()) return s;
      if (found && order_key(options_.policy, a, key) == ik) {
        remove_in_txn(t, key, a);
        ++t.evictions;
      } else if (!found) {
        t.batch->del(cf, ik);  // stale, or a stray index record: drop it either way
      }
      if (!floor_fixed) new_floor = ik;
    }
    if (!over_limits(t)) return Status();
    if (!victims_.empty()) from = successor(victims_.back());
    page_size = kVictimBatch;
  }
  for (;;) {
    std::vector<std::string> page;
    Status s = kv_->scan(cf, from, "", [&](std::string_view k, std::string_view) {
      page.emplace_back(k);
      return page.size() < page_size;
    });
    if (!s.ok()) return s;
    for (std::size_t p = 0; p < page.size(); ++p) {
      const std::string& ik = page[p];
      if (!over_limits(t)) {
        // The rest of the page are the next candidates (none when this transaction already put
        // an order key: the scan did not see it).
        if (!expired_pass)
          t.new_victims.emplace(
              t.order_put ? page.end() : page.begin() + static_cast<std::ptrdiff_t>(p), page.end());
        return Status();
      }
      if (expired_pass && time_of_expiry(ik) > now) {
        if (!floor_fixed) new_floor = ik;
        return Status();
      }
      const std::string_view key =
          expired_pass ? user_key_of_expiry(ik) : user_key_of_order(options_.policy, ik);
      if (key == keep || t.removed.contains(key)) {
        floor_fixed = true;
        continue;
      }
      AccessRecord a;
      bool found = false;
      if (s = load_access(key, &a, &found); !s.ok()) return s;
      if (!found) {
        t.batch->del(cf, ik);  // a stray index record: drop it
      } else {
        remove_in_txn(t, key, a);
        // An invalid entry was counted when it was invalidated; an expired one counts now.
        if (!expired_pass)
          ++t.evictions;
        else if (time_of_expiry(ik) != 0)
          ++t.expirations;
      }
      if (!floor_fixed) new_floor = ik;
    }
    if (page.size() < page_size) {
      if (!expired_pass) t.new_victims.emplace();  // read to the end: nothing left to cache
      return Status();
    }
    from = successor(page.back());
    page_size = std::min(page_size * 4, kPage);
  }
}

Status Engine::commit(Txn& t) {
  std::map<std::string, std::uint64_t> new_cats;
  if (t.counters_dirty) {
    const auto e =
        static_cast<std::uint64_t>(static_cast<std::int64_t>(entries_.load()) + t.d_entries);
    const auto b = static_cast<std::uint64_t>(static_cast<std::int64_t>(bytes_.load()) + t.d_bytes);
    t.batch->put(Cf::counters, kTotalsKey, totals(e, b, tick_.load()));
    for (const auto& [cat, d] : t.d_cats) {
      if (d == 0) continue;
      auto it = cats_.find(cat);
      const std::int64_t n = (it == cats_.end() ? 0 : static_cast<std::int64_t>(it->second)) + d;
      new_cats[cat] = static_cast<std::uint64_t>(std::max<std::int64_t>(n, 0));
      if (n <= 0)
        t.batch->del(Cf::counters, category_counter(cat));
      else
        t.batch->put(Cf::counters, category_counter(cat), le64(static_cast<std::uint64_t>(n)));
    }
  }
  if (t.watermark)
    t.batch->put(Cf::counters, kWatermarkKey, le64(static_cast<std::uint64_t>(*t.watermark)));
  if (t.batch->count() == 0) return Status();
  Status s = kv_->write(*t.batch);
  if (!s.ok()) {
    order_floor_.clear();
    expiry_floor_.clear();
    victims_.clear();
    return s;
  }
  if (t.new_victims)
    victims_ = std::move(*t.new_victims);
  else
    victims_.erase(victims_.begin(), victims_.begin() + static_cast<std::ptrdiff_t>(std::min(
                                                            t.victims_used, victims_.size())));
  if (t.order_put_below_victims) victims_.clear();
  if (t.counters_dirty) {
    entries_ = static_cast<std::uint64_t>(static_cast<std::int64_t>(entries_.load()) + t.d_entries);
    bytes_ = static_cast<std::uint64_t>(static_cast<std::int64_t>(bytes_.load()) + t.d_bytes);
    for (const auto& [cat, n] : new_cats) {
      if (n == 0)
        cats_.erase(cat);
      else
        cats_[cat] = n;
    }
  }
  if (t.order_floor) order_floor_ = std::move(*t.order_floor);
  if (t.expiry_floor) expiry_floor_ = std::move(*t.expiry_floor);
  if (t.watermark) watermark_->store(*t.watermark);
  counters_->eviction += t.evictions;
  counters_->expiration += t.expirations;
  counters_->invalidation += t.invalidations;
  return Status();
}

Status Engine::set(std::string_view key, std::string_view value, std::int64_t ttl_s,
                   std::string_view category, const std::map<std::string, std::string>& metadata,
                   std::int64_t now_ns, SetOutcome* outcome) {
  if (options_.max_bytes != 0 && value.size() > options_.max_bytes) {
    *outcome = SetOutcome::too_large;
    return Status();
  }
  std::lock_guard lock(mu_);
  AccessRecord old;
  bool had_old = false;
  if (Status s = load_access(key, &old, &had_old); !s.ok()) return s;
  const Pending pending = take_pending(key);

  Txn t(*kv_);
  t.counters_dirty = true;
  t.d_entries = had_old ? 0 : 1;
  t.d_bytes =
      static_cast<std::int64_t>(value.size()) - (had_old ? static_cast<std::int64_t>(old.size) : 0);
  if (over_limits(t)) {
    if (Status s = flush_access_locked(); !s.ok()) return s;
    if (had_old) {  // the flush may have moved our own record
      if (Status s = load_access(key, &old, &had_old); !s.ok()) return s;
    }
    if (Status s = evict(t, Pass::expired, now_ns, key); !s.ok()) return s;
    if (over_limits(t) && options_.policy != EvictionPolicy::ttl) {
      if (Status s = evict(t, Pass::policy, now_ns, key); !s.ok()) return s;
    }
    if (over_limits(t)) {
      *outcome = SetOutcome::full;
      return Status();
    }
  }

  const std::uint64_t tick = tick_.fetch_add(1) + 1;
  AccessRecord a;
  if (had_old) {
    a = old;
    a.access_count += pending.count + 1;
  } else {
    a.access_count = 1;
    a.insert_tick = tick;
  }
  a.last_tick = tick;
  a.last_access_ns = now_ns;
  a.size = value.size();
  a.category = std::string(category);
  a.has_expiry = false;
  a.expiry_t = 0;
  a.stale_t = 0;
  if (ttl_s > 0) {
    const Deadlines d = deadlines(now_ns, ttl_s, options_.stale_factor);
    a.has_expiry = true;
    a.expiry_t = expiry_time(d.expired_at);
    a.stale_t = static_cast<std::uint64_t>(std::max<std::int64_t>(d.stale_at, 0));
    if (d.expired_at < watermark_->load()) t.watermark = d.expired_at;  // keep the filter off it
  }

  EntryHeader h;
  h.created_ns = now_ns;
  h.ttl_s = std::max<std::int64_t>(ttl_s, 0);
  h.category = a.category;
  h.metadata = metadata;

  if (had_old) {
    if (options_.policy != EvictionPolicy::ttl)
      t.batch->del(Cf::order, order_key(options_.policy, old, key));
    if (old.has_expiry) t.batch->del(Cf::expiry, expiry_key(old.expiry_t, key));
    if (old.category != a.category) {
      t.batch->del(Cf::category, category_key(old.category, key));
      t.d_cats[old.category] -= 1;
      t.d_cats[a.category] += 1;
    }
  } else {
    t.d_cats[a.category] += 1;
  }
  t.batch->put(Cf::entries, key, encode_entry(h, value));
  t.batch->put(Cf::access, key, encode_access(a));
  if (options_.policy != EvictionPolicy::ttl) {
    std::string ok = order_key(options_.policy, a, key);
    const std::string& floor = t.order_floor ? *t.order_floor : order_floor_;
    if (ok < floor) t.order_floor = ok;
    put_order(t, ok);
  }
  if (a.has_expiry) {
    std::string ek = expiry_key(a.expiry_t, key);
    const std::string& floor = t.expiry_floor ? *t.expiry_floor : expiry_floor_;
    if (ek < floor) t.expiry_floor = ek;
    t.batch->put(Cf::expiry, ek, le64(a.stale_t));
  }
  t.batch->put(Cf::category, category_key(a.category, key), "");
  if (Status s = commit(t); !s.ok()) return s;
  *outcome = SetOutcome::stored;
  return Status();
}

Status Engine::remove_locked(std::string_view key, bool* removed) {
  AccessRecord a;
  bool found = false;
  *removed = false;
  if (Status s = load_access(key, &a, &found); !s.ok()) return s;
  if (!found) return Status();
  take_pending(key);
  Txn t(*kv_);
  remove_in_txn(t, key, a);
  if (Status s = commit(t); !s.ok()) return s;
  *removed = true;
  return Status();
}

Status Engine::remove(std::string_view key, bool* removed) {
  std::lock_guard lock(mu_);
  return remove_locked(key, removed);
}

Status Engine::drop_corrupt(std::string_view key) {
  std::lock_guard lock(mu_);
  AccessRecord a;
  bool found = false;
  Status s = load_access(key, &a, &found);
  if (s.ok() && found) {
    take_pending(key);
    Txn t(*kv_);
    remove_in_txn(t, key, a);
    return commit(t);
  }
  auto batch = kv_->new_batch();
  batch->del(Cf::entries, key);
  batch->del(Cf::access, key);
  log_->logf(util::Level::warn, "dropped the records of '{}' without index data; run a verify",
             key);
  return kv_->write(*batch);
}

Status Engine::remove_keys(const std::vector<std::string>& keys, std::size_t* removed) {
  *removed = 0;
  for (std::size_t i = 0; i < keys.size(); i += kPage) {
    std::lock_guard lock(mu_);
    Txn t(*kv_);
    for (std::size_t j = i; j < std::min(keys.size(), i + kPage); ++j) {
      AccessRecord a;
      bool found = false;
      if (Status s = load_access(keys[j], &a, &found); !s.ok()) return s;
      if (!found || t.removed.contains(keys[j])) continue;
      take_pending(keys[j]);
      remove_in_txn(t, keys[j], a);
    }
    const std::size_t n = t.removed.size();
    if (Status s = commit(t); !s.ok()) return s;
    *removed += n;
  }
  return Status();
}

Status Engine::invalidate_locked(Txn& t, std::string_view key, bool* marked) {
  *marked = false;
  std::string record;
  Status s = kv_->get(Cf::entries, key, &record);
  if (s.not_found()) return Status();
  if (!s.ok()) return s;
  if (record.size() <= kEntryFlagsOffset) return corrupt("entry", key);
  auto flags = static_cast<std::uint8_t>(record[kEntryFlagsOffset]);
  if ((flags & kFlagInvalid) != 0) return Status();
  AccessRecord a;
  bool found = false;
  if (s = load_access(key, &a, &found); !s.ok()) return s;
  if (!found) return corrupt("access", key);
  record[kEntryFlagsOffset] = static_cast<char>(flags | kFlagInvalid);
  if (a.has_expiry) t.batch->del(Cf::expiry, expiry_key(a.expiry_t, key));
  a.has_expiry = true;
  a.expiry_t = 0;
  std::string ek = expiry_key(0, key);
  const std::string& floor = t.expiry_floor ? *t.expiry_floor : expiry_floor_;
  if (ek < floor) t.expiry_floor = ek;
  t.batch->put(Cf::expiry, ek, le64(a.stale_t));
  t.batch->put(Cf::access, key, encode_access(a));
  t.batch->put(Cf::entries, key, record);
  ++t.invalidations;
  *marked = true;
  return Status();
}

Status Engine::invalidate_keys(const std::vector<std::string>& keys, std::size_t* marked) {
  *marked = 0;
  for (std::size_t i = 0; i < keys.size(); i += kPage) {
    std::lock_guard lock(mu_);
    Txn t(*kv_);
    std::set<std::string_view> seen;
    for (std::size_t j = i; j < std::min(keys.size(), i + kPage); ++j) {
      if (!seen.insert(keys[j]).second) continue;
      bool m = false;
      if (Status s = invalidate_locked(t, keys[j], &m); !s.ok()) return s;
    }
    const std::uint64_t n = t.invalidations;
    if (Status s = commit(t); !s.ok()) return s;
    *marked += n;
  }
  return Status();
}

Status Engine::clear(std::size_t* removed) {
  std::lock_guard lock(mu_);
  drain_pending();
  auto batch = kv_->new_batch();
  for (Cf cf : {Cf::entries, Cf::access, Cf::order, Cf::expiry, Cf::category})
    batch->delete_range(cf, "", "");
  batch->delete_range(Cf::counters, kCategoryCounterPrefix, kCategoryCounterEnd);
  batch->put(Cf::counters, kTotalsKey, totals(0, 0, tick_.load()));
  if (Status s = kv_->write(*batch); !s.ok()) return s;
  *removed = entries_.exchange(0);
  bytes_ = 0;
  cats_.clear();
  order_floor_.clear();
  victims_.clear();
  expiry_floor_.clear();
  return Status();
}

Status Engine::cleanup(std::int64_t now_ns, std::size_t* removed) {
  std::lock_guard lock(mu_);
  *removed = 0;
  if (Status s = flush_access_locked(); !s.ok()) return s;
  for (;;) {
    Txn t(*kv_);
    std::vector<std::string> page;
    const std::string end =
        expiry_key(static_cast<std::uint64_t>(std::max<std::int64_t>(now_ns, 0)) + 1, "");
    Status s = kv_->scan(Cf::expiry, expiry_floor_, end, [&](std::string_view k, std::string_view) {
      page.emplace_back(k);
      return page.size() < kPage;
    });
    if (!s.ok()) return s;
    for (const auto& ek : page) {
      const std::string_view key = user_key_of_expiry(ek);
      AccessRecord a;
      bool found = false;
      if (s = load_access(key, &a, &found); !s.ok()) return s;
      if (!found || t.removed.contains(key)) {
        t.batch->del(Cf::expiry, ek);
        continue;
      }
      take_pending(key);
      remove_in_txn(t, key, a);
      if (time_of_expiry(ek) != 0) ++t.expirations;
    }
    const bool last = page.size() < kPage;
    if (!page.empty()) t.expiry_floor = page.back();
    if (last) t.watermark = std::max(now_ns, watermark_->load());
    const std::size_t n = t.removed.size();
    if (s = commit(t); !s.ok()) return s;
    *removed += n;
    if (last) return Status();
  }
}

}  // namespace larder::engine
