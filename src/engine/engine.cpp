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

#include "util/ttl.hpp"

namespace larder::engine {

using kv::Cf;
using kv::Code;
using kv::Status;

namespace {

constexpr std::size_t kPage = 512;  // records handled per batch in scans
// Keys per lock hold: removed by cleanup / remove_keys (two deletions each), invalidated by
// invalidate_keys (an access record and a merge operand each). A concurrent call waits for one
// page at most.
constexpr std::size_t kRemovePage = 512;
constexpr std::size_t kWritePage = 512;
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
// Limits set by an administrator (cachectl limits): format byte 1, LE64 max entries, LE64 max
// bytes. They replace the opener's limits while the record exists.
constexpr std::string_view kAdminLimitsKey = "admin_limits";
constexpr std::uint8_t kAdminLimitsFormat = 1;

std::string encode_admin_limits(std::uint64_t entries, std::uint64_t bytes) {
  std::string s(1, static_cast<char>(kAdminLimitsFormat));
  put_le64(s, entries);
  put_le64(s, bytes);
  return s;
}

bool decode_admin_limits(std::string_view v, std::uint64_t* entries, std::uint64_t* bytes) {
  if (v.size() != 17 || static_cast<std::uint8_t>(v[0]) != kAdminLimitsFormat) return false;
  *entries = get_le64(v.substr(1));
  *bytes = get_le64(v.substr(9));
  return true;
}
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

Engine::Engine(std::unique_ptr<kv::Kv> kv, Options options,
               std::shared_ptr<std::atomic<std::int64_t>> watermark, Counters* counters,
               const util::Logger* log)
    : kv_(std::move(kv)),
      options_(options),
      max_entries_(options.max_entries),
      max_bytes_(options.max_bytes),
      watermark_(std::move(watermark)),
      counters_(counters),
      log_(log),
      durable_(kv_->durable()) {
  if (!watermark_) watermark_ = std::make_shared<std::atomic<std::int64_t>>(kNoWatermark);
}

Engine::~Engine() {
  if (loader_.joinable()) loader_.join();
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

// ---------------------------------------------------------------- locking

std::unique_lock<util::AdaptiveMutex> Engine::foreground_lock() {
  waiting_.fetch_add(1, std::memory_order_relaxed);
  std::unique_lock lock(mu_);
  waiting_.fetch_sub(1, std::memory_order_relaxed);
  return lock;
}

std::unique_lock<util::AdaptiveMutex> Engine::page_lock() {
  // The engine mutex is not fair: a loop that unlocks and locks again usually wins against a
  // thread that is waiting. Let waiting foreground calls go first (bounded, so a stream of them
  // cannot starve the loop).
  const auto until = std::chrono::steady_clock::now() + std::chrono::microseconds(250);
  while (waiting_.load(std::memory_order_relaxed) > 0 && std::chrono::steady_clock::now() < until)
    std::this_thread::yield();
  return std::unique_lock(mu_);
}

// ---------------------------------------------------------------- the index

Engine::OrderKey Engine::order_of(Slot& slot) const {
  const Node& n = slot.second;
  switch (options_.policy) {
    case EvictionPolicy::s3fifo:
      return {n.queue, n.queue_tick, &slot};
    case EvictionPolicy::lru:  // LRU, LFU, FIFO keep lists (lists_), ttl no order: never asked
    case EvictionPolicy::lfu:
    case EvictionPolicy::fifo:
    case EvictionPolicy::ttl:
      break;
  }
  return {0, 0, &slot};
}

const std::string* Engine::intern(std::string_view category) {
  auto it = cats_.find(category);
  if (it == cats_.end()) it = cats_.emplace(std::string(category), 0).first;
  return &it->first;
}

void Engine::link(Index::iterator it, bool count, bool keep_place) {
  const std::string_view key = it->first;
  const Node& n = it->second;
  if (listed()) {
    if (!lists_deferred_ && !keep_place) list_insert(*it);
  } else if (options_.policy != EvictionPolicy::ttl) {
    order_.insert(order_of(*it));
  }
  if (n.has_expiry) expiry_.emplace(n.expiry_t, key);
  ++cats_.find(*n.category)->second;
  s3_count(n, +1);
  if (!count) return;
  entries_.fetch_add(1, std::memory_order_relaxed);
  bytes_.fetch_add(n.size, std::memory_order_relaxed);
}

void Engine::unlink(Index::iterator it, bool keep_place) {
  const std::string_view key = it->first;
  const Node& n = it->second;
  if (listed()) {
    if (!lists_deferred_ && !keep_place)
      list_remove(*it);  // (while loading, no node is in a list yet)
  } else if (options_.policy != EvictionPolicy::ttl) {
    order_.erase(order_of(*it));
  }
  if (n.has_expiry) expiry_.erase({n.expiry_t, key});
  auto cat = cats_.find(*n.category);
  if (--cat->second == 0) cats_.erase(cat);  // no other node points at it
  s3_count(n, -1);
  entries_.fetch_sub(1, std::memory_order_relaxed);
  bytes_.fetch_sub(n.size, std::memory_order_relaxed);
}

void Engine::erase_node(Index::iterator it) {
  unlink(it);
  if (dirty_.erase(std::string_view(it->first)) > 0)
    dirty_size_.fetch_sub(1, std::memory_order_relaxed);
  index_.erase(it);
}

void Engine::upsert_node(std::string_view key, Node node, std::string_view category) {
  auto [it, inserted] = index_.try_emplace(key);
  bool keep_place = false;
  if (!inserted) {
    // FIFO: an overwrite keeps its insert tick, so its place in the list: the links stay (putting
    // it back by tick would walk from the tail to it).
    const Node& old = it->second;
    keep_place = listed() && !lists_deferred_ && rank_of(old) == rank_of(node) &&
                 list_tick(old) == list_tick(node);
    if (keep_place) {
      node.list_prev = old.list_prev;
      node.list_next = old.list_next;
    }
    unlink(it, keep_place);
  }
  node.category = intern(category);
  it->second = node;
  link(it, /*count=*/true, keep_place);
}

void Engine::list_insert(Slot& slot, Slot* hint) {
  Node& n = slot.second;
  List& l = lists_[rank_of(n)];
  const std::uint64_t tick = list_tick(n);
  std::uint64_t steps = 0;
  Slot* after = nullptr;
  if (hint != nullptr) {  // the last node with a smaller tick, from the hint on
    after = hint;
    for (Slot* next = after->second.list_next; next != nullptr && list_tick(next->second) < tick;
         next = next->second.list_next, ++steps)
      after = next;
  } else {  // from the tail back
    after = l.tail;
    for (; after != nullptr && list_tick(after->second) > tick; ++steps)
      after = after->second.list_prev;
  }
  if (steps > 0) list_steps_.fetch_add(steps, std::memory_order_relaxed);
  n.list_prev = after;
  n.list_next = after != nullptr ? after->second.list_next : l.head;
  (n.list_next != nullptr ? n.list_next->second.list_prev : l.tail) = &slot;
  (after != nullptr ? after->second.list_next : l.head) = &slot;
  ++listed_size_;
}

void Engine::list_remove(Slot& slot) {
  Node& n = slot.second;
  auto it = lists_.find(rank_of(n));
  List& l = it->second;
  (n.list_prev != nullptr ? n.list_prev->second.list_next : l.head) = n.list_next;
  (n.list_next != nullptr ? n.list_next->second.list_prev : l.tail) = n.list_prev;
  n.list_prev = n.list_next = nullptr;
  if (l.head == nullptr) lists_.erase(it);
  --listed_size_;
}

void Engine::lists_sort() {
  lists_deferred_ = false;
  if (!listed()) return;
  std::vector<Slot*> slots;
  slots.reserve(index_.size());
  for (Slot& slot : index_) slots.push_back(&slot);
  std::sort(slots.begin(), slots.end(), [this](const Slot* a, const Slot* b) {
    return std::pair(rank_of(a->second), list_tick(a->second)) <
           std::pair(rank_of(b->second), list_tick(b->second));
  });
  lists_.clear();
  listed_size_ = 0;
  List* l = nullptr;
  std::uint64_t rank = 0;
  for (Slot* slot : slots) {  // each at its list's tail: no walk
    if (l == nullptr || rank_of(slot->second) != rank) {
      rank = rank_of(slot->second);
      l = &lists_.emplace_hint(lists_.end(), rank, List{})->second;
    }
    slot->second.list_prev = l->tail;
    slot->second.list_next = nullptr;
    (l->tail != nullptr ? l->tail->second.list_next : l->head) = slot;
    l->tail = slot;
    ++listed_size_;
  }
}

void Engine::clear_index() {
  lists_.clear();
  listed_size_ = 0;
  order_.clear();
  expiry_.clear();
  dirty_.clear();
  dirty_size_ = 0;
  index_.clear();
  cats_.clear();
  entries_ = 0;
  bytes_ = 0;
  s_entries_ = s_bytes_ = m_entries_ = m_bytes_ = 0;
  ghost_.clear();
  ghost_order_.clear();
  ghost_bytes_ = 0;
}

namespace {
// The fields a Node shares with its AccessRecord, copied either way.
template <class From, class To>
void copy_access_fields(const From& from, To& to) {
  to.last_access_ns = from.last_access_ns;
  to.last_tick = from.last_tick;
  to.access_count = from.access_count;
  to.insert_tick = from.insert_tick;
  to.size = from.size;
  to.has_expiry = from.has_expiry;
  to.expiry_t = from.expiry_t;
  to.stale_t = from.stale_t;
  to.queue = from.queue;
  to.freq = from.freq;
  to.queue_tick = from.queue_tick;
}
}  // namespace

AccessRecord Engine::record_of(const Node& n, std::string_view category) {
  AccessRecord a;
  copy_access_fields(n, a);
  a.category = std::string(category);
  return a;
}

Engine::Node Engine::node_of(const AccessRecord& a) {
  Node n;
  copy_access_fields(a, n);
  if (options_.policy == EvictionPolicy::s3fifo && n.queue_tick == 0) {
    // Written under another policy: the entry joins M in its recency order, with f = 0.
    n.queue = static_cast<std::uint8_t>(S3Queue::main);
    n.freq = 0;
    n.queue_tick = std::max<std::uint64_t>(n.last_tick, 1);
  }
  return n;
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
  // The index loads in the background: gets are served meanwhile (they read the entries family
  // only); every call that needs the index waits for the mutex the loader holds. The totals are
  // the stored ones (exact: written with every change) until the scan has recounted them.
  entries_ = plan.stored_entries;
  bytes_ = plan.stored_bytes;
  lock.unlock();  // nobody else can take it yet: the engine is not published before open returns
  const LoadPlan plan_copy = plan;  // for a synchronous load when no thread can be started
  std::promise<void> locked;
  std::future<void> holding = locked.get_future();
  auto load = [this, plan = std::move(plan), &locked] {
    std::lock_guard guard(mu_);
    locked.set_value();
    const auto t0 = std::chrono::steady_clock::now();
    if (Status st = finish_load_locked(plan); !st.ok()) {
      ++counters_->error;
      log_->logf(util::Level::error, "loading the index failed: {}", st.message);
      open_problems_.push_back(fmt::format("loading the index failed ({})", st.message));
    }
    log_->logf(
        util::Level::debug, "index of {} entries loaded in {} ms", entries_.load(),
        std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now() - t0)
            .count());
  };
  try {
    loader_ = std::thread(std::move(load));
  } catch (const std::system_error& e) {  // no thread to be had: load here instead
    log_->logf(util::Level::warn, "loading the index in this thread: {}", e.what());
    std::lock_guard guard(mu_);
    return finish_load_locked(plan_copy);
  }
  holding.wait();
  return Status();
}

Status Engine::recover_store() {
  std::lock_guard lock(mu_);
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
    Status loaded = load_index_locked(&undecodable);
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

Status Engine::finish_load_locked(const LoadPlan& plan) {
  const bool repair = options_.repair_on_open;
  bool undecodable = false;
  Status s = load_index_locked(&undecodable);
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
  if (entries_.load() != plan.stored_entries || bytes_.load() != plan.stored_bytes) {
    log_->logf(util::Level::warn,
               "the totals counter said {} entries / {} bytes, the access records hold {} / {}; "
               "corrected",
               plan.stored_entries, plan.stored_bytes, entries_.load(), bytes_.load());
    batch->put(Cf::counters, kTotalsKey, totals(entries_.load(), bytes_.load(), tick_.load()));
  }
  if (plan.stored_limits != limits_record()) batch->put(Cf::counters, kLimitsKey, limits_record());
  if (plan.stored_policy != le64(static_cast<std::uint64_t>(options_.policy))) {
    batch->put(Cf::counters, kPolicyKey, le64(static_cast<std::uint64_t>(options_.policy)));
    // Only S3-FIFO keeps ghosts.
    if (options_.policy != EvictionPolicy::s3fifo)
      batch->delete_range(Cf::counters, kGhostPrefix, kGhostEnd);
  }
  return batch->count() == 0 ? Status() : kv_->write(*batch);
}

Status Engine::load_index_locked(bool* needs_rebuild) {
  // stats() reads the totals without the mutex: they keep their value until the recount is done.
  const std::uint64_t shown_entries = entries_.load(), shown_bytes = bytes_.load();
  clear_index();
  entries_ = shown_entries;
  bytes_ = shown_bytes;
  *needs_rebuild = false;
  std::uint64_t max_tick = tick_.load(), loaded_entries = 0, loaded_bytes = 0;
  lists_deferred_ = true;
  Status s = kv_->scan(Cf::access, "", "", [&](std::string_view key, std::string_view bytes) {
    AccessRecord a;
    if (!decode_access(bytes, &a)) {
      *needs_rebuild = true;
      return false;
    }
    max_tick = std::max({max_tick, a.last_tick, a.insert_tick});
    auto it = index_.emplace(std::string(key), node_of(a)).first;
    it->second.category = intern(a.category);
    link(it, /*count=*/false);
    ++loaded_entries;
    loaded_bytes += a.size;
    return true;
  });
  lists_sort();
  tick_ = max_tick;
  if (s.ok() && !*needs_rebuild) {  // a partial count would be worse than the stored totals
    entries_ = loaded_entries;
    bytes_ = loaded_bytes;
  }
  if (s.ok() && options_.policy == EvictionPolicy::s3fifo) s = load_ghosts_locked();
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
  std::lock_guard lock(mu_);
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
  lists_deferred_ = true;
  for (auto& [key, a] : rebuilt) upsert_node(key, node_of(a), a.category);
  lists_sort();
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

// ---------------------------------------------------------------- verify

Status Engine::verify(VerifyReport* report) {
  std::lock_guard lock(mu_);
  if (Status s = flush_access_locked(); !s.ok()) return s;
  *report = {};
  auto problem = [&](std::string line) {
    if (report->problems.size() < 1000) report->problems.push_back(std::move(line));
  };
  for (const std::string& p : open_problems_) problem(p);
  std::map<std::string, std::uint64_t> cats;
  bool access_damaged = false;
  Status failure;
  Status scanned = for_each_page(*kv_, Cf::entries, [&](const Page& page) {
    for (const auto& [key, record] : page) {
      EntryHeader h;
      std::size_t offset = 0;
      if (!decode_entry(record, &h, &offset)) {
        problem(fmt::format("entry '{}': undecodable record", key));
        continue;
      }
      const std::uint64_t size = record.size() - offset;
      ++report->entries;
      report->bytes += size;
      ++cats[h.category];
      const bool want_expiry = h.invalid() || h.ttl_ms > 0;
      const std::uint64_t want_t =
          h.invalid() ? 0
          : h.ttl_ms > 0
              ? expiry_time(deadlines(h.created_ns, h.ttl_ms, options_.stale_factor).expired_at)
              : 0;
      auto node = index_.find(key);
      if (node == index_.end()) {
        problem(fmt::format("entry '{}': not in the in-memory index", key));
      } else {
        const Node& n = node->second;
        if (n.size != size || *n.category != h.category || n.has_expiry != want_expiry ||
            (want_expiry && n.expiry_t != want_t))
          problem(fmt::format("entry '{}': the in-memory index does not match the entry", key));
      }
      if (access_damaged || !durable_) continue;
      std::string bytes_a;
      Status s = kv_->get(Cf::access, key, &bytes_a);
      if (s.code == Code::corruption) {
        problem(fmt::format("the access family cannot be read ({}); verify --repair rebuilds it",
                            s.message));
        access_damaged = true;
        continue;
      }
      if (s.not_found()) {
        problem(fmt::format("entry '{}': no access record", key));
        continue;
      }
      if (!s.ok()) {
        failure = s;
        return s;
      }
      AccessRecord a;
      if (!decode_access(bytes_a, &a)) {
        problem(fmt::format("entry '{}': undecodable access record", key));
        continue;
      }
      if (a.size != size)
        problem(fmt::format("entry '{}': access record says {} bytes, value has {}", key, a.size,
                            size));
      if (a.category != h.category)
        problem(fmt::format("entry '{}': access record says category '{}', entry '{}'", key,
                            a.category, h.category));
      if (a.has_expiry != want_expiry || (want_expiry && a.expiry_t != want_t))
        problem(
            fmt::format("entry '{}': access record's expiry does not match its ttl/status", key));
      if (node != index_.end()) {
        const Node& n = node->second;
        const Node want_node = node_of(a);  // as the index loads it (S3-FIFO fields filled in)
        if (n.last_tick != a.last_tick || n.access_count != a.access_count ||
            n.insert_tick != a.insert_tick ||
            (options_.policy == EvictionPolicy::s3fifo &&
             (n.queue != want_node.queue || n.freq != want_node.freq ||
              n.queue_tick != want_node.queue_tick)))
          problem(
              fmt::format("entry '{}': the in-memory index and the access record disagree "
                          "on its access history",
                          key));
      }
    }
    return Status();
  });
  if (failure.failed()) return failure;
  if (!scanned.ok()) return scanned;
  std::uint64_t n = 0;
  if (!access_damaged && durable_) {
    Status st = kv_->scan(Cf::access, "", "", [&](std::string_view, std::string_view) {
      ++n;
      return true;
    });
    if (st.code == Code::corruption)
      problem(fmt::format("the access family cannot be read ({}); verify --repair rebuilds it",
                          st.message));
    else if (!st.ok())
      return st;
    else if (n != report->entries)
      problem(fmt::format("{} access records for {} entries", n, report->entries));
  }
  // The index's own structures.
  if (index_.size() != report->entries)
    problem(fmt::format("the in-memory index holds {} keys for {} entries", index_.size(),
                        report->entries));
  std::uint64_t with_expiry = 0;
  for (const auto& [key, node] : index_) with_expiry += node.has_expiry ? 1 : 0;
  if (listed()) {
    std::size_t listed = 0;
    bool sorted = true, ranked = true;
    for (const auto& [rank, l] : lists_) {
      std::uint64_t last = 0;
      ranked = ranked && l.head != nullptr;  // no empty list is kept
      for (const Slot* s = l.head; s != nullptr && listed <= index_.size();
           s = s->second.list_next) {
        ++listed;
        sorted = sorted && list_tick(s->second) >= last;
        ranked = ranked && rank_of(s->second) == rank;
        last = list_tick(s->second);
      }
    }
    if (listed != index_.size() || listed_size_ != index_.size())
      problem(fmt::format("the eviction lists hold {} keys ({} counted) for {} in the index",
                          listed, listed_size_, index_.size()));
    if (!sorted) problem("an eviction list is not in tick order");
    if (!ranked) problem("an eviction list holds a key of another access count, or none");
  } else if (options_.policy != EvictionPolicy::ttl && order_.size() != index_.size()) {
    problem(fmt::format("the eviction order holds {} keys for {} in the index", order_.size(),
                        index_.size()));
  }
  if (expiry_.size() != with_expiry)
    problem(fmt::format("the expiry order holds {} keys for {} with a ttl or invalid",
                        expiry_.size(), with_expiry));
  if (options_.policy == EvictionPolicy::s3fifo) verify_s3fifo(problem);
  std::map<std::string, std::uint64_t> index_cats(cats_.begin(), cats_.end());
  if (index_cats != cats) problem("per-category counts do not match the entries");
  // Counters as stored (not only as held in memory).
  std::string totals_bytes;
  if (!durable_) {
    // Not kept in a store that ends with the process: the in-memory totals are checked below.
  } else if (Status s = kv_->get(Cf::counters, kTotalsKey, &totals_bytes);
             s.ok() && totals_bytes.size() == 24) {
    if (get_le64(totals_bytes) != report->entries ||
        get_le64(totals_bytes.substr(8)) != report->bytes)
      problem(fmt::format("counters say {} entries / {} bytes, the store holds {} / {}",
                          get_le64(totals_bytes), get_le64(totals_bytes.substr(8)), report->entries,
                          report->bytes));
  } else {
    problem("the totals counter is missing or malformed");
  }
  for (const Cf cf : {Cf::order, Cf::expiry, Cf::category}) {
    bool any = false;
    Status st = kv_->scan(cf, "", "", [&](std::string_view, std::string_view) {
      any = true;
      return false;
    });
    if (!st.ok() || any)
      problem(fmt::format("the retired {} family is not empty; verify --repair empties it",
                          kv::to_string(cf)));
  }
  if (entries_.load() != report->entries || bytes_.load() != report->bytes)
    problem("in-memory totals do not match the store");
  return Status();
}

// ---------------------------------------------------------------- access buffer

Engine::Shard& Engine::shard_of(std::size_t hash) {
  // The top bits: the shard's map places keys by the low ones (and keeps 7 of them in its control
  // bytes), which must not be the same for every key of a shard.
  static_assert(std::tuple_size_v<decltype(shards_)> == 16);
  return shards_[hash >> (std::numeric_limits<std::size_t>::digits - 4)];
}

void Engine::record_access(std::string_view key, std::int64_t now_ns) {
  const std::uint64_t tick = tick_.fetch_add(1) + 1;
  const std::size_t hash = Hash{}(key);
  Shard& shard = shard_of(hash);
  {
    std::lock_guard lock(shard.mu);
    auto it = shard.map.find(key, hash);
    if (it == shard.map.end()) {
      it = shard.map.emplace(std::string(key), Pending{}).first;
      pending_size_.fetch_add(1, std::memory_order_relaxed);
    }
    it->second.count += 1;
    it->second.tick = tick;
    it->second.ns = now_ns;
    shard.size.store(shard.map.size(), std::memory_order_relaxed);
  }
  const std::size_t pending = pending_size_.load(std::memory_order_relaxed);
  if (pending < kAccessFlushBatch) return;
  // Hand the batch to the flusher when there is one. When it falls far behind, this reader
  // applies its own shard's hits (in memory only: the flusher persists): a sixteenth of the
  // backlog, so that no one read pays for all of it.
  if (flusher_ != nullptr) {
    if (!flush_requested_.exchange(true, std::memory_order_acq_rel)) flusher_->flush_soon();
    if (pending < 16 * kAccessFlushBatch) return;
    std::unique_lock lock(mu_, std::try_to_lock);
    if (lock.owns_lock()) apply_locked(take_shard(shard));
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
  Shard& shard = shard_of(Hash{}(key));
  if (shard.size.load(std::memory_order_relaxed) == 0) return {};  // (this thread's hits show)
  std::lock_guard lock(shard.mu);
  auto it = shard.map.find(key);
  if (it == shard.map.end()) return {};
  Pending p = it->second;
  shard.map.erase(it);
  shard.size.store(shard.map.size(), std::memory_order_relaxed);
  pending_size_.fetch_sub(1, std::memory_order_relaxed);
  return p;
}

Engine::PendingMap Engine::take_shard(Shard& shard) {
  PendingMap taken;
  if (shard.size.load(std::memory_order_relaxed) == 0) return taken;
  {
    std::lock_guard lock(shard.mu);
    taken.swap(shard.map);
    shard.size.store(0, std::memory_order_relaxed);
  }
  pending_size_.fetch_sub(taken.size(), std::memory_order_relaxed);
  return taken;
}

Engine::PendingMap Engine::drain_pending() {
  PendingMap all;
  for (Shard& shard : shards_) {
    PendingMap taken = take_shard(shard);
    if (all.empty())
      all.swap(taken);
    else
      all.merge(taken);
  }
  return all;
}

void Engine::apply_pending_locked() {
  if (pending_size_.load(std::memory_order_relaxed) == 0) return;
  apply_locked(drain_pending());
}

void Engine::apply_locked(const PendingMap& pending) {
  // A hit moves an LRU node within its list (a newer tick) and an LFU node to another list (a
  // larger count). Each is taken out first, then put back in tick order, so that each lands at
  // (or next to) its list's tail.
  std::vector<std::pair<std::uint64_t, Slot*>> moves;
  if (listed()) moves.reserve(pending.size());
  for (const auto& [key, p] : pending) {
    auto it = index_.find(key);
    if (it == index_.end()) continue;  // removed since the hit
    Node& n = it->second;
    const std::string_view k = it->first;
    const bool moves_node = lfu() || (lru() && p.tick > n.last_tick);
    if (moves_node) list_remove(*it);
    n.access_count += p.count;
    if (options_.policy == EvictionPolicy::s3fifo) s3_hit(n, p.count);  // nothing moves
    n.last_tick = std::max(n.last_tick, p.tick);
    n.last_access_ns = std::max(n.last_access_ns, p.ns);
    if (moves_node) moves.emplace_back(n.last_tick, &*it);
    mark_dirty(k);
  }
  std::sort(moves.begin(), moves.end());
  // Each move after the first of its list walks on from the one before it (a smaller tick, and
  // still in that list: every move was taken out above). From the tail every time, a batch of
  // older hits than the list's newest nodes (a reader's shard, applied after other shards)
  // walked back past those nodes once per hit.
  absl::flat_hash_map<std::uint64_t, Slot*> last;  // rank -> the move inserted last
  for (const auto& [tick, slot] : moves) {
    Slot*& hint = last[rank_of(slot->second)];
    list_insert(*slot, hint);
    hint = slot;
  }
}

// Writes the access records of up to `max_keys` dirty nodes (blind puts: the node is the whole
// record) with the tick, in one batch.
Status Engine::persist_dirty_locked(std::size_t max_keys) {
  if (dirty_.empty()) return Status();
  auto batch = kv_->new_batch();
  std::vector<std::string_view> written;
  written.reserve(std::min(max_keys, dirty_.size()));
  for (const std::string_view key : dirty_) {
    if (written.size() >= max_keys) break;
    auto it = index_.find(key);
    if (it != index_.end())
      batch->put(Cf::access, key, encode_access(record_of(it->second, *it->second.category)));
    written.push_back(key);
  }
  batch->put(Cf::counters, kTotalsKey, totals(entries_.load(), bytes_.load(), tick_.load()));
  if (Status s = kv_->write(*batch); !s.ok()) return s;
  for (const std::string_view key : written) dirty_.erase(key);
  dirty_size_.fetch_sub(written.size(), std::memory_order_relaxed);
  return Status();
}

Status Engine::flush_access() {
  // Applied and persisted in slices, releasing the mutex between them so that no writer waits
  // behind a large flush.
  constexpr std::size_t kSlice = 4096;
  for (;;) {
    const auto lock = page_lock();
    flush_requested_.store(false, std::memory_order_release);
    apply_pending_locked();
    if (Status s = persist_dirty_locked(kSlice); !s.ok()) return s;
    if (dirty_.empty()) return Status();
  }
}

void Engine::apply_access() {
  const auto lock = page_lock();
  flush_requested_.store(false, std::memory_order_release);
  apply_pending_locked();
}

Status Engine::flush_access_locked() {
  flush_requested_.store(false, std::memory_order_release);
  apply_pending_locked();
  return persist_dirty_locked(std::numeric_limits<std::size_t>::max());
}

Status Engine::access_of(std::string_view key, AccessRecord* out) {
  // The engine mutex first: hits move from a shard into the index only under it, so the pending
  // hits read here are not also in the index (read between the two locks, they could be both).
  const auto lock = foreground_lock();
  Pending p;
  {
    Shard& shard = shard_of(Hash{}(key));
    std::lock_guard shard_lock(shard.mu);
    if (auto it = shard.map.find(key); it != shard.map.end()) p = it->second;
  }
  auto it = index_.find(key);
  if (it == index_.end()) return Status::missing();
  *out = record_of(it->second, *it->second.category);
  out->access_count += p.count;
  out->last_tick = std::max(out->last_tick, p.tick);
  out->last_access_ns = std::max(out->last_access_ns, p.ns);
  return Status();
}

// ---------------------------------------------------------------- reads

Status Engine::read(std::string_view key, std::int64_t now_ns, Want want, Found* out) {
  bool decoded = false;
  // The value is copied once, straight out of the store's bytes.
  Status s = kv_->get_view(Cf::entries, key, [&](std::string_view record) {
    std::size_t offset = 0;
    decoded = want == Want::value_only
                  ? decode_entry_value(record, &out->header.flags, &out->header.created_ns,
                                       &out->header.ttl_ms, &offset)
                  : decode_entry(record, &out->header, &offset);
    if (!decoded) return;
    out->size = record.size() - offset;
    if (want != Want::header) out->value.assign(record.substr(offset));
  });
  if (!s.ok()) return s;
  if (!decoded) return corrupt("entry", key);
  out->status = status_at(out->header.flags, out->header.created_ns, out->header.ttl_ms,
                          options_.stale_factor, now_ns);
  return Status();
}

Status Engine::keys(std::string_view prefix, std::vector<std::string>* out) {
  // In pages, each its own scan: the memory store holds its lock for a scan, which must not
  // keep writers out for the whole family.
  constexpr std::size_t kKeysPage = 4096;
  const std::string end = prefix_end(prefix);
  std::string from(prefix);
  for (;;) {
    std::size_t n = 0;
    Status s = kv_->scan(keys_family(), from, end, [&](std::string_view k, std::string_view) {
      out->emplace_back(k);
      return ++n < kKeysPage;
    });
    if (!s.ok() || n < kKeysPage) return s;
    from = successor(out->back());
  }
}

Status Engine::has_keys(std::string_view prefix, bool* any) {
  *any = false;
  return kv_->scan(keys_family(), prefix, prefix_end(prefix),
                   [&](std::string_view, std::string_view) {
                     *any = true;
                     return false;
                   });
}

Status Engine::keys_in_category(std::string_view category, std::vector<std::string>* out) {
  // A walk over the index (categories are interned: one pointer comparison per key). Keeping a
  // per-category ordered set instead would cost ~40 B per entry for a call made by
  // clear/invalidate of a category only.
  {
    std::lock_guard lock(mu_);
    auto cat = cats_.find(category);
    if (cat == cats_.end()) return Status();
    const std::string* interned = &cat->first;
    out->reserve(cat->second);
    for (const auto& [key, node] : index_)
      if (node.category == interned) out->push_back(key);
  }
  std::sort(out->begin(), out->end());
  return Status();
}

Status Engine::status_counts(std::int64_t now_ns, StatusCounts* out) {
  *out = {};
  const auto now = static_cast<std::uint64_t>(std::max<std::int64_t>(now_ns, 0));
  std::lock_guard lock(mu_);
  // A walk over the nodes (each knows its expiry and stale times), not over expiry_ with a lookup
  // per entry.
  for (const auto& [key, n] : index_) {
    if (!n.has_expiry) continue;
    if (n.expiry_t == 0)
      ++out->invalid;
    else if (n.expiry_t <= now)
      ++out->expired;
    else if (n.stale_t <= now)
      ++out->stale;
  }
  const std::uint64_t total = entries_.load();
  const std::uint64_t other = out->invalid + out->expired + out->stale;
  out->fresh = total > other ? total - other : 0;
  return Status();
}

std::map<std::string, std::uint64_t> Engine::categories() {
  std::lock_guard lock(mu_);
  return {cats_.begin(), cats_.end()};
}

// ---------------------------------------------------------------- writes

bool Engine::over_limits(const Txn& t) const {
  const auto e = static_cast<std::int64_t>(entries_.load()) + t.d_entries;
  const auto b = static_cast<std::int64_t>(bytes_.load()) + t.d_bytes;
  return (max_entries() != 0 && e > static_cast<std::int64_t>(max_entries())) ||
         (max_bytes() != 0 && b > static_cast<std::int64_t>(max_bytes()));
}

void Engine::remove_in_txn(Txn& t, std::string_view key, const Node& node, EventKind why) {
  t.batch->del(Cf::entries, key);
  if (durable_) t.batch->del(Cf::access, key);
  t.d_entries -= 1;
  t.d_bytes -= static_cast<std::int64_t>(node.size);
  if (node.queue == static_cast<std::uint8_t>(S3Queue::small)) {
    t.d_s_entries -= 1;
    t.d_s_bytes -= static_cast<std::int64_t>(node.size);
  } else {
    t.d_m_entries -= 1;
    t.d_m_bytes -= static_cast<std::int64_t>(node.size);
  }
  t.add_removed(key, why);
  t.totals_dirty = true;
}

// Chooses entries to remove until the limits hold: in the expired pass, expired and invalid
// entries in expiry order (invalid first); in the policy pass, live entries in eviction order.
// Never removes `keep`. Only plans: the index changes when the transaction commits.
void Engine::evict(Txn& t, Pass pass, std::int64_t now_ns, const Keep& keep) {
  const auto now = static_cast<std::uint64_t>(std::max<std::int64_t>(now_ns, 0));
  if (pass == Pass::expired) {
    for (const auto& [when, key] : expiry_) {
      if (!over_limits(t) || when > now) return;
      if (keep(key) || t.removes(key)) continue;
      auto it = index_.find(key);
      remove_in_txn(t, it->first, it->second, when != 0 ? EventKind::expire : EventKind::remove);
      // An invalid entry was counted when it was invalidated; an expired one counts now.
      if (when != 0) ++t.expirations;
    }
    return;
  }
  // Victims in eviction order, until the limits hold; false ends the walk.
  const auto consider = [&](Slot& slot) {
    if (!over_limits(t)) return false;
    const std::string_view key = slot.first;
    if (keep(key) || t.removes(key)) return true;
    remove_in_txn(t, key, slot.second, EventKind::evict);
    ++t.evictions;
    return true;
  };
  if (listed()) {
    for (auto& [rank, l] : lists_)
      for (Slot* slot = l.head; slot != nullptr; slot = slot->second.list_next)
        if (!consider(*slot)) return;
    return;
  }
  for (const auto& [a, b, slot] : order_)
    if (!consider(*slot)) return;
}

Status Engine::commit(Txn& t) {
  std::int64_t d_entries = t.d_entries, d_bytes = t.d_bytes;
  if (t.totals_dirty && durable_) {
    const auto e =
        static_cast<std::uint64_t>(static_cast<std::int64_t>(entries_.load()) + d_entries);
    const auto b = static_cast<std::uint64_t>(static_cast<std::int64_t>(bytes_.load()) + d_bytes);
    t.batch->put(Cf::counters, kTotalsKey, totals(e, b, tick_.load()));
  }
  if (t.watermark)
    t.batch->put(Cf::counters, kWatermarkKey, le64(static_cast<std::uint64_t>(*t.watermark)));
  s3_stage(t);
  if (t.batch->count() == 0) return Status();
  const bool relabel = format_relabel_;  // before the batch's entries or merge operands land
  if (relabel) t.batch->put(Cf::counters, kFormatKey, le64(kStoreFormat));
  if (Status s = kv_->write(*t.batch); !s.ok()) return s;
  if (relabel) format_relabel_ = false;
  if (sink_ != nullptr && sink_->wants_events()) {
    for (std::size_t i = 0; i < t.removed.size(); ++i)
      sink_->on_event(t.removed_why[i], t.removed[i]);
    for (const Staged& st : t.staged) sink_->on_event(st.kind, st.key);
  }
  s3_commit(t);
  for (const std::string& key : t.removed)
    if (auto it = index_.find(key); it != index_.end()) erase_node(it);
  for (Staged& st : t.staged) {
    if (st.kind == EventKind::invalidate) {
      // Only the expiry order changes (to the invalid position): eviction order and category stay.
      auto it = index_.find(st.key);
      Node& n = it->second;
      if (n.has_expiry) expiry_.erase({n.expiry_t, it->first});
      n.has_expiry = true;
      n.expiry_t = 0;
      expiry_.emplace(0, it->first);
    } else {
      upsert_node(st.key, st.node, st.category);
    }
    // The node is what was just written: no hit of it is left to persist.
    if (!dirty_.empty() && dirty_.erase(st.key) > 0)
      dirty_size_.fetch_sub(1, std::memory_order_relaxed);
  }
  if (t.watermark) watermark_->store(*t.watermark);
  if (t.evictions != 0) counters_->eviction += t.evictions;
  if (t.expirations != 0) counters_->expiration += t.expirations;
  if (t.invalidations != 0) counters_->invalidation += t.invalidations;
  return Status();
}

Status Engine::set(std::string_view key, std::string_view value, std::int64_t ttl_ms,
                   std::string_view category, const std::map<std::string, std::string>& metadata,
                   std::int64_t now_ns, SetOutcome* outcome) {
  const SetItem item{key, value, ttl_ms, category, &metadata, std::nullopt};
  if (max_bytes() != 0 && value.size() > max_bytes()) {
    *outcome = SetOutcome::too_large;
    return Status();
  }
  const auto lock = foreground_lock();
  return set_locked({&item, 1}, now_ns, outcome);
}

Status Engine::set_all(std::span<const SetItem> items, std::int64_t now_ns, SetOutcome* outcome) {
  // A key given twice is stored once, with its last item (as sets one after another would).
  absl::flat_hash_set<std::string_view, Hash, std::equal_to<>> seen;
  std::vector<SetItem> last;
  last.reserve(items.size());
  for (auto it = items.rbegin(); it != items.rend(); ++it) {
    if (max_bytes() != 0 && it->value.size() > max_bytes()) {
      *outcome = SetOutcome::too_large;
      return Status();
    }
    if (seen.insert(it->key).second) last.push_back(*it);
  }
  std::reverse(last.begin(), last.end());
  *outcome = SetOutcome::stored;
  if (last.empty()) return Status();
  const auto lock = foreground_lock();
  return set_locked(last, now_ns, outcome);
}

Status Engine::update(std::string_view key, std::int64_t now_ns,
                      const std::function<std::optional<Rewrite>(const Found*)>& decide,
                      SetOutcome* outcome) {
  const auto lock = foreground_lock();
  Found current;
  const Status s = read(key, now_ns, Want::value, &current);
  if (!s.ok() && !s.not_found()) return s;
  std::optional<Rewrite> w = decide(s.ok() ? &current : nullptr);
  if (!w) {
    *outcome = SetOutcome::skipped;
    return Status();
  }
  if (max_bytes() != 0 && w->value.size() > max_bytes()) {
    *outcome = SetOutcome::too_large;
    return Status();
  }
  const SetItem item{key, w->value, w->ttl_ms, w->category, &w->metadata, w->created_ns};
  return set_locked({&item, 1}, now_ns, outcome);
}

Status Engine::fill(std::span<const SetItem> items, std::int64_t now_ns) {
  const auto lock = foreground_lock();
  std::vector<SetItem> todo;
  todo.reserve(items.size());
  for (const SetItem& item : items) {
    if (!value_fits(item.value.size())) continue;
    if (!index_.contains(item.key)) {  // the index holds every stored key: none is
      todo.push_back(item);
      continue;
    }
    Found current;
    const Status s = read(item.key, now_ns, Want::header, &current);
    if (s.ok() && current.status == EntryStatus::fresh) continue;  // a newer local write
    if (s.code == Code::corruption) continue;                      // left for a read to drop
    if (!s.ok() && !s.not_found()) return s;
    todo.push_back(item);
  }
  if (todo.empty()) return Status();
  SetOutcome outcome = SetOutcome::full;
  return set_locked(todo, now_ns, &outcome);
}

// Stores `items` (distinct keys, each within the byte limit) in one transaction. Under mu_.
Status Engine::set_locked(std::span<const SetItem> items, std::int64_t now_ns,
                          SetOutcome* outcome) {
  // LRU and LFU: hits recorded before this set go into the lists first, so that they land near
  // their list's tail (the set's node lands at its list's tail).
  if (lru() || lfu()) apply_pending_locked();
  Txn t(*kv_);
  t.totals_dirty = true;
  const bool s3 = options_.policy == EvictionPolicy::s3fifo;
  // Where each new key goes. S3-FIFO looks a new key up in the ghost queue before any eviction.
  absl::InlinedVector<S3Queue, 1> queues;
  queues.reserve(items.size());
  // Each key's node before the set (end() for a new key). Planning leaves the index as it is,
  // so these stay valid until the commit.
  absl::InlinedVector<Index::iterator, 1> olds;
  olds.reserve(items.size());
  for (const SetItem& item : items) {
    const auto old = olds.emplace_back(index_.find(item.key));
    const bool had_old = old != index_.end();
    t.d_entries += had_old ? 0 : 1;
    t.d_bytes += static_cast<std::int64_t>(item.value.size()) -
                 (had_old ? static_cast<std::int64_t>(old->second.size) : 0);
    queues.push_back(s3 && !had_old ? s3_admit(t, item.key, item.value.size()) : S3Queue::small);
  }
  if (over_limits(t)) {
    absl::flat_hash_set<std::string_view, Hash, std::equal_to<>> batch_keys;
    if (items.size() > 1)
      for (const SetItem& item : items) batch_keys.insert(item.key);
    const Keep keep{items[0].key, items.size() > 1 ? &batch_keys : nullptr};
    apply_pending_locked();  // victims by every hit so far
    evict(t, Pass::expired, now_ns, keep);
    if (over_limits(t) && s3)
      s3_evict(t, keep);
    else if (over_limits(t) && options_.policy != EvictionPolicy::ttl)
      evict(t, Pass::policy, now_ns, keep);
    if (over_limits(t)) {
      *outcome = SetOutcome::full;
      return Status();
    }
  }

  t.staged.reserve(items.size());
  for (std::size_t i = 0; i < items.size(); ++i) {
    const SetItem& item = items[i];
    const Pending pending = take_pending(item.key);
    const std::uint64_t tick = tick_.fetch_add(1) + 1;
    const auto old = olds[i];
    Node a;
    if (old != index_.end()) {
      a = old->second;  // an overwrite keeps its S3-FIFO queue and position, and counts as a hit
      a.access_count += pending.count + 1;
      if (s3) s3_hit(a, pending.count + 1);
    } else {
      a.access_count = 1;
      a.insert_tick = tick;
      if (s3) {
        a.queue = static_cast<std::uint8_t>(queues[i]);
        a.queue_tick = tick;
      }
    }
    a.last_tick = tick;
    a.last_access_ns = now_ns;
    a.size = item.value.size();
    a.has_expiry = false;
    a.expiry_t = 0;
    a.stale_t = 0;
    const std::int64_t created_ns = item.created_ns.value_or(now_ns);
    if (item.ttl_ms > 0) {
      const Deadlines d = deadlines(created_ns, item.ttl_ms, options_.stale_factor);
      a.has_expiry = true;
      a.expiry_t = expiry_time(d.expired_at);
      a.stale_t = static_cast<std::uint64_t>(std::max<std::int64_t>(d.stale_at, 0));
      if (d.expired_at < watermark_->load() &&
          (!t.watermark || d.expired_at < *t.watermark))  // keep the filter off it
        t.watermark = d.expired_at;
    }

    entry_head_.clear();
    append_entry_head(&entry_head_, 0, created_ns, std::max<std::int64_t>(item.ttl_ms, 0),
                      item.category, item.metadata);
    t.batch->put_parts(Cf::entries, item.key, entry_head_, item.value);
    if (durable_) t.batch->put(Cf::access, item.key, encode_access(record_of(a, item.category)));
    t.staged.push_back({std::string(item.key), a, std::string(item.category), EventKind::set});
  }
  if (Status s = commit(t); !s.ok()) return s;
  *outcome = SetOutcome::stored;
  return Status();
}

Status Engine::set_limits(std::optional<std::uint64_t> max_entries,
                          std::optional<std::uint64_t> max_bytes, std::int64_t now_ns,
                          std::size_t* evicted) {
  const auto lock = foreground_lock();
  return apply_limits_locked(max_entries.value_or(this->max_entries()),
                             max_bytes.value_or(this->max_bytes()), true, now_ns, evicted);
}

Status Engine::reset_limits(std::int64_t now_ns, std::size_t* evicted) {
  const auto lock = foreground_lock();
  return apply_limits_locked(options_.max_entries, options_.max_bytes, false, now_ns, evicted);
}

Status Engine::apply_limits_locked(std::uint64_t max_entries, std::uint64_t max_bytes, bool admin,
                                   std::int64_t now_ns, std::size_t* evicted) {
  *evicted = 0;
  auto batch = kv_->new_batch();
  if (admin)
    batch->put(Cf::counters, kAdminLimitsKey, encode_admin_limits(max_entries, max_bytes));
  else
    batch->del(Cf::counters, kAdminLimitsKey);
  batch->put(Cf::counters, kLimitsKey, limits_record(max_entries, max_bytes));
  if (Status s = kv_->write(*batch); !s.ok()) return s;
  max_entries_.store(max_entries);
  max_bytes_.store(max_bytes);
  admin_limits_.store(admin);
  // Down to the new limits at once, as a set would: expired and invalid entries first.
  Txn t(*kv_);
  if (!over_limits(t)) return Status();
  apply_pending_locked();
  const Keep none{};
  evict(t, Pass::expired, now_ns, none);
  if (over_limits(t) && options_.policy == EvictionPolicy::s3fifo)
    s3_evict(t, none);
  else if (over_limits(t) && options_.policy != EvictionPolicy::ttl)
    evict(t, Pass::policy, now_ns, none);
  *evicted = t.removed.size();
  return commit(t);
}

Status Engine::remove_locked(std::string_view key, bool* removed) {
  *removed = false;
  auto it = index_.find(key);
  if (it == index_.end()) return Status();
  take_pending(key);
  Txn t(*kv_);
  remove_in_txn(t, it->first, it->second);
  if (Status s = commit(t); !s.ok()) return s;
  *removed = true;
  return Status();
}

Status Engine::remove(std::string_view key, bool* removed) {
  const auto lock = foreground_lock();
  return remove_locked(key, removed);
}

Status Engine::drop_corrupt(std::string_view key) {
  const auto lock = foreground_lock();
  if (auto it = index_.find(key); it != index_.end()) {
    take_pending(key);
    Txn t(*kv_);
    remove_in_txn(t, it->first, it->second);
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
  for (std::size_t i = 0; i < keys.size(); i += kRemovePage) {
    const auto lock = page_lock();
    Txn t(*kv_);
    for (std::size_t j = i; j < std::min(keys.size(), i + kRemovePage); ++j) {
      auto it = index_.find(keys[j]);
      if (it == index_.end() || t.removes(keys[j])) continue;
      take_pending(keys[j]);
      remove_in_txn(t, it->first, it->second);
    }
    const std::size_t n = t.removed.size();
    if (Status s = commit(t); !s.ok()) return s;
    *removed += n;
  }
  return Status();
}

// Blind writes only: the index knows whether the key is stored and already invalid (expiry_t 0),
// and the entry's flag is set by an or-byte merge, not by reading and rewriting the entry.
void Engine::invalidate_locked(Txn& t, std::string_view key) {
  auto it = index_.find(key);
  if (it == index_.end()) return;
  if (it->second.has_expiry && it->second.expiry_t == 0) return;  // already invalid
  Node a = it->second;
  a.has_expiry = true;
  a.expiry_t = 0;
  if (durable_) t.batch->put(Cf::access, key, encode_access(record_of(a, *it->second.category)));
  t.batch->or_byte(Cf::entries, key, kEntryFlagsOffset, kFlagInvalid);
  t.staged.push_back({std::string(key), {}, {}, EventKind::invalidate});  // commit: expiry only
  ++t.invalidations;
}

Status Engine::invalidate_keys(const std::vector<std::string>& keys, std::size_t* marked) {
  *marked = 0;
  for (std::size_t i = 0; i < keys.size(); i += kWritePage) {
    const auto lock = page_lock();
    apply_pending_locked();  // the access records written below carry every hit so far
    Txn t(*kv_);
    absl::flat_hash_set<std::string_view, Hash, std::equal_to<>> seen;
    for (std::size_t j = i; j < std::min(keys.size(), i + kWritePage); ++j) {
      if (!seen.insert(keys[j]).second) continue;
      invalidate_locked(t, keys[j]);
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
  batch->delete_range(Cf::counters, kGhostPrefix, kGhostEnd);  // clear forgets S3-FIFO's ghosts
  batch->put(Cf::counters, kTotalsKey, totals(0, 0, tick_.load()));
  if (Status s = kv_->write(*batch); !s.ok()) return s;
  *removed = entries_.load();
  if (sink_ != nullptr && sink_->wants_events())
    for (const auto& [key, node] : index_) sink_->on_event(EventKind::remove, key);
  clear_index();
  return Status();
}

Status Engine::cleanup(std::int64_t now_ns, std::size_t* removed) {
  *removed = 0;
  const auto now = static_cast<std::uint64_t>(std::max<std::int64_t>(now_ns, 0));
  // A page at a time, releasing the mutex between pages: other calls wait for one page at most.
  for (;;) {
    const auto lock = page_lock();
    Txn t(*kv_);
    for (const auto& [when, key] : expiry_) {
      if (when > now || t.removed.size() >= kRemovePage) break;
      auto it = index_.find(key);
      take_pending(key);
      remove_in_txn(t, it->first, it->second, when != 0 ? EventKind::expire : EventKind::remove);
      if (when != 0) ++t.expirations;
    }
    const bool last = t.removed.size() < kRemovePage;
    if (last) t.watermark = std::max(now_ns, watermark_->load());
    const std::size_t n = t.removed.size();
    if (Status s = commit(t); !s.ok()) return s;
    *removed += n;
    if (last) return Status();
  }
}

}  // namespace larder::engine
