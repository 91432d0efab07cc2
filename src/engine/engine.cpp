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

}  // namespace larder::engine
