// The engine's in-memory index (private to src/engine): one node per stored key, holding the
// key's access record in memory, and the place the key's eviction policy gives it (Place, written
// only by the policy classes of policy.hpp).
//
// Thread-safety: none of its own; the engine uses it under the engine mutex.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <iterator>
#include <limits>
#include <string>
#include <string_view>
#include <type_traits>
#include <utility>

#include <absl/container/node_hash_map.h>

#include "engine/records.hpp"
#include "util/hash.hpp"

namespace larder::engine {

struct Node;
// A key's slot in the index: the key and its node. node_hash_map slots do not move, so
// policies link slots by pointer.
using Slot = std::pair<const std::string, Node>;

// A node's place in its eviction policy's order. Only the policy classes (policy.hpp) read or
// write it. The S3-FIFO part is persisted in the access record (kept under every policy, so
// that switching back to S3-FIFO finds it); the list links are the list policies' own.
struct Place {
  Slot* prev = nullptr;  // lists (LRU, LFU, FIFO): the neighbours in the node's list
  Slot* next = nullptr;
  std::uint64_t queue_tick = 0;  // S3-FIFO: position in its queue, as in AccessRecord
  std::uint8_t queue = 0;        // S3-FIFO: S3Queue
  std::uint8_t freq = 0;         // S3-FIFO: frequency 0..3
};

// A key's index node: its access record in memory (the category interned by the engine).
struct Node {
  std::int64_t last_access_ns = 0;
  std::uint64_t last_tick = 0, access_count = 0, insert_tick = 0, size = 0;
  std::uint64_t expiry_t = 0, stale_t = 0;  // as in AccessRecord
  const std::string* category = nullptr;
  bool has_expiry = false;
  Place place;
};

using Hash = util::StringHash;

// The index: keys to nodes, in kShards node_hash_maps chosen by the top bits of the key's hash
// (each map places keys by the low ones). A map rehashes all its keys when it grows, reading
// every node; with one map that paused the engine for 160 ms at 917k keys (a set waited that
// long), with 64 each growth touches a 64th of the keys. Slots never move (node_hash_map), so
// policies link them by pointer. The subset of a map's interface the engine uses.
class Index {
 public:
  using Map = absl::node_hash_map<std::string, Node, Hash, std::equal_to<>>;
  static_assert(std::is_same_v<Map::value_type, Slot>);
  static constexpr int kShardBits = 6;
  static constexpr std::size_t kShards = std::size_t{1} << kShardBits;

  template <class Owner, class Inner>
  class Iter {
   public:
    using value_type = Slot;
    using reference = std::conditional_t<std::is_const_v<Owner>, const Slot&, Slot&>;
    using pointer = std::conditional_t<std::is_const_v<Owner>, const Slot*, Slot*>;
    using difference_type = std::ptrdiff_t;
    using iterator_category = std::forward_iterator_tag;

    Iter() = default;
    Iter(Owner* owner, std::size_t shard, Inner it) : owner_(owner), shard_(shard), it_(it) {
      skip_empty();
    }
    reference operator*() const { return *it_; }
    pointer operator->() const { return &*it_; }
    Iter& operator++() {
      ++it_;
      skip_empty();
      return *this;
    }
    bool operator==(const Iter& o) const {
      return shard_ == o.shard_ && (shard_ == kShards || it_ == o.it_);
    }

   private:
    friend class Index;
    // Moves past the ends of shards to the next slot, or to end() (shard_ == kShards).
    void skip_empty() {
      while (shard_ < kShards && it_ == owner_->maps_[shard_].end())
        if (++shard_ < kShards) it_ = owner_->maps_[shard_].begin();
    }
    Owner* owner_ = nullptr;
    std::size_t shard_ = kShards;
    Inner it_{};
  };
  using iterator = Iter<Index, Map::iterator>;
  using const_iterator = Iter<const Index, Map::const_iterator>;

  iterator begin() { return {this, 0, maps_[0].begin()}; }
  iterator end() { return {this, kShards, {}}; }
  const_iterator begin() const { return {this, 0, maps_[0].begin()}; }
  const_iterator end() const { return {this, kShards, {}}; }

  iterator find(std::string_view key) {
    const std::size_t h = Hash{}(key);
    Map& m = maps_[shard_of(h)];
    const auto it = m.find(key, h);
    return it == m.end() ? end() : iterator(this, shard_of(h), it);
  }
  const_iterator find(std::string_view key) const {
    const std::size_t h = Hash{}(key);
    const Map& m = maps_[shard_of(h)];
    const auto it = m.find(key, h);
    return it == m.end() ? end() : const_iterator(this, shard_of(h), it);
  }
  bool contains(std::string_view key) const { return find(key) != end(); }
  std::pair<iterator, bool> try_emplace(std::string_view key) {
    const std::size_t shard = shard_of(Hash{}(key));
    auto [it, inserted] = maps_[shard].try_emplace(key);
    return {iterator(this, shard, it), inserted};
  }
  std::pair<iterator, bool> emplace(std::string key, const Node& node) {
    const std::size_t shard = shard_of(Hash{}(key));
    auto [it, inserted] = maps_[shard].emplace(std::move(key), node);
    return {iterator(this, shard, it), inserted};
  }
  void erase(iterator it) { maps_[it.shard_].erase(it.it_); }
  std::size_t size() const {
    std::size_t n = 0;
    for (const Map& m : maps_) n += m.size();
    return n;
  }
  void clear() {
    for (Map& m : maps_) m.clear();
  }

 private:
  static std::size_t shard_of(std::size_t hash) {
    return hash >> (std::numeric_limits<std::size_t>::digits - kShardBits);
  }
  std::array<Map, kShards> maps_;
};

// A node's access record, with `category` (the node's category pointer is not copied).
AccessRecord record_of(const Node& n, std::string_view category);
// A node with the record's fields (no category: the engine interns it).
Node node_of(const AccessRecord& a);

}  // namespace larder::engine
