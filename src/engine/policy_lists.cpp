// LRU, LFU and FIFO: the order kept in lists through the index nodes (Place::prev / next). One
// list per rank (LRU and FIFO: one list, rank 0; LFU: one per access count), each in tick order
// (FIFO: insert tick; the others: last tick). So the order is (rank, tick), as an ordered set of
// those pairs would give (ticks are unique). A node goes in after the last node of its list with
// a smaller tick: a new key's (the newest tick) at the tail; a batch of hits, sorted by tick,
// with one walk back from the tail per list and then forward from the node placed before; out in
// O(1). A hit moves an LRU node to its list's tail and an LFU node to the next rank's list; it
// moves no FIFO node. A load links nodes unordered and sorts them once at its end.
#include <algorithm>
#include <atomic>
#include <utility>
#include <vector>

#include <absl/container/btree_map.h>
#include <absl/container/flat_hash_map.h>
#include <fmt/format.h>

#include "engine/policy.hpp"
#include "engine/txn.hpp"

namespace larder::engine {

namespace {

class ListPolicy final : public Policy {
 public:
  ListPolicy(PolicyHost& host, EvictionPolicy kind) : Policy(host), kind_(kind) {}

  void link(Slot& slot, bool keep_place) override {
    if (!deferred_ && !keep_place) insert(slot);
  }
  void unlink(Slot& slot, bool keep_place) override {
    if (!deferred_ && !keep_place) remove(slot);  // (while loading, no node is in a list yet)
  }
  bool keeps_place(const Node& old, Node& now) const override {
    // FIFO: an overwrite keeps its insert tick, so its place in the list: the links stay (putting
    // it back by tick would walk from the tail to it).
    if (deferred_ || rank_of(old) != rank_of(now) || tick_of(old) != tick_of(now)) return false;
    now.place.prev = old.place.prev;
    now.place.next = old.place.next;
    return true;
  }
  void begin_load() override { deferred_ = true; }
  void end_load() override;
  void clear() override {
    lists_.clear();
    size_ = 0;
  }

  bool hits_reorder() const override { return kind_ != EvictionPolicy::fifo; }
  void hit(Slot& slot, std::uint64_t hits, std::uint64_t tick) override {
    (void)hits;
    const bool moves = kind_ == EvictionPolicy::lfu ||
                       (kind_ == EvictionPolicy::lru && tick > slot.second.last_tick);
    if (!moves) return;
    remove(slot);  // before the rank changes
    moves_.push_back(&slot);
  }
  void end_hits() override;

  void victims(Txn& t, const Keep& keep) override {
    for (auto& [rank, l] : lists_)
      for (Slot* slot = l.head; slot != nullptr; slot = slot->second.place.next) {
        if (!host().over_limits(t)) return;
        if (keep(slot->first) || t.removes(slot->first)) continue;
        host().evict(t, *slot);
      }
  }

  void verify(const std::function<void(std::string)>& problem) override;
  std::uint64_t steps() const override { return steps_.load(std::memory_order_relaxed); }

 private:
  struct List {
    Slot* head = nullptr;
    Slot* tail = nullptr;
  };
  std::uint64_t rank_of(const Node& n) const {
    return kind_ == EvictionPolicy::lfu ? n.access_count : 0;
  }
  std::uint64_t tick_of(const Node& n) const {
    return kind_ == EvictionPolicy::fifo ? n.insert_tick : n.last_tick;
  }
  // `hint`: null (walk from the tail), or a node of the same list with a smaller tick (walk
  // forward from it): inserting a batch sorted by tick costs one walk back, then short steps on.
  void insert(Slot& slot, Slot* hint = nullptr);
  void remove(Slot& slot);

  const EvictionPolicy kind_;
  absl::btree_map<std::uint64_t, List> lists_;  // rank -> its list; no empty list
  std::size_t size_ = 0;                        // nodes in lists_
  std::atomic<std::uint64_t> steps_{0};         // see steps(); written under the engine mutex
  bool deferred_ = false;                       // loading: link() leaves the lists to end_load()
  std::vector<Slot*> moves_;                    // a batch of hits: nodes taken out to move
};

void ListPolicy::insert(Slot& slot, Slot* hint) {
  Node& n = slot.second;
  List& l = lists_[rank_of(n)];
  const std::uint64_t tick = tick_of(n);
  std::uint64_t steps = 0;
  Slot* after = nullptr;
  if (hint != nullptr) {  // the last node with a smaller tick, from the hint on
    after = hint;
    for (Slot* next = after->second.place.next; next != nullptr && tick_of(next->second) < tick;
         next = next->second.place.next, ++steps)
      after = next;
  } else {  // from the tail back
    after = l.tail;
    for (; after != nullptr && tick_of(after->second) > tick; ++steps)
      after = after->second.place.prev;
  }
  if (steps > 0) steps_.fetch_add(steps, std::memory_order_relaxed);
  n.place.prev = after;
  n.place.next = after != nullptr ? after->second.place.next : l.head;
  (n.place.next != nullptr ? n.place.next->second.place.prev : l.tail) = &slot;
  (after != nullptr ? after->second.place.next : l.head) = &slot;
  ++size_;
}

void ListPolicy::remove(Slot& slot) {
  Node& n = slot.second;
  auto it = lists_.find(rank_of(n));
  List& l = it->second;
  (n.place.prev != nullptr ? n.place.prev->second.place.next : l.head) = n.place.next;
  (n.place.next != nullptr ? n.place.next->second.place.prev : l.tail) = n.place.prev;
  n.place.prev = n.place.next = nullptr;
  if (l.head == nullptr) lists_.erase(it);
  --size_;
}

void ListPolicy::end_hits() {
  // The moved nodes were taken out by hit(); each goes back in tick order, so that each lands at
  // (or next to) its list's tail. Each move after the first of its list walks on from the one
  // before it (a smaller tick, and still in that list). From the tail every time, a batch of
  // older hits than the list's newest nodes (a reader's shard, applied after other shards) walked
  // back past those nodes once per hit.
  if (moves_.empty()) return;
  std::sort(moves_.begin(), moves_.end(),
            [](const Slot* a, const Slot* b) { return a->second.last_tick < b->second.last_tick; });
  absl::flat_hash_map<std::uint64_t, Slot*> last;  // rank -> the move inserted last
  for (Slot* slot : moves_) {
    Slot*& hint = last[rank_of(slot->second)];
    insert(*slot, hint);
    hint = slot;
  }
  moves_.clear();
}

void ListPolicy::end_load() {
  deferred_ = false;
  std::vector<Slot*> slots;
  Index& index = host().index();
  slots.reserve(index.size());
  for (Slot& slot : index) slots.push_back(&slot);
  std::sort(slots.begin(), slots.end(), [this](const Slot* a, const Slot* b) {
    return std::pair(rank_of(a->second), tick_of(a->second)) <
           std::pair(rank_of(b->second), tick_of(b->second));
  });
  lists_.clear();
  size_ = 0;
  List* l = nullptr;
  std::uint64_t rank = 0;
  for (Slot* slot : slots) {  // each at its list's tail: no walk
    if (l == nullptr || rank_of(slot->second) != rank) {
      rank = rank_of(slot->second);
      l = &lists_.emplace_hint(lists_.end(), rank, List{})->second;
    }
    slot->second.place.prev = l->tail;
    slot->second.place.next = nullptr;
    (l->tail != nullptr ? l->tail->second.place.next : l->head) = slot;
    l->tail = slot;
    ++size_;
  }
}

void ListPolicy::verify(const std::function<void(std::string)>& problem) {
  const std::size_t indexed = host().index().size();
  std::size_t listed = 0;
  bool sorted = true, ranked = true;
  for (const auto& [rank, l] : lists_) {
    std::uint64_t last = 0;
    ranked = ranked && l.head != nullptr;  // no empty list is kept
    for (const Slot* s = l.head; s != nullptr && listed <= indexed; s = s->second.place.next) {
      ++listed;
      sorted = sorted && tick_of(s->second) >= last;
      ranked = ranked && rank_of(s->second) == rank;
      last = tick_of(s->second);
    }
  }
  if (listed != indexed || size_ != indexed)
    problem(fmt::format("the eviction lists hold {} keys ({} counted) for {} in the index", listed,
                        size_, indexed));
  if (!sorted) problem("an eviction list is not in tick order");
  if (!ranked) problem("an eviction list holds a key of another access count, or none");
}

// TTL-only: no eviction order. Only expired and invalid entries go (the engine's expired pass);
// a store full of live entries refuses sets.
class TtlPolicy final : public Policy {
 public:
  using Policy::Policy;
  void link(Slot&, bool) override {}
  void unlink(Slot&, bool) override {}
  void clear() override {}
  void hit(Slot&, std::uint64_t, std::uint64_t) override {}
  void victims(Txn&, const Keep&) override {}
  void verify(const std::function<void(std::string)>&) override {}
};

}  // namespace

std::unique_ptr<Policy> make_s3fifo_policy(PolicyHost& host);  // policy_s3fifo.cpp

std::unique_ptr<Policy> make_policy(EvictionPolicy policy, PolicyHost& host) {
  switch (policy) {
    case EvictionPolicy::lru:
    case EvictionPolicy::lfu:
    case EvictionPolicy::fifo:
      return std::make_unique<ListPolicy>(host, policy);
    case EvictionPolicy::s3fifo:
      return make_s3fifo_policy(host);
    case EvictionPolicy::ttl:
      break;
  }
  return std::make_unique<TtlPolicy>(host);
}

}  // namespace larder::engine
