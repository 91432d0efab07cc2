// S3-FIFO (EvictionPolicy::s3fifo): the rules of docs/ARCHITECTURE.md ("S3-FIFO"), as
// libCacheSim implements them with its defaults.
//
// S and M are the two halves of one order (keys (queue, queue tick, index slot)); G is the ghost
// map in its tick order, persisted as kGhostPrefix records in the counters family. For a limit C
// in a unit: S's share is floor(C / 10), M's share C - floor(C / 10), G's capacity
// floor(0.9 C). Eviction plans its removals and G's changes in the policy's plan; moves from S to
// M and reinsertions in M change the order at once (they are policy state, as a hit is) and are
// written with the transaction's batch (or, when it fails, later, as dirty nodes).
#include <algorithm>
#include <array>
#include <optional>
#include <tuple>
#include <vector>

#include <absl/container/btree_set.h>
#include <fmt/format.h>

#include "engine/policy.hpp"
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

class S3FifoPolicy final : public Policy {
 public:
  using Policy::Policy;

  void link(Slot& slot, bool) override {
    order_.insert(order_of(slot));
    count(slot.second, +1);
  }
  void unlink(Slot& slot, bool) override {
    order_.erase(order_of(slot));
    count(slot.second, -1);
  }
  void loaded(Node& n) const override {
    if (n.place.queue_tick != 0) return;
    // Written under another policy: the entry joins M in its recency order, with f = 0.
    n.place.queue = kMain;
    n.place.freq = 0;
    n.place.queue_tick = std::max<std::uint64_t>(n.last_tick, 1);
  }
  Status load() override;
  bool keeps_ghosts() const override { return true; }
  void clear() override {
    order_.clear();
    s_entries_ = s_bytes_ = m_entries_ = m_bytes_ = 0;
    ghost_.clear();
    ghost_order_.clear();
    ghost_bytes_ = 0;
  }

  void hit(Slot& slot, std::uint64_t hits, std::uint64_t) override {
    add_hits(slot.second, hits);  // nothing moves
  }

  void begin() override { plan_ = Plan{}; }
  Place admit(Txn& t, std::string_view key, std::uint64_t size) override;
  void placed(Node& n, const Place& admitted, std::uint64_t tick) const override {
    n.place.queue = admitted.queue;
    n.place.queue_tick = tick;
  }
  // An overwrite keeps its queue and position, and counts as a hit.
  void rewritten(Node& n, std::uint64_t hits) const override { add_hits(n, hits); }
  void removing(const Node& n) override {
    const auto size = signed_size(n.size);
    if (n.place.queue == kSmall) {
      plan_.d_s_entries -= 1;
      plan_.d_s_bytes -= size;
    } else {
      plan_.d_m_entries -= 1;
      plan_.d_m_bytes -= size;
    }
  }
  void victims(Txn& t, const Keep& keep) override;
  void stage(Txn& t) override;
  void commit(Txn& t) override;

  bool same_place(const Node& have, const Node& want) const override {
    return have.place.queue == want.place.queue && have.place.freq == want.place.freq &&
           have.place.queue_tick == want.place.queue_tick;
  }
  void verify(const std::function<void(std::string)>& problem) override;

 private:
  // The order: (queue, queue tick, the key's index slot), smallest first: S's entries then M's,
  // each queue head first. Ticks are unique, so the slot only makes the key whole: it compares
  // as a number (no key bytes compared) and leads to the node without a lookup.
  using OrderKey = std::tuple<std::uint64_t, std::uint64_t, Slot*>;
  struct OrderLess {
    bool operator()(const OrderKey& a, const OrderKey& b) const {
      if (std::get<0>(a) != std::get<0>(b)) return std::get<0>(a) < std::get<0>(b);
      if (std::get<1>(a) != std::get<1>(b)) return std::get<1>(a) < std::get<1>(b);
      return std::less<const Slot*>{}(std::get<2>(a), std::get<2>(b));
    }
  };
  using Order = absl::btree_set<OrderKey, OrderLess>;
  using GhostOrder = absl::btree_set<std::pair<std::uint64_t, std::string_view>>;

  // A transaction's plan.
  struct Plan {
    // Deltas of S's and M's entries and bytes by the planned removals.
    std::int64_t d_s_entries = 0, d_s_bytes = 0, d_m_entries = 0, d_m_bytes = 0;
    // Per queue: the last element of its head that the plan skips (removed or kept); the next
    // head is after it.
    std::array<std::optional<OrderKey>, 2> cursor;
    std::vector<std::string_view> moved;  // index keys moved between or within queues
    // The ghost queue as planned: the keys taken out of it by this insert, the existing ghosts
    // dropped from its head, the ghosts appended (the first `ghost_adds_dropped` of them dropped
    // again) and the resulting size.
    std::vector<std::string> ghost_readmits;
    std::vector<std::string> ghost_drops;
    std::vector<std::pair<std::string, GhostRecord>> ghost_adds;
    std::size_t ghost_adds_dropped = 0;
    bool ghost_planned = false;
    std::uint64_t g_entries = 0, g_bytes = 0;
    GhostOrder::iterator ghost_next;
  };

  static OrderKey order_of(Slot& slot) {
    const Place& p = slot.second.place;
    return {p.queue, p.queue_tick, &slot};
  }
  // `hits` hits of a node: f grows, kept at most 3 (larger counts decide nothing more).
  static void add_hits(Node& n, std::uint64_t hits) {
    n.place.freq = static_cast<std::uint8_t>(std::min<std::uint64_t>(3, n.place.freq + hits));
  }
  void count(const Node& n, int sign);
  bool main_over() const;
  bool evict_small(Txn& t, const Keep& keep);
  bool evict_main(Txn& t, const Keep& keep);
  Order::iterator head(Txn& t, S3Queue q, const Keep& keep);
  void move(Slot& slot, std::uint8_t freq);
  void plan_ghost(std::string_view key, std::uint64_t size);
  void erase_ghost(std::string_view key);

  Order order_;
  // Entries and bytes in S and M.
  std::uint64_t s_entries_ = 0, s_bytes_ = 0, m_entries_ = 0, m_bytes_ = 0;
  // G: key -> (tick, size), in tick order.
  absl::node_hash_map<std::string, GhostRecord, Hash, std::equal_to<>> ghost_;
  GhostOrder ghost_order_;
  std::uint64_t ghost_bytes_ = 0;
  Plan plan_;
};

void S3FifoPolicy::count(const Node& n, int sign) {
  std::uint64_t& entries = n.place.queue == kSmall ? s_entries_ : m_entries_;
  std::uint64_t& bytes = n.place.queue == kSmall ? s_bytes_ : m_bytes_;
  if (sign > 0) {
    entries += 1;
    bytes += n.size;
  } else {
    entries -= 1;
    bytes -= n.size;
  }
}

bool S3FifoPolicy::main_over() const {
  const std::int64_t e = signed_size(m_entries_) + plan_.d_m_entries;
  const std::int64_t b = signed_size(m_bytes_) + plan_.d_m_bytes;
  const std::uint64_t max_e = host().max_entries(), max_b = host().max_bytes();
  return (max_e != 0 && e > signed_size(main_share(max_e))) ||
         (max_b != 0 && b > signed_size(main_share(max_b)));
}

Place S3FifoPolicy::admit(Txn& t, std::string_view key, std::uint64_t size) {
  Place place;
  place.queue = kSmall;
  if (ghost_.contains(key)) {
    plan_.ghost_readmits.emplace_back(key);
    t.batch->del(Cf::counters, ghost_key(key));
    place.queue = kMain;
  }
  // An entry S cannot hold goes to M (libCacheSim refuses it; larder stores it).
  const std::uint64_t max_b = host().max_bytes();
  if (max_b != 0 && size >= small_share(max_b)) place.queue = kMain;
  return place;
}

S3FifoPolicy::Order::iterator S3FifoPolicy::head(Txn& t, S3Queue q, const Keep& keep) {
  const auto qi = static_cast<std::size_t>(q);
  auto& cursor = plan_.cursor[qi];
  auto it = cursor ? order_.upper_bound(*cursor)
                   : order_.lower_bound(OrderKey{static_cast<std::uint64_t>(q), 0, nullptr});
  for (; it != order_.end() && std::get<0>(*it) == static_cast<std::uint64_t>(q); ++it) {
    const std::string_view key = std::get<2>(*it)->first;
    if (!keep(key) && !t.removes(key)) return it;
    cursor = *it;  // skipped for the rest of this transaction
  }
  return order_.end();
}

void S3FifoPolicy::move(Slot& slot, std::uint8_t freq) {
  Node& n = slot.second;
  order_.erase(order_of(slot));
  count(n, -1);
  n.place.queue = kMain;
  n.place.freq = freq;
  n.place.queue_tick = host().next_tick();
  count(n, +1);
  order_.insert(order_of(slot));
  plan_.moved.push_back(slot.first);
  host().mark_dirty(slot.first);
}

void S3FifoPolicy::plan_ghost(std::string_view key, std::uint64_t size) {
  Plan& p = plan_;
  if (!p.ghost_planned) {
    p.ghost_planned = true;
    p.g_entries = ghost_.size();
    p.g_bytes = ghost_bytes_;
    for (const std::string& readmit : p.ghost_readmits) {
      p.g_entries -= 1;
      p.g_bytes -= ghost_.find(readmit)->second.size;
    }
    p.ghost_next = ghost_order_.begin();
  }
  const std::uint64_t max_e = host().max_entries(), max_b = host().max_bytes();
  const auto fits = [&] {
    return (max_e == 0 || p.g_entries + 1 <= ghost_capacity(max_e)) &&
           (max_b == 0 || p.g_bytes + size <= ghost_capacity(max_b));
  };
  while (!fits()) {
    // Drop G's head: the oldest existing ghost, then the oldest one this transaction added.
    while (p.ghost_next != ghost_order_.end() &&
           std::find(p.ghost_readmits.begin(), p.ghost_readmits.end(), p.ghost_next->second) !=
               p.ghost_readmits.end())
      ++p.ghost_next;
    if (p.ghost_next != ghost_order_.end()) {
      const std::string_view head = p.ghost_next->second;
      p.g_entries -= 1;
      p.g_bytes -= ghost_.find(head)->second.size;
      p.ghost_drops.emplace_back(head);
      ++p.ghost_next;
    } else if (p.ghost_adds_dropped < p.ghost_adds.size()) {
      p.g_entries -= 1;
      p.g_bytes -= p.ghost_adds[p.ghost_adds_dropped++].second.size;
    } else {
      return;  // larger than G's capacity: not remembered
    }
  }
  p.ghost_adds.push_back({std::string(key), GhostRecord{host().next_tick(), size}});
  p.g_entries += 1;
  p.g_bytes += size;
}

bool S3FifoPolicy::evict_small(Txn& t, const Keep& keep) {
  bool moved = false;
  for (;;) {
    const auto it = head(t, S3Queue::small, keep);
    if (it == order_.end()) return moved;  // S is empty now: the next step evicts from M
    Slot& slot = *std::get<2>(*it);
    if (slot.second.place.freq >= 2) {  // read again while in S: to M's tail
      move(slot, 0);
      moved = true;
      continue;
    }
    plan_.cursor[kSmall] = *it;
    host().evict(t, slot);
    plan_ghost(slot.first, slot.second.size);
    return true;
  }
}

bool S3FifoPolicy::evict_main(Txn& t, const Keep& keep) {
  for (;;) {
    const auto it = head(t, S3Queue::main, keep);
    if (it == order_.end()) return false;
    Slot& slot = *std::get<2>(*it);
    if (const std::uint8_t f = slot.second.place.freq; f >= 1) {  // reinserted at M's tail
      move(slot, static_cast<std::uint8_t>(std::min<std::uint8_t>(f, 3) - 1));
      continue;
    }
    plan_.cursor[kMain] = *it;
    host().evict(t, slot);
    return true;
  }
}

void S3FifoPolicy::victims(Txn& t, const Keep& keep) {
  while (host().over_limits(t)) {
    const bool small_empty = signed_size(s_entries_) + plan_.d_s_entries <= 0;
    const bool from_main = main_over() || small_empty;
    if (from_main ? evict_main(t, keep) : evict_small(t, keep)) continue;
    // Only `keep` is left in the queue chosen: try the other one.
    if (from_main ? evict_small(t, keep) : evict_main(t, keep)) continue;
    return;
  }
}

void S3FifoPolicy::stage(Txn& t) {
  if (!host().durable()) return;  // ghosts and queues live in the index only
  Plan& p = plan_;
  for (const std::string& key : p.ghost_drops) t.batch->del(Cf::counters, ghost_key(key));
  for (std::size_t i = p.ghost_adds_dropped; i < p.ghost_adds.size(); ++i)
    t.batch->put(Cf::counters, ghost_key(p.ghost_adds[i].first),
                 encode_ghost(p.ghost_adds[i].second));
  if (p.moved.empty()) return;
  std::sort(p.moved.begin(), p.moved.end());
  p.moved.erase(std::unique(p.moved.begin(), p.moved.end()), p.moved.end());
  for (const std::string_view key : p.moved) {
    if (t.removes(key)) continue;
    const auto it = host().index().find(key);
    t.batch->put(Cf::access, key, encode_access(record_of(it->second, *it->second.category)));
  }
}

void S3FifoPolicy::erase_ghost(std::string_view key) {
  const auto it = ghost_.find(key);
  if (it == ghost_.end()) return;
  ghost_order_.erase({it->second.tick, std::string_view(it->first)});
  ghost_bytes_ -= it->second.size;
  ghost_.erase(it);
}

void S3FifoPolicy::commit(Txn& t) {
  Plan& p = plan_;
  // Moved nodes were written with the batch: nothing of them is left to persist. (Called before
  // the removed nodes are erased, so the views in `moved` are still valid.)
  for (const std::string_view key : p.moved)
    if (!t.removes(key)) host().mark_clean(key);
  for (const std::string& key : p.ghost_readmits) erase_ghost(key);
  for (const std::string& key : p.ghost_drops) erase_ghost(key);
  for (std::size_t i = p.ghost_adds_dropped; i < p.ghost_adds.size(); ++i) {
    auto& [key, g] = p.ghost_adds[i];
    const auto it = ghost_.emplace(std::move(key), g).first;
    ghost_order_.emplace(g.tick, std::string_view(it->first));
    ghost_bytes_ += g.size;
  }
}

Status S3FifoPolicy::load() {
  ghost_.clear();
  ghost_order_.clear();
  ghost_bytes_ = 0;
  std::size_t skipped = 0;
  const Index& index = host().index();
  Status s = host().store().scan(
      Cf::counters, kGhostPrefix, kGhostEnd, [&](std::string_view k, std::string_view v) {
        const std::string_view key = k.substr(kGhostPrefix.size());
        GhostRecord g;
        // A ghost that does not decode, or of a key that is cached, is ignored
        // (verify reports it).
        if (!decode_ghost(v, &g) || index.contains(key) || g.tick == 0) {
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
        host().see_tick(g.tick);
        return true;
      });
  if (skipped > 0)
    host().log().logf(util::Level::warn, "ignored {} damaged S3-FIFO ghost records", skipped);
  return s;
}

void S3FifoPolicy::verify(const std::function<void(std::string)>& problem) {
  const Index& index = host().index();
  const bool durable = host().durable();
  if (order_.size() != index.size())
    problem(fmt::format("the eviction order holds {} keys for {} in the index", order_.size(),
                        index.size()));
  std::uint64_t se = 0, sb = 0, me = 0, mb = 0;
  for (const auto& [key, n] : index) {
    (n.place.queue == kSmall ? se : me) += 1;
    (n.place.queue == kSmall ? sb : mb) += n.size;
  }
  if (se != s_entries_ || sb != s_bytes_ || me != m_entries_ || mb != m_bytes_)
    problem(fmt::format(
        "S3-FIFO queue sizes: S {} entries / {} bytes and M {} / {} counted, {} / {} and {} / {} "
        "held",
        se, sb, me, mb, s_entries_, s_bytes_, m_entries_, m_bytes_));
  std::uint64_t stored = 0, bytes = 0;
  // A store that is not durable keeps no ghost records: the queue is checked on its own.
  Status s = !durable ? Status()
                      : host().store().scan(
                            Cf::counters, kGhostPrefix, kGhostEnd,
                            [&](std::string_view k, std::string_view v) {
                              const std::string_view key = k.substr(kGhostPrefix.size());
                              GhostRecord g;
                              ++stored;
                              const auto it = ghost_.find(key);
                              if (!decode_ghost(v, &g))
                                problem(fmt::format("ghost '{}': undecodable record", key));
                              else if (index.contains(key))
                                problem(fmt::format("ghost '{}': the key is cached", key));
                              else if (it == ghost_.end() || it->second.tick != g.tick ||
                                       it->second.size != g.size)
                                problem(fmt::format("ghost '{}': not so in the ghost queue", key));
                              return true;
                            });
  if (!s.ok()) problem(fmt::format("the ghost records cannot be read ({})", s.message));
  for (const auto& [key, g] : ghost_) {
    bytes += g.size;
    if (!durable && index.contains(key)) problem(fmt::format("ghost '{}': the key is cached", key));
  }
  if ((durable && stored != ghost_.size()) || ghost_order_.size() != ghost_.size() ||
      bytes != ghost_bytes_)
    problem(fmt::format("{} ghost records, {} ghosts held ({} in order, {} bytes of {} counted)",
                        stored, ghost_.size(), ghost_order_.size(), ghost_bytes_, bytes));
  // (G may be over a capacity that shrank since it was filled: the next eviction drops heads.)
}

}  // namespace

std::unique_ptr<Policy> make_s3fifo_policy(PolicyHost& host) {
  return std::make_unique<S3FifoPolicy>(host);
}

}  // namespace larder::engine
