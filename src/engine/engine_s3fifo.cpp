// S3-FIFO (EvictionPolicy::s3fifo) over the engine's index: the rules of docs/ARCHITECTURE.md
// ("S3-FIFO"), as libCacheSim implements them with its defaults.
//
// S and M are the two halves of order_ (keys (queue, queue tick, index slot)); G is ghost_ in
// ghost_order_'s tick order, persisted as kGhostPrefix records in the counters family. For a
// limit C in a unit: S's share is floor(C / 10), M's share C - floor(C / 10), G's capacity
// floor(0.9 C). Eviction plans its removals and G's changes in the transaction; moves from S to
// M and reinsertions in M change the index at once (they are policy state, as a hit is) and are
// written with the transaction's batch (or, when it fails, later, as dirty nodes).
#include <algorithm>

#include <fmt/format.h>

#include "engine/engine.hpp"
#include "engine/txn.hpp"

namespace larder::engine {

using kv::Cf;
using kv::Status;

namespace {

constexpr auto kSmall = static_cast<std::uint8_t>(S3Queue::small);
constexpr auto kMain = static_cast<std::uint8_t>(S3Queue::main);

std::uint64_t small_share(std::uint64_t limit) {
  return limit / 10;
}
std::uint64_t main_share(std::uint64_t limit) {
  return limit - small_share(limit);
}
// floor(0.9 C) = C - ceil(C / 10)
std::uint64_t ghost_capacity(std::uint64_t limit) {
  return limit - (limit / 10 + (limit % 10 != 0 ? 1 : 0));
}

std::string ghost_key(std::string_view key) {
  std::string k(kGhostPrefix);
  k.append(key);
  return k;
}

std::int64_t signed_size(std::uint64_t size) {
  return static_cast<std::int64_t>(size);
}

}  // namespace

void Engine::s3_count(const Node& n, int sign) {
  std::uint64_t& entries = n.queue == kSmall ? s_entries_ : m_entries_;
  std::uint64_t& bytes = n.queue == kSmall ? s_bytes_ : m_bytes_;
  if (sign > 0) {
    entries += 1;
    bytes += n.size;
  } else {
    entries -= 1;
    bytes -= n.size;
  }
}

bool Engine::s3_main_over(const Txn& t) const {
  const std::int64_t e = signed_size(m_entries_) + t.d_m_entries;
  const std::int64_t b = signed_size(m_bytes_) + t.d_m_bytes;
  return (max_entries() != 0 && e > signed_size(main_share(max_entries()))) ||
         (max_bytes() != 0 && b > signed_size(main_share(max_bytes())));
}

S3Queue Engine::s3_admit(Txn& t, std::string_view key, std::uint64_t size) {
  S3Queue queue = S3Queue::small;
  if (ghost_.contains(key)) {
    t.ghost_readmits.emplace_back(key);
    t.batch->del(Cf::counters, ghost_key(key));
    queue = S3Queue::main;
  }
  // An entry S cannot hold goes to M (libCacheSim refuses it; larder stores it).
  if (max_bytes() != 0 && size >= small_share(max_bytes())) queue = S3Queue::main;
  return queue;
}

Engine::Order::iterator Engine::s3_head(Txn& t, S3Queue q, const Keep& keep) {
  const auto qi = static_cast<std::size_t>(q);
  auto it = t.cursor[qi] ? order_.upper_bound(*t.cursor[qi])
                         : order_.lower_bound(OrderKey{static_cast<std::uint64_t>(q), 0, nullptr});
  for (; it != order_.end() && std::get<0>(*it) == static_cast<std::uint64_t>(q); ++it) {
    const std::string_view key = std::get<2>(*it)->first;
    if (!keep(key) && !t.removes(key)) return it;
    t.cursor[qi] = *it;  // skipped for the rest of this transaction
  }
  return order_.end();
}

void Engine::s3_move(Txn& t, Index::iterator it, std::uint8_t freq) {
  Node& n = it->second;
  const std::string_view key = it->first;
  order_.erase(order_of(*it));
  s3_count(n, -1);
  n.queue = kMain;
  n.freq = freq;
  n.queue_tick = tick_.fetch_add(1) + 1;
  s3_count(n, +1);
  order_.insert(order_of(*it));
  t.moved.push_back(key);
  mark_dirty(key);
}

void Engine::s3_plan_ghost(Txn& t, std::string_view key, std::uint64_t size) {
  if (!t.ghost_planned) {
    t.ghost_planned = true;
    t.g_entries = ghost_.size();
    t.g_bytes = ghost_bytes_;
    for (const std::string& readmit : t.ghost_readmits) {
      t.g_entries -= 1;
      t.g_bytes -= ghost_.find(readmit)->second.size;
    }
    t.ghost_next = ghost_order_.begin();
  }
  const std::uint64_t max_e = max_entries(), max_b = max_bytes();
  const auto fits = [&] {
    return (max_e == 0 || t.g_entries + 1 <= ghost_capacity(max_e)) &&
           (max_b == 0 || t.g_bytes + size <= ghost_capacity(max_b));
  };
  while (!fits()) {
    // Drop G's head: the oldest existing ghost, then the oldest one this transaction added.
    while (t.ghost_next != ghost_order_.end() &&
           std::find(t.ghost_readmits.begin(), t.ghost_readmits.end(), t.ghost_next->second) !=
               t.ghost_readmits.end())
      ++t.ghost_next;
    if (t.ghost_next != ghost_order_.end()) {
      const std::string_view head = t.ghost_next->second;
      t.g_entries -= 1;
      t.g_bytes -= ghost_.find(head)->second.size;
      t.ghost_drops.emplace_back(head);
      ++t.ghost_next;
    } else if (t.ghost_adds_dropped < t.ghost_adds.size()) {
      t.g_entries -= 1;
      t.g_bytes -= t.ghost_adds[t.ghost_adds_dropped++].second.size;
    } else {
      return;  // larger than G's capacity: not remembered
    }
  }
  t.ghost_adds.push_back({std::string(key), GhostRecord{tick_.fetch_add(1) + 1, size}});
  t.g_entries += 1;
  t.g_bytes += size;
}

bool Engine::s3_evict_small(Txn& t, const Keep& keep) {
  bool moved = false;
  for (;;) {
    const auto head = s3_head(t, S3Queue::small, keep);
    if (head == order_.end()) return moved;  // S is empty now: the next step evicts from M
    const auto it = index_.find(std::get<2>(*head)->first);
    if (it->second.freq >= 2) {  // read again while in S: to M's tail
      s3_move(t, it, 0);
      moved = true;
      continue;
    }
    t.cursor[kSmall] = *head;
    remove_in_txn(t, it->first, it->second);
    ++t.evictions;
    s3_plan_ghost(t, it->first, it->second.size);
    return true;
  }
}

bool Engine::s3_evict_main(Txn& t, const Keep& keep) {
  for (;;) {
    const auto head = s3_head(t, S3Queue::main, keep);
    if (head == order_.end()) return false;
    const auto it = index_.find(std::get<2>(*head)->first);
    if (const std::uint8_t f = it->second.freq; f >= 1) {  // reinserted at M's tail
      s3_move(t, it, static_cast<std::uint8_t>(std::min<std::uint8_t>(f, 3) - 1));
      continue;
    }
    t.cursor[kMain] = *head;
    remove_in_txn(t, it->first, it->second);
    ++t.evictions;
    return true;
  }
}

void Engine::s3_evict(Txn& t, const Keep& keep) {
  while (over_limits(t)) {
    const bool small_empty = signed_size(s_entries_) + t.d_s_entries <= 0;
    const bool from_main = s3_main_over(t) || small_empty;
    if (from_main ? s3_evict_main(t, keep) : s3_evict_small(t, keep)) continue;
    // Only `keep` is left in the queue chosen: try the other one.
    if (from_main ? s3_evict_small(t, keep) : s3_evict_main(t, keep)) continue;
    return;
  }
}

void Engine::s3_stage(Txn& t) {
  if (!durable_) return;  // ghosts and queues live in the index only
  for (const std::string& key : t.ghost_drops) t.batch->del(Cf::counters, ghost_key(key));
  for (std::size_t i = t.ghost_adds_dropped; i < t.ghost_adds.size(); ++i)
    t.batch->put(Cf::counters, ghost_key(t.ghost_adds[i].first),
                 encode_ghost(t.ghost_adds[i].second));
  if (t.moved.empty()) return;
  std::sort(t.moved.begin(), t.moved.end());
  t.moved.erase(std::unique(t.moved.begin(), t.moved.end()), t.moved.end());
  for (const std::string_view key : t.moved) {
    if (t.removes(key)) continue;
    const auto it = index_.find(key);
    t.batch->put(Cf::access, key, encode_access(record_of(it->second, *it->second.category)));
  }
}

void Engine::erase_ghost(std::string_view key) {
  const auto it = ghost_.find(key);
  if (it == ghost_.end()) return;
  ghost_order_.erase({it->second.tick, std::string_view(it->first)});
  ghost_bytes_ -= it->second.size;
  ghost_.erase(it);
}

void Engine::s3_commit(Txn& t) {
  // Moved nodes were written with the batch: nothing of them is left to persist. (Called before
  // the removed nodes are erased, so the views in `moved` are still valid.)
  for (const std::string_view key : t.moved)
    if (!t.removes(key) && dirty_.erase(key) > 0)
      dirty_size_.fetch_sub(1, std::memory_order_relaxed);
  for (const std::string& key : t.ghost_readmits) erase_ghost(key);
  for (const std::string& key : t.ghost_drops) erase_ghost(key);
  for (std::size_t i = t.ghost_adds_dropped; i < t.ghost_adds.size(); ++i) {
    auto& [key, g] = t.ghost_adds[i];
    const auto it = ghost_.emplace(std::move(key), g).first;
    ghost_order_.emplace(g.tick, std::string_view(it->first));
    ghost_bytes_ += g.size;
  }
}

Status Engine::load_ghosts_locked() {
  ghost_.clear();
  ghost_order_.clear();
  ghost_bytes_ = 0;
  std::size_t skipped = 0;
  Status s =
      kv_->scan(Cf::counters, kGhostPrefix, kGhostEnd, [&](std::string_view k, std::string_view v) {
        const std::string_view key = k.substr(kGhostPrefix.size());
        GhostRecord g;
        // A ghost that does not decode, or of a key that is cached, is ignored
        // (verify reports it).
        if (!decode_ghost(v, &g) || index_.contains(key) || g.tick == 0) {
          ++skipped;
          return true;
        }
        const auto it = ghost_.emplace(std::string(key), g).first;
        if (!ghost_order_.emplace(g.tick, std::string_view(it->first)).second) {
          ghost_.erase(it);
          ++skipped;
          return true;
        }
        ghost_bytes_ += g.size;
        tick_ = std::max(tick_.load(), g.tick);
        return true;
      });
  if (skipped > 0)
    log_->logf(util::Level::warn, "ignored {} damaged S3-FIFO ghost records", skipped);
  return s;
}

void Engine::verify_s3fifo(const std::function<void(std::string)>& problem) {
  std::uint64_t se = 0, sb = 0, me = 0, mb = 0;
  for (const auto& [key, n] : index_) {
    (n.queue == kSmall ? se : me) += 1;
    (n.queue == kSmall ? sb : mb) += n.size;
  }
  if (se != s_entries_ || sb != s_bytes_ || me != m_entries_ || mb != m_bytes_)
    problem(fmt::format(
        "S3-FIFO queue sizes: S {} entries / {} bytes and M {} / {} counted, {} / {} and {} / {} "
        "held",
        se, sb, me, mb, s_entries_, s_bytes_, m_entries_, m_bytes_));
  std::uint64_t stored = 0, bytes = 0;
  // A store that is not durable keeps no ghost records: the queue is checked on its own.
  Status s = !durable_
                 ? Status()
                 : kv_->scan(Cf::counters, kGhostPrefix, kGhostEnd,
                             [&](std::string_view k, std::string_view v) {
                               const std::string_view key = k.substr(kGhostPrefix.size());
                               GhostRecord g;
                               ++stored;
                               const auto it = ghost_.find(key);
                               if (!decode_ghost(v, &g))
                                 problem(fmt::format("ghost '{}': undecodable record", key));
                               else if (index_.contains(key))
                                 problem(fmt::format("ghost '{}': the key is cached", key));
                               else if (it == ghost_.end() || it->second.tick != g.tick ||
                                        it->second.size != g.size)
                                 problem(fmt::format("ghost '{}': not so in the ghost queue", key));
                               return true;
                             });
  if (!s.ok()) problem(fmt::format("the ghost records cannot be read ({})", s.message));
  for (const auto& [key, g] : ghost_) {
    bytes += g.size;
    if (!durable_ && index_.contains(key))
      problem(fmt::format("ghost '{}': the key is cached", key));
  }
  if ((durable_ && stored != ghost_.size()) || ghost_order_.size() != ghost_.size() ||
      bytes != ghost_bytes_)
    problem(fmt::format("{} ghost records, {} ghosts held ({} in order, {} bytes of {} counted)",
                        stored, ghost_.size(), ghost_order_.size(), ghost_bytes_, bytes));
  // (G may be over a capacity that shrank since it was filled: the next eviction drops heads.)
}

}  // namespace larder::engine
