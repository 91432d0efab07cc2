#include "kv/memory_kv.hpp"

#include <algorithm>
#include <array>
#include <limits>
#include <mutex>
#include <shared_mutex>
#include <vector>

#include <absl/container/btree_map.h>
#include <absl/container/inlined_vector.h>
#include <absl/container/node_hash_map.h>

#include "util/hash.hpp"

namespace larder::kv {

namespace {

struct Write {
  enum class Kind : std::uint8_t { put, del, del_range, or_byte } kind;
  Cf cf;
  std::string a, b;
};

class MemoryBatch final : public Batch {
 public:
  void put(Cf cf, std::string_view key, std::string_view value) override {
    ops.push_back({Write::Kind::put, cf, std::string(key), std::string(value)});
  }
  void put_parts(Cf cf, std::string_view key, std::string_view head,
                 std::string_view tail) override {
    std::string value;
    value.reserve(head.size() + tail.size());
    value.append(head).append(tail);
    ops.push_back({Write::Kind::put, cf, std::string(key), std::move(value)});
  }
  void del(Cf cf, std::string_view key) override {
    ops.push_back({Write::Kind::del, cf, std::string(key), {}});
  }
  void delete_range(Cf cf, std::string_view begin, std::string_view end) override {
    ops.push_back({Write::Kind::del_range, cf, std::string(begin), std::string(end)});
  }
  void or_byte(Cf cf, std::string_view key, std::uint32_t offset, std::uint8_t bits) override {
    ops.push_back({Write::Kind::or_byte, cf, std::string(key), or_byte_operand(offset, bits)});
  }
  std::size_t count() const override { return ops.size(); }
  absl::InlinedVector<Write, 2> ops;  // a set's: its entry, and an evicted entry's removal
};

// One column family: a hash map for point reads (the get path), and the key order for scans,
// kept lazily. A new key first goes into `recent_`, an unsorted list of at most kRecentMax keys;
// once that is full, each new key moves one waiting key into `order_`, a B-tree of views of the
// keys (node_hash_map keeps keys and values in place, so the views stay valid). A key removed
// while it waits never costs a B-tree insert and erase: a cache at its limit with fewer live
// keys than kRecentMax keeps no B-tree at all, and no write ever does more than one B-tree
// insert. A scan merges the two in order (the waiting keys in its range through a heap, taken
// as far as the scan goes), so it never writes.
class Family {
 public:
  static constexpr std::size_t kRecentMax = 16384;

  const std::string* find(std::string_view key) const {
    const std::size_t h = Hash{}(key);
    const Map& m = values_[shard_of(h)];
    auto it = m.find(key, h);
    return it == m.end() ? nullptr : &it->second.bytes;
  }
  void put(std::string&& key, std::string&& value) {
    Map& m = map_of(key);
    auto [it, inserted] = m.try_emplace(std::move(key));
    it->second.bytes = std::move(value);
    if (inserted) add_key(*it);
  }
  // As RocksDB's merge: no value yet reads as an empty one.
  void or_byte(std::string&& key, std::string_view operand) {
    Map& m = map_of(key);
    auto [it, inserted] = m.try_emplace(std::move(key));
    if (inserted) add_key(*it);
    (void)apply_or_byte(operand, &it->second.bytes);
  }
  void del(std::string_view key) {
    const std::size_t h = Hash{}(key);
    Map& m = values_[shard_of(h)];
    auto it = m.find(key, h);
    if (it == m.end()) return;
    drop_key(it->first, it->second);
    m.erase(it);
  }
  void del_range(std::string_view begin, std::string_view end) {
    for (std::size_t i = 0; i < recent_.size();) {
      if (!in_range(recent_[i].key, begin, end)) {
        ++i;
        continue;
      }
      const std::string key(recent_[i].key);
      drop_key(key, *recent_[i].value);  // i now holds another waiting key
      map_of(key).erase(key);
    }
    auto first = order_.lower_bound(begin);
    auto last = end.empty() ? order_.end() : order_.lower_bound(end);
    for (auto it = first; it != last; ++it) map_of(it->first).erase(it->first);
    order_.erase(first, last);
  }
  void clear() {
    order_.clear();
    recent_.clear();
    for (Map& m : values_) m.clear();
  }
  // Calls fn(key, value) for the keys in [begin, end) in order, until it returns false.
  template <class Fn>
  void scan(std::string_view begin, std::string_view end, Fn&& fn) const {
    // The waiting keys in range, smallest on top.
    std::vector<const Recent*> heap;
    for (const Recent& r : recent_)
      if (in_range(r.key, begin, end)) heap.push_back(&r);
    const auto greater = [](const Recent* a, const Recent* b) { return a->key > b->key; };
    std::make_heap(heap.begin(), heap.end(), greater);
    const auto emit_recent = [&] {
      const Recent* r = heap.front();
      std::pop_heap(heap.begin(), heap.end(), greater);
      heap.pop_back();
      return fn(r->key, r->value->bytes);
    };
    for (auto it = order_.lower_bound(begin); it != order_.end() && in_range(it->first, begin, end);
         ++it) {
      while (!heap.empty() && heap.front()->key < it->first)
        if (!emit_recent()) return;
      if (!fn(it->first, it->second->bytes)) return;
    }
    while (!heap.empty())
      if (!emit_recent()) return;
  }

 private:
  static constexpr std::size_t kOrdered = static_cast<std::size_t>(-1);
  struct Value {
    std::string bytes;
    std::size_t recent = kOrdered;  // its key's position in recent_, or kOrdered: in order_
  };
  struct Recent {
    std::string_view key;
    Value* value;
  };

  static bool in_range(std::string_view k, std::string_view begin, std::string_view end) {
    return k >= begin && (end.empty() || k < end);
  }
  void add_key(std::pair<const std::string, Value>& slot) {
    if (recent_.size() >= kRecentMax) {  // the last waiting key goes into the order
      const Recent r = recent_.back();
      recent_.pop_back();
      r.value->recent = kOrdered;
      order_.emplace(r.key, r.value);
    }
    slot.second.recent = recent_.size();
    recent_.push_back({slot.first, &slot.second});
  }
  void drop_key(std::string_view key, Value& value) {
    const std::size_t at = value.recent;
    if (at == kOrdered) {
      order_.erase(key);
      return;
    }
    recent_[at] = recent_.back();  // the last one takes its place
    recent_[at].value->recent = at;
    recent_.pop_back();
  }

  using Hash = util::StringHash;
  // The keys in 64 maps by their hash's top bits (the maps place keys by the low ones): a map
  // rehashes when it grows, under the write lock, touching every key it holds; one of 64 holds a
  // 64th of them (at 1M keys, one map's growth paused every read for ~100 ms, one of 16 maps'
  // for ~10 ms).
  using Map = absl::node_hash_map<std::string, Value, Hash, std::equal_to<>>;
  static constexpr int kShardBits = 6;
  static std::size_t shard_of(std::size_t hash) {
    return hash >> (std::numeric_limits<std::size_t>::digits - kShardBits);
  }
  Map& map_of(std::string_view key) { return values_[shard_of(Hash{}(key))]; }
  std::array<Map, std::size_t{1} << kShardBits> values_;
  absl::btree_map<std::string_view, const Value*> order_;
  std::vector<Recent> recent_;
};

class MemoryKv final : public Kv {
 public:
  Status get(Cf cf, std::string_view key, std::string* value) override {
    std::shared_lock lock(mu_);
    const std::string* found = families_[static_cast<int>(cf)].find(key);
    if (found == nullptr) return Status::missing();
    value->assign(*found);
    return Status();
  }
  Status get_view(Cf cf, std::string_view key,
                  absl::FunctionRef<void(std::string_view)> fn) override {
    std::shared_lock lock(mu_);
    const std::string* found = families_[static_cast<int>(cf)].find(key);
    if (found == nullptr) return Status::missing();
    fn(*found);
    return Status();
  }

  Status scan(Cf cf, std::string_view begin, std::string_view end, const ScanFn& fn) override {
    std::shared_lock lock(mu_);
    families_[static_cast<int>(cf)].scan(begin, end, fn);
    return Status();
  }

  std::unique_ptr<Batch> new_batch() override { return std::make_unique<MemoryBatch>(); }

  Status write(Batch& batch) override {
    auto& b = static_cast<MemoryBatch&>(batch);
    std::unique_lock lock(mu_);
    for (auto& op : b.ops) {
      Family& family = families_[static_cast<int>(op.cf)];
      switch (op.kind) {
        case Write::Kind::put:
          family.put(std::move(op.a), std::move(op.b));
          break;
        case Write::Kind::del:
          family.del(op.a);
          break;
        case Write::Kind::del_range:
          family.del_range(op.a, op.b);
          break;
        case Write::Kind::or_byte:
          family.or_byte(std::move(op.a), op.b);
          break;
      }
    }
    return Status();
  }

  bool durable() const override { return false; }
  Status flush() override { return Status(); }
  Status compact(Cf) override { return Status(); }
  Status reset(Cf cf) override {
    std::lock_guard lock(mu_);
    families_[static_cast<int>(cf)].clear();
    return Status();
  }

 private:
  std::shared_mutex mu_;
  std::array<Family, kCfCount> families_;
};

}  // namespace

std::unique_ptr<Kv> make_memory_kv() {
  return std::make_unique<MemoryKv>();
}

}  // namespace larder::kv
