// The engine: opening a store, its settings, migration and rebuild.
#include "engine/engine.hpp"
#include "engine/txn.hpp"

#include <algorithm>
#include <chrono>
#include <cstring>
#include <future>
#include <limits>
#include <optional>
#include <set>
#include <system_error>
#include <tuple>

#include <absl/container/inlined_vector.h>
#include <fmt/format.h>

#include "engine/engine_detail.hpp"
#include "util/ttl.hpp"

namespace larder::engine {

using kv::Cf;
using kv::Code;
using kv::Status;
using namespace detail;

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
  return limits_record(max_entries(), max_bytes());
}

// max_entries, max_bytes, the default ttl in whole seconds (rounded up: what a larder before
// millisecond ttls reads, which takes only these 24 bytes) and in milliseconds.
std::string Engine::limits_record(std::uint64_t max_entries, std::uint64_t max_bytes) const {
  const std::int64_t ms = options_.default_ttl_ms;
  return le64(max_entries) + le64(max_bytes) +
         le64(static_cast<std::uint64_t>(util::ms_to_seconds_up(ms))) +
         le64(static_cast<std::uint64_t>(ms));
}

Status Engine::open() {
  std::unique_lock lock(mu_);
  LoadPlan plan;
  Status s = open_locked(&plan);
  if (!s.ok() || !plan.load) return s;
  if (plan.stored_entries == 0) return finish_load_locked(plan);
  // The index loads in the background, a page at a time: gets are served meanwhile (they read
  // the entries family only), and so are sets and removes that need no eviction (write_lock);
  // every other call that needs the index waits for the load's end (loading_). The totals are the
  // stored ones (exact: written with every change), moved by those writes, until the scan has
  // recounted them.
  entries_ = plan.stored_entries;
  bytes_ = plan.stored_bytes;
  loading_ = true;
  load_cursor_.clear();
  lock.unlock();  // nobody else can take it yet: the engine is not published before open returns
  const LoadPlan plan_copy = plan;  // for a synchronous load when no thread can be started
  std::promise<void> locked;
  std::future<void> holding = locked.get_future();
  auto load = [this, plan = std::move(plan), &locked] {
    std::unique_lock guard(mu_);
    locked.set_value();
    const auto t0 = std::chrono::steady_clock::now();
    if (Status st = finish_load_locked(plan, &guard); !st.ok()) {
      ++counters_->error;
      log_->logf(util::Level::error, "loading the index failed: {}", st.message);
      open_problems_.push_back(fmt::format("loading the index failed ({})", st.message));
    }
    loading_ = false;
    load_cursor_.clear();
    log_->logf(
        util::Level::debug, "index of {} entries loaded in {} ms", entries_.load(),
        std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now() - t0)
            .count());
    guard.unlock();
    loaded_cv_.notify_all();
  };
  try {
    loader_ = std::thread(std::move(load));
  } catch (const std::system_error& e) {  // no thread to be had: load here instead
    log_->logf(util::Level::warn, "loading the index in this thread: {}", e.what());
    std::lock_guard guard(mu_);
    loading_ = false;
    return finish_load_locked(plan_copy);
  }
  holding.wait();
  return Status();
}

Status Engine::recover_store() {
  const auto lock = foreground_lock();
  bool reopened = false;
  Status s = kv_->recover(&reopened);
  if (!reopened) return s;
  // A write reported as failed may still have reached the log that the reopen replayed: the
  // store is the truth, and the index is loaded from it again.
  drain_pending();
  clear_index();
  LoadPlan plan;
  if (Status o = open_locked(&plan); !o.ok()) return o;
  if (plan.load)
    if (Status o = finish_load_locked(plan); !o.ok()) return o;
  return s;
}

Status Engine::open_locked(LoadPlan* plan) {
  open_problems_.clear();
  const bool repair = options_.repair_on_open;
  std::map<std::string, std::string, std::less<>> counters;
  // The named counters only: S3-FIFO's ghost records (up to 0.9 x max_entries of them) sit
  // between "format" and "limits" and are read by the index load, not here, where open waits.
  const auto named = [&](std::string_view k, std::string_view v) {
    if (!k.starts_with(kCategoryCounterPrefix)) counters.emplace(k, v);
    return true;
  };
  Status s = kv_->scan(Cf::counters, "", kGhostPrefix, named);
  if (s.ok()) s = kv_->scan(Cf::counters, kGhostEnd, "", named);
  if (!s.ok()) return s;
  auto u64 = [&](std::string_view name, std::uint64_t* out) {
    auto it = counters.find(name);
    if (it == counters.end() || it->second.size() != 8) return false;
    *out = get_le64(it->second);
    return true;
  };
  if (auto it = counters.find(kAdminLimitsKey); it != counters.end()) {
    std::uint64_t e = 0, b = 0;
    if (decode_admin_limits(it->second, &e, &b)) {
      if (e != options_.max_entries || b != options_.max_bytes)
        log_->logf(util::Level::info,
                   "using the limits set with cachectl limits ({} entries, {} bytes; 0: none) "
                   "instead of the configured {} entries, {} bytes",
                   e, b, options_.max_entries, options_.max_bytes);
      max_entries_.store(e);
      max_bytes_.store(b);
      admin_limits_.store(true);
    } else {
      log_->log(util::Level::warn, "the admin_limits record does not decode; ignored");
      open_problems_.emplace_back("the admin_limits counter does not decode");
    }
  }
  // What needs a rebuild: repaired now, or (repair_on_open false) reported by verify while the
  // index is loaded from the access records as they are.
  auto needs_rebuild = [&](std::string why) {
    if (repair) {
      log_->logf(util::Level::info, "rebuilding the access records and the index: {}", why);
      return rebuild_locked();
    }
    open_problems_.push_back(fmt::format("{}; verify --repair rebuilds it", why));
    bool undecodable = false;
    std::uint64_t before_entries = 0, before_bytes = 0;
    Status loaded = load_index_locked(&undecodable, &before_entries, &before_bytes, nullptr);
    if (loaded.code == Code::corruption)
      open_problems_.push_back(
          fmt::format("the access family cannot be read ({})", loaded.message));
    else if (!loaded.ok())
      return loaded;
    if (undecodable) open_problems_.push_back("an access record does not decode");
    return Status();
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
    if (any) return needs_rebuild("the store's counters are missing");
    if (!repair) return Status();
    auto batch = kv_->new_batch();
    write_meta(*batch);
    batch->put(Cf::counters, kTotalsKey, totals(0, 0, 0));
    return kv_->write(*batch);
  }
  if (format > kStoreFormat)
    return {Code::io_error, fmt::format("the store has format {}, newer than this larder's {}",
                                        format, kStoreFormat)};
  std::uint64_t stored_entries = 0, stored_bytes = 0;
  if (auto it = counters.find(kTotalsKey); it != counters.end() && it->second.size() == 24) {
    const std::string_view t = it->second;
    stored_entries = get_le64(t);
    stored_bytes = get_le64(t.substr(8));
    tick_ = get_le64(t.substr(16));
  }
  std::uint64_t factor_bits = 0, rebuilding = 0, wm = 0;
  u64(kStaleFactorKey, &factor_bits);
  u64(kRebuildingKey, &rebuilding);
  double factor = 0;
  std::memcpy(&factor, &factor_bits, sizeof factor);
  const bool factor_changed = factor != options_.stale_factor;
  if (!factor_changed && u64(kWatermarkKey, &wm)) watermark_->store(static_cast<std::int64_t>(wm));
  if (format < kIndexInMemoryFormat)
    return needs_rebuild(
        fmt::format("the store has format {} (migrated to {}: the index families are retired)",
                    format, kStoreFormat));
  // Formats 2 and 3 differ only in never holding merge operands (2) and format-2 entries (2,
  // 3): relabelled with the first write, by whichever opener makes it (cachectl too, which
  // repairs nothing at open).
  format_relabel_ = format < kStoreFormat;
  if (factor_changed) return needs_rebuild("the stale factor changed");
  if (rebuilding != 0) return needs_rebuild("an earlier rebuild was interrupted");
  plan->load = true;
  plan->stored_entries = stored_entries;
  plan->stored_bytes = stored_bytes;
  if (auto it = counters.find(kLimitsKey); it != counters.end()) plan->stored_limits = it->second;
  if (auto it = counters.find(kPolicyKey); it != counters.end()) plan->stored_policy = it->second;
  return Status();
}

Status Engine::finish_load_locked(const LoadPlan& plan,
                                  std::unique_lock<util::AdaptiveMutex>* lock) {
  const bool repair = options_.repair_on_open;
  bool undecodable = false;
  std::uint64_t before_entries = 0, before_bytes = 0;
  Status s = load_index_locked(&undecodable, &before_entries, &before_bytes, lock);
  if (!s.ok() && s.code != Code::corruption) return s;
  if (undecodable || !s.ok()) {
    ++counters_->error;
    const std::string why = s.ok()
                                ? std::string("an access record does not decode")
                                : fmt::format("the access family cannot be read ({})", s.message);
    log_->logf(util::Level::warn, "{}", why);
    if (repair) return rebuild_locked();
    open_problems_.push_back(fmt::format("{}; verify --repair rebuilds it", why));
    return Status();
  }
  if (!repair) return Status();
  auto batch = kv_->new_batch();
  if (entries_.load() != before_entries || bytes_.load() != before_bytes) {
    log_->logf(util::Level::warn,
               "the totals counter said {} entries / {} bytes, the access records hold {} / {}; "
               "corrected",
               before_entries, before_bytes, entries_.load(), bytes_.load());
    batch->put(Cf::counters, kTotalsKey, totals(entries_.load(), bytes_.load(), tick_.load()));
  }
  if (plan.stored_limits != limits_record()) batch->put(Cf::counters, kLimitsKey, limits_record());
  if (plan.stored_policy != le64(static_cast<std::uint64_t>(options_.policy))) {
    batch->put(Cf::counters, kPolicyKey, le64(static_cast<std::uint64_t>(options_.policy)));
    if (!policy_->keeps_ghosts()) batch->delete_range(Cf::counters, kGhostPrefix, kGhostEnd);
  }
  return batch->count() == 0 ? Status() : kv_->write(*batch);
}

void Engine::load_record_locked(std::string_view key, const AccessRecord& a) {
  // Ticks only go up (readers take new ones meanwhile, without the mutex).
  for (std::uint64_t t = tick_.load(), want = std::max(a.last_tick, a.insert_tick);
       t < want && !tick_.compare_exchange_weak(t, want);) {
  }
  auto [it, inserted] = index_.emplace(key, load_node(a));
  if (!inserted) return;  // written since the load began: the index has its newest record
  it->second.category = intern(a.category);
  link(it, /*count=*/false);
}

bool Engine::load_key_locked(std::string_view key) {
  if (!loading_ || key < load_cursor_ || index_.contains(key)) return true;
  std::string bytes;
  const Status s = kv_->get(Cf::access, key, &bytes);
  if (s.not_found()) return true;  // a new key
  AccessRecord a;
  if (!s.ok() || !decode_access(bytes, &a)) return false;
  load_record_locked(key, a);
  return true;
}

Status Engine::load_index_locked(bool* needs_rebuild, std::uint64_t* before_entries,
                                 std::uint64_t* before_bytes,
                                 std::unique_lock<util::AdaptiveMutex>* lock) {
  // stats() reads the totals without the mutex: they keep their value until the recount is done.
  const std::uint64_t shown_entries = entries_.load(), shown_bytes = bytes_.load();
  clear_index();
  entries_ = shown_entries;
  bytes_ = shown_bytes;
  *needs_rebuild = false;
  policy_->begin_load();
  // In pages of kPage records, each its own scan from where the last one ended, so that the
  // loader can let writers in between them (lock). A key already in the index was loaded or
  // written since the load began (write_lock): the index has its newest record.
  constexpr std::size_t kPage = 4096;
  std::string from;
  Status s;
  for (;;) {
    std::size_t n = 0;
    std::string last;
    s = kv_->scan(Cf::access, from, "", [&](std::string_view key, std::string_view bytes) {
      AccessRecord a;
      if (!decode_access(bytes, &a)) {
        *needs_rebuild = true;
        return false;
      }
      load_record_locked(key, a);
      if (++n < kPage) return true;
      last = key;
      return false;
    });
    if (!s.ok() || *needs_rebuild || n < kPage) break;
    from = successor(last);
    load_cursor_ = from;
    if (lock != nullptr) yield_to_waiting(*lock, options_.on_load_page);
  }
  policy_->end_load();
  *before_entries = entries_.load();
  *before_bytes = bytes_.load();
  if (s.ok() && !*needs_rebuild) {  // a partial count would be worse than the stored totals
    std::uint64_t entries = 0, bytes = 0;
    for (const auto& [key, n] : index_) {
      ++entries;
      bytes += n.size;
    }
    entries_ = entries;
    bytes_ = bytes;
  }
  if (s.ok()) s = policy_->load();
  return s;
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
      get_le64(v) <= static_cast<std::uint64_t>(EvictionPolicy::s3fifo))
    out->policy = static_cast<EvictionPolicy>(get_le64(v));
  if (kv.get(Cf::counters, kStaleFactorKey, &v).ok() && v.size() == 8) {
    const std::uint64_t bits = get_le64(v);
    double factor = 0;
    std::memcpy(&factor, &bits, sizeof factor);
    if (factor >= 1.0) out->stale_factor = factor;
  }
  // 24 bytes (the default ttl in seconds) before millisecond ttls, 32 since.
  if (kv.get(Cf::counters, kLimitsKey, &v).ok() && (v.size() == 24 || v.size() == 32)) {
    const std::string_view l = v;
    out->max_entries = get_le64(l);
    out->max_bytes = get_le64(l.substr(8));
    out->default_ttl_ms =
        v.size() == 32 ? static_cast<std::int64_t>(get_le64(l.substr(24)))
                       : util::seconds_to_ms(static_cast<std::int64_t>(get_le64(l.substr(16))));
  }
  return Status();
}

Status Engine::compact() {
  for (int cf = 0; cf < kv::kCfCount; ++cf)
    if (Status s = kv_->compact(static_cast<Cf>(cf)); !s.ok()) return s;
  return Status();
}

Status Engine::rebuild() {
  const auto lock = foreground_lock();
  return rebuild_locked();
}

Status Engine::rebuild_locked() {
  open_problems_.clear();
  drain_pending();
  // A store that is not durable has no access records: the history is the index's.
  absl::flat_hash_map<std::string, AccessRecord, Hash, std::equal_to<>> history;
  if (!durable_)
    for (const auto& [key, n] : index_) history.emplace(key, record_of(n, *n.category));
  clear_index();
  {
    auto batch = kv_->new_batch();
    batch->put(Cf::counters, kRebuildingKey, le64(1));
    // Format 1 kept per-category counters; format 2 counts categories in the index.
    batch->delete_range(Cf::counters, kCategoryCounterPrefix, kCategoryCounterEnd);
    // S3-FIFO's ghosts are history the entries cannot confirm: a rebuild forgets them.
    batch->delete_range(Cf::counters, kGhostPrefix, kGhostEnd);
    if (Status s = kv_->write(*batch); !s.ok()) return s;
  }
  // Format 1's index families (order, expiry, category) are retired: emptied by dropping them,
  // which also discards table files too damaged to read. The access family holds what cannot be
  // derived (access history) and is kept, unless it cannot be read.
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
  std::uint64_t dropped = 0;
  std::vector<std::pair<std::string, AccessRecord>> rebuilt;
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
      if (!durable_) {
        if (auto h_it = history.find(key); h_it != history.end()) {
          a = std::move(h_it->second);
          found = true;
        }
      } else if (kv_->get(Cf::access, key, &bytes_a).ok() && decode_access(bytes_a, &a)) {
        found = true;
      }
      if (!found) {
        a = AccessRecord{};
        a.last_tick = a.insert_tick = ++tick_;
        a.access_count = 1;
        a.last_access_ns = h.created_ns;
      }
      tick_ = std::max({tick_.load(), a.last_tick, a.insert_tick});
      a.size = record.size() - offset;
      a.category = h.category;
      a.has_expiry = false;
      a.expiry_t = 0;
      a.stale_t = 0;
      if (h.invalid()) a.has_expiry = true;
      if (h.ttl_ms > 0) {
        const Deadlines d = deadlines(h.created_ns, h.ttl_ms, options_.stale_factor);
        a.stale_t = static_cast<std::uint64_t>(std::max<std::int64_t>(d.stale_at, 0));
        if (!h.invalid()) {
          a.has_expiry = true;
          a.expiry_t = expiry_time(d.expired_at);
        }
      }
      if (durable_) batch->put(Cf::access, key, encode_access(a));
      rebuilt.emplace_back(key, std::move(a));
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
  policy_->begin_load();
  for (auto& [key, a] : rebuilt) upsert_node(key, load_node(a), a.category);
  policy_->end_load();
  rebuilt.clear();
  auto batch = kv_->new_batch();
  write_meta(*batch);
  batch->put(Cf::counters, kTotalsKey, totals(entries_.load(), bytes_.load(), tick_.load()));
  batch->put(Cf::counters, kWatermarkKey, le64(static_cast<std::uint64_t>(kNoWatermark)));
  batch->del(Cf::counters, kRebuildingKey);
  if (Status s2 = kv_->write(*batch); !s2.ok()) return s2;  // the next open recounts
  if (dropped > 0) {
    counters_->error += dropped;
    log_->logf(util::Level::warn, "rebuild dropped {} undecodable entries", dropped);
  }
  return Status();
}

}  // namespace larder::engine
