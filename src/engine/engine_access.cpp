// The engine: the hit buffer (recorded hits, applied to the index in batches) and access records.
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
    if (lock.owns_lock() && !loading_) apply_locked(take_shard(shard));
    return;
  }
  std::unique_lock lock(mu_, std::try_to_lock);
  if (!lock.owns_lock()) {
    if (pending < 16 * kAccessFlushBatch) return;
    lock.lock();
  }
  if (loading_) return;  // hits wait for the index (apply_pending_locked)
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
  // While the index loads, a hit's key may not be in it yet: the hits wait for the load's end
  // (their ticks place them then as if applied at once).
  if (loading_ || pending_size_.load(std::memory_order_relaxed) == 0) return;
  apply_locked(drain_pending());
}

void Engine::apply_locked(const PendingMap& pending) {
  // The policy sees each hit before the node counts it (a node that moves is taken out of the
  // order first) and puts the moved nodes back at the batch's end.
  for (const auto& [key, p] : pending) {
    auto it = index_.find(key);
    if (it == index_.end()) continue;  // removed since the hit
    policy_->hit(*it, p.count, p.tick);
    Node& n = it->second;
    n.access_count += p.count;
    n.last_tick = std::max(n.last_tick, p.tick);
    n.last_access_ns = std::max(n.last_access_ns, p.ns);
    mark_dirty(it->first);
  }
  policy_->end_hits();
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

}  // namespace larder::engine
