// The engine's in-memory index (private to src/engine): one node per stored key, holding the
// key's access record in memory, and the place the key's eviction policy gives it (Place, written
// only by the policy classes of policy.hpp).
//
// Thread-safety: none of its own; the engine uses it under the engine mutex.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <iterator>
#include <limits>
#include <memory>
#include <new>
#include <string>
#include <string_view>
#include <tuple>
#include <type_traits>
#include <utility>
#include <vector>

#include <absl/container/flat_hash_set.h>

#include "engine/records.hpp"
#include "util/hash.hpp"

namespace larder::engine {

// A key as the index holds it, in 16 bytes: up to 12 bytes inline, a longer one in one
// allocation of its exact size (a std::string took 32 bytes, plus its capacity's rounding).
// Read through its string_view.
class IndexKey {
 public:
  static constexpr std::size_t kInline = 12;
  explicit IndexKey(std::string_view key) : size_(static_cast<std::uint32_t>(key.size())) {
    if (key.size() > std::numeric_limits<std::uint32_t>::max()) throw std::bad_alloc();
    if (key.size() <= kInline) {
      if (!key.empty()) std::memcpy(bytes_, key.data(), key.size());
      return;
    }
    char* heap = new char[key.size()];
    std::memcpy(heap, key.data(), key.size());
    std::memcpy(bytes_, &heap, sizeof heap);
  }
  ~IndexKey() {
    if (size_ > kInline) delete[] heap();
  }
  IndexKey(const IndexKey&) = delete;
  IndexKey& operator=(const IndexKey&) = delete;

  std::string_view view() const { return {size_ > kInline ? heap() : bytes_, size_}; }
  operator std::string_view() const { return view(); }  // NOLINT: read as a view everywhere
  std::size_t size() const { return size_; }
  friend bool operator==(const IndexKey& a, std::string_view b) { return a.view() == b; }

 private:
  char* heap() const {
    char* p = nullptr;
    std::memcpy(&p, bytes_, sizeof p);
    return p;
  }
  std::uint32_t size_;
  char bytes_[kInline];  // the key, or (longer keys) the pointer to it
};
static_assert(sizeof(IndexKey) == 16);

struct Node;
// A key's slot in the index: the key and its node. Slots do not move (Index), so policies link
// slots by pointer.
using Slot = std::pair<const IndexKey, Node>;

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

// The index: keys to nodes. The slots live in a slab of fixed-size chunks and are named by 32-bit
// ids; kShards flat_hash_sets of ids, chosen by the top bits of the key's hash, find them by key.
//  - Slots never move (a chunk is never reallocated), so policies link them by pointer.
//  - Per key it costs the slot itself (no allocator header, no per-node allocation: loading 1M
//    keys made 1M mallocs with node_hash_map) and ~10 bytes of table (4-byte ids, where
//    node_hash_map kept 8-byte pointers).
//  - A set rehashes its ids when it grows, hashing each key again; with 64 sets each growth
//    touches a 64th of the keys (one map paused the engine for 160 ms at 917k keys).
//  - Freed slots are reused by the next insert; the chunks are released by clear() and when the
//    index becomes empty, so the slab is bounded by the most keys held at once.
// The subset of a map's interface the engine uses.
class Index {
 public:
  using Id = std::uint32_t;
  static constexpr int kShardBits = 6;
  static constexpr std::size_t kShards = std::size_t{1} << kShardBits;
  static constexpr int kChunkBits = 9;  // 512 slots (68 KiB) per chunk
  static constexpr std::size_t kChunkSlots = std::size_t{1} << kChunkBits;

 private:
  // Hash and equality of ids by their slots' keys, and of keys (heterogeneous lookup).
  struct KeyHash {
    using is_transparent = void;
    const Index* index = nullptr;
    std::size_t operator()(Id id) const { return Hash{}(index->slot(id).first.view()); }
    std::size_t operator()(std::string_view key) const { return Hash{}(key); }
  };
  struct KeyEq {
    using is_transparent = void;
    const Index* index = nullptr;
    bool operator()(Id a, Id b) const {
      return a == b || index->slot(a).first.view() == index->slot(b).first.view();
    }
    bool operator()(Id a, std::string_view b) const { return index->slot(a).first == b; }
    bool operator()(std::string_view a, Id b) const { return a == index->slot(b).first; }
  };
  using Set = absl::flat_hash_set<Id, KeyHash, KeyEq>;

 public:
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
    reference operator*() const { return owner_->slot(*it_); }
    pointer operator->() const { return &owner_->slot(*it_); }
    Iter& operator++() {
      ++it_;
      skip_empty();
      return *this;
    }
    bool operator==(const Iter& o) const {
      return shard_ == o.shard_ && (shard_ == kShards || it_ == o.it_);
    }
    // The slot's id (Index::slot(id) is the slot), valid until the slot is erased.
    Id id() const { return *it_; }

   private:
    friend class Index;
    // Moves past the ends of shards to the next slot, or to end() (shard_ == kShards).
    void skip_empty() {
      while (shard_ < kShards && it_ == owner_->sets_[shard_].end())
        if (++shard_ < kShards) it_ = owner_->sets_[shard_].begin();
    }
    Owner* owner_ = nullptr;
    std::size_t shard_ = kShards;
    Inner it_{};
  };
  using iterator = Iter<Index, Set::iterator>;
  using const_iterator = Iter<const Index, Set::const_iterator>;

  Index() {
    sets_.reserve(kShards);
    for (std::size_t i = 0; i < kShards; ++i) sets_.emplace_back(0, KeyHash{this}, KeyEq{this});
  }
  ~Index() { clear(); }
  Index(const Index&) = delete;  // the sets' hash and equality point at this index
  Index& operator=(const Index&) = delete;

  iterator begin() { return {this, 0, sets_[0].begin()}; }
  iterator end() { return {this, kShards, {}}; }
  const_iterator begin() const { return {this, 0, sets_[0].begin()}; }
  const_iterator end() const { return {this, kShards, {}}; }

  iterator find(std::string_view key) {
    const std::size_t h = Hash{}(key);
    Set& s = sets_[shard_of(h)];
    const auto it = s.find(key, h);
    return it == s.end() ? end() : iterator(this, shard_of(h), it);
  }
  const_iterator find(std::string_view key) const {
    const std::size_t h = Hash{}(key);
    const Set& s = sets_[shard_of(h)];
    const auto it = s.find(key, h);
    return it == s.end() ? end() : const_iterator(this, shard_of(h), it);
  }
  bool contains(std::string_view key) const { return find(key) != end(); }
  // The key's slot, inserted with a default node if it was not there (true). Throws
  // std::bad_alloc when memory (or the 2^32 - 1 ids) runs out, as any insert may.
  std::pair<iterator, bool> try_emplace(std::string_view key) { return insert(key, Node{}); }
  // As try_emplace, with `node`. Made for keys expected to be new (the index load): the slot is
  // built first and found present only by the insert (one hash and one probe, where
  // try_emplace, made for overwrites, looks the key up before building anything).
  std::pair<iterator, bool> emplace(std::string_view key, const Node& node) {
    const std::size_t shard = shard_of(Hash{}(key));
    const Id id = build(key, node);
    const auto [it, inserted] = add(shard, id);
    if (!inserted) discard(id);
    return {iterator(this, shard, it), inserted};
  }
  // Never allocates (the freed slot holds the free list's link).
  void erase(iterator it) {
    const Id id = *it.it_;
    sets_[it.shard_].erase(it.it_);
    --size_;
    discard(id);
    if (size_ == 0) release();
  }
  std::size_t size() const { return size_; }
  // Chunks of slots allocated (a diagnostic: the slab's size is chunks() * kChunkSlots slots).
  std::size_t chunks() const { return chunks_.size(); }
  void clear() {
    for (Set& s : sets_) {
      for (const Id id : s) slot(id).~Slot();
      s.clear();
    }
    size_ = 0;
    release();
  }

  Slot& slot(Id id) { return *std::launder(reinterpret_cast<Slot*>(cell(id))); }
  const Slot& slot(Id id) const { return *std::launder(reinterpret_cast<const Slot*>(cell(id))); }

 private:
  struct Cell {
    alignas(Slot) std::byte bytes[sizeof(Slot)];
  };
  static std::size_t shard_of(std::size_t hash) {
    return hash >> (std::numeric_limits<std::size_t>::digits - kShardBits);
  }
  std::byte* cell(Id id) const { return chunks_[id >> kChunkBits][id & (kChunkSlots - 1)].bytes; }

  // Finds the key, or builds its slot and then adds its id to the set. A throw (no memory)
  // leaves the index as it was.
  std::pair<iterator, bool> insert(std::string_view key, const Node& node) {
    const std::size_t h = Hash{}(key);
    const std::size_t shard = shard_of(h);
    Set& s = sets_[shard];
    if (auto it = s.find(key, h); it != s.end()) return {iterator(this, shard, it), false};
    const Id id = build(key, node);
    return {iterator(this, shard, add(shard, id).first), true};
  }
  // A new slot holding `key` and `node`, not yet in any set. The id is taken from the free list
  // or the never-used ones only once the slot is built (a throw takes nothing).
  Id build(std::string_view key, const Node& node) {
    const bool reuse = free_ != kNoId;
    if (!reuse) {
      if (fresh_ == kNoId) throw std::bad_alloc();  // 2^32 - 1 ids in use
      if ((fresh_ >> kChunkBits) == chunks_.size())
        chunks_.push_back(std::make_unique_for_overwrite<Cell[]>(kChunkSlots));
    }
    const Id id = reuse ? free_ : fresh_;
    Id next_free = kNoId;
    if (reuse) std::memcpy(&next_free, cell(id), sizeof next_free);
    new (cell(id))
        Slot(std::piecewise_construct, std::forward_as_tuple(key), std::forward_as_tuple(node));
    if (reuse)
      free_ = next_free;
    else
      ++fresh_;
    return id;
  }
  // Adds a built slot's id to its set (counted when added); a throw discards the slot.
  std::pair<Set::iterator, bool> add(std::size_t shard, Id id) {
    try {
      const auto result = sets_[shard].insert(id);
      if (result.second) ++size_;
      return result;
    } catch (...) {
      discard(id);
      throw;
    }
  }
  // Destroys a slot that is in no set and puts its id on the free list (linked through the
  // freed cells).
  void discard(Id id) {
    slot(id).~Slot();
    std::memcpy(cell(id), &free_, sizeof free_);
    free_ = id;
  }
  void release() {
    chunks_.clear();
    chunks_.shrink_to_fit();
    free_ = kNoId;
    fresh_ = 0;
  }

  std::vector<Set> sets_;
  std::vector<std::unique_ptr<Cell[]>> chunks_;
  static constexpr Id kNoId = std::numeric_limits<Id>::max();
  Id free_ = kNoId;  // the last erased slot, reused first; each freed cell holds the next
  Id fresh_ = 0;     // the first id never used
  std::size_t size_ = 0;
};

// The expiry order's elements: (expiry_t, the slot's id), in (expiry_t, key) order. The key
// breaks ties (all invalid entries sit at 0), read through the index only then; a slot's key
// stays as long as its id is in the order (the engine takes it out before erasing the slot).
struct ExpiryLess {
  const Index* index = nullptr;
  bool operator()(const std::pair<std::uint64_t, Index::Id>& a,
                  const std::pair<std::uint64_t, Index::Id>& b) const {
    if (a.first != b.first) return a.first < b.first;
    return a.second != b.second &&
           index->slot(a.second).first.view() < index->slot(b.second).first.view();
  }
};

// A node's access record, with `category` (the node's category pointer is not copied).
AccessRecord record_of(const Node& n, std::string_view category);
// A node with the record's fields (no category: the engine interns it).
Node node_of(const AccessRecord& a);

}  // namespace larder::engine
