// The engine: construction, locking and the in-memory index (its lists and orders).
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

// What the policy sees of the engine: narrow, so that a policy's code cannot reach the engine's
// other state. Every call is made under the engine mutex.
struct Engine::PolicyHostImpl final : PolicyHost {
  explicit PolicyHostImpl(Engine& e) : e(e) {}
  bool over_limits(const Txn& t) const override { return e.over_limits(t); }
  void evict(Txn& t, Slot& victim) override {
    e.remove_in_txn(t, victim.first, victim.second, EventKind::evict);
    ++t.evictions;
  }
  std::uint64_t next_tick() override { return e.tick_.fetch_add(1) + 1; }
  void see_tick(std::uint64_t tick) override { e.tick_ = std::max(e.tick_.load(), tick); }
  void mark_dirty(std::string_view key) override { e.mark_dirty(key); }
  void mark_clean(std::string_view key) override {
    if (e.dirty_.erase(key) > 0) e.dirty_size_.fetch_sub(1, std::memory_order_relaxed);
  }
  std::uint64_t max_entries() const override { return e.max_entries(); }
  std::uint64_t max_bytes() const override { return e.max_bytes(); }
  Index& index() override { return e.index_; }
  kv::Kv& store() override { return *e.kv_; }
  bool durable() const override { return e.durable_; }
  const util::Logger& log() const override { return *e.log_; }
  Engine& e;
};

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
  host_ = std::make_unique<PolicyHostImpl>(*this);
  policy_ = make_policy(options_.policy, *host_);
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

void Engine::wait_loaded(std::unique_lock<util::AdaptiveMutex>& lock) {
  if (!loading_) return;
  load_waiters_.fetch_add(1);
  loaded_cv_.wait(lock, [this] { return !loading_; });
  load_waiters_.fetch_sub(1);
}

std::unique_lock<util::AdaptiveMutex> Engine::foreground_lock() {
  waiting_.fetch_add(1, std::memory_order_relaxed);
  std::unique_lock lock(mu_);
  waiting_.fetch_sub(1, std::memory_order_relaxed);
  wait_loaded(lock);
  return lock;
}

namespace {
// The engine mutex is not fair: a loop that unlocks and locks again usually wins against a
// thread that is waiting. Let waiting foreground calls go first (bounded, so a stream of them
// cannot starve the loop).
void let_waiting_go(const std::atomic<int>& waiting) {
  const auto until = std::chrono::steady_clock::now() + std::chrono::microseconds(250);
  while (waiting.load(std::memory_order_relaxed) > 0 && std::chrono::steady_clock::now() < until)
    std::this_thread::yield();
}
}  // namespace

void Engine::yield_to_waiting(std::unique_lock<util::AdaptiveMutex>& lock,
                              const std::function<void()>& meanwhile) {
  lock.unlock();
  if (meanwhile) meanwhile();
  let_waiting_go(waiting_);
  lock.lock();
}

std::unique_lock<util::AdaptiveMutex> Engine::page_lock() {
  let_waiting_go(waiting_);
  std::unique_lock lock(mu_);
  wait_loaded(lock);
  return lock;
}

std::unique_lock<util::AdaptiveMutex> Engine::write_lock(std::span<const SetItem> items,
                                                         bool adds) {
  waiting_.fetch_add(1, std::memory_order_relaxed);
  std::unique_lock lock(mu_);
  waiting_.fetch_sub(1, std::memory_order_relaxed);
  if (!loading_) return lock;
  // No eviction can be needed (the lists are built at the load's end, and S3-FIFO's queues and
  // ghosts after it): within the limits even if every key is new and nothing is replaced.
  std::uint64_t bytes = 0;
  for (const SetItem& item : items) bytes += item.value.size();
  const std::uint64_t entries = adds ? items.size() : 0;
  const bool within = (max_entries() == 0 || entries_.load() + entries <= max_entries()) &&
                      (max_bytes() == 0 || bytes_.load() + bytes <= max_bytes());
  if (within && options_.policy != EvictionPolicy::s3fifo &&
      std::all_of(items.begin(), items.end(),
                  [this](const SetItem& item) { return load_key_locked(item.key); }))
    return lock;
  wait_loaded(lock);
  return lock;
}

// ---------------------------------------------------------------- the index

std::uint64_t Engine::list_steps() const {
  return policy_->steps();
}

const std::string* Engine::intern(std::string_view category) {
  auto it = cats_.find(category);
  if (it == cats_.end()) it = cats_.emplace(std::string(category), 0).first;
  return &it->first;
}

void Engine::link(Index::iterator it, bool count, bool keep_place) {
  const Node& n = it->second;
  policy_->link(*it, keep_place);
  if (n.has_expiry) expiry_.emplace(n.expiry_t, it.id());
  ++cats_.find(*n.category)->second;
  if (!count) return;
  entries_.fetch_add(1, std::memory_order_relaxed);
  bytes_.fetch_add(n.size, std::memory_order_relaxed);
}

void Engine::unlink(Index::iterator it, bool keep_place) {
  const Node& n = it->second;
  policy_->unlink(*it, keep_place);
  if (n.has_expiry) expiry_.erase({n.expiry_t, it.id()});
  auto cat = cats_.find(*n.category);
  if (--cat->second == 0) cats_.erase(cat);  // no other node points at it
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
    keep_place = policy_->keeps_place(it->second, node);
    unlink(it, keep_place);
  }
  node.category = intern(category);
  it->second = node;
  link(it, /*count=*/true, keep_place);
}

void Engine::clear_index() {
  policy_->clear();
  expiry_.clear();
  dirty_.clear();
  dirty_size_ = 0;
  index_.clear();
  cats_.clear();
  entries_ = 0;
  bytes_ = 0;
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
}
}  // namespace

AccessRecord record_of(const Node& n, std::string_view category) {
  AccessRecord a;
  copy_access_fields(n, a);
  a.queue = n.place.queue;
  a.freq = n.place.freq;
  a.queue_tick = n.place.queue_tick;
  a.category = std::string(category);
  return a;
}

Node node_of(const AccessRecord& a) {
  Node n;
  copy_access_fields(a, n);
  n.place.queue = a.queue;
  n.place.freq = a.freq;
  n.place.queue_tick = a.queue_tick;
  return n;
}

Node Engine::load_node(const AccessRecord& a) const {
  Node n = node_of(a);
  policy_->loaded(n);
  return n;
}

}  // namespace larder::engine
