#include "kv/memory_kv.hpp"

#include <algorithm>
#include <array>
#include <mutex>
#include <shared_mutex>
#include <vector>

#include <absl/container/btree_map.h>
#include <absl/container/node_hash_map.h>
#include <absl/hash/hash.h>

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
  std::vector<Write> ops;
};

// One column family: a hash map for point reads (the get path), and the key order for scans,
// kept lazily. A new key first goes into `recent_`, an unsorted list of at most kRecentMax keys;
// when it is full, the list is sorted and merged into `order_`, a B-tree of views of the keys
// (node_hash_map keeps keys and values in place, so the views stay valid). A key removed while
// it is still in `recent_` never costs a B-tree insert and erase: a cache at its limit with
// fewer live keys than kRecentMax keeps no B-tree at all. A scan merges the two in order (the
// few recent keys in its range sorted on the fly), so it never writes and never waits for a
// merge; a merge costs at most one sort of kRecentMax views.
class Family {
 public:
  // Unsorted keys kept before a merge: bounds a merge (a write's pause) to one sort of them.
  static constexpr std::size_t kRecentMax = 16384;

  const std::string* find(std::string_view key) const {
    auto it = values_.find(key);
    return it == values_.end() ? nullptr : &it->second.bytes;
  }
  void put(std::string&& key, std::string&& value) {
    auto [it, inserted] = values_.try_emplace(std::move(key));
    it->second.bytes = std::move(value);
    if (inserted) add_key(*it);
  }
  // As RocksDB's merge: no value yet reads as an empty one.
  void or_byte(std::string&& key, std::string_view operand) {
    auto [it, inserted] = values_.try_emplace(std::move(key));
    if (inserted) add_key(*it);
    (void)apply_or_byte(operand, &it->second.bytes);
  }
  void del(std::string_view key) {
    auto it = values_.find(key);
    if (it == values_.end()) return;
    drop_key(*it);
    values_.erase(it);
  }
  void del_range(std::string_view begin, std::string_view end) {
    merge();
    auto first = order_.lower_bound(begin);
    auto last = end.empty() ? order_.end() : order_.lower_bound(end);
    for (auto it = first; it != last; ++it) values_.erase(it->first);
    order_.erase(first, last);
  }
  void clear() {
    order_.clear();
    recent_.clear();
    values_.clear();
  }
  // Calls fn(key, value) for the keys in [begin, end) in order, until it returns false.
  template <class Fn>
  void scan(std::string_view begin, std::string_view end, Fn&& fn) const {
    const auto in_range = [&](std::string_view k) {
      return k >= begin && (end.empty() || k < end);
    };
    std::vector<const Recent*> recent;
    for (const Recent& r : recent_)
      if (in_range(r.key)) recent.push_back(&r);
    std::sort(recent.begin(), recent.end(),
              [](const Recent* a, const Recent* b) { return a->key < b->key; });
    auto next = recent.begin();
    for (auto it = order_.lower_bound(begin); it != order_.end() && in_range(it->first); ++it) {
      for (; next != recent.end() && (*next)->key < it->first; ++next)
        if (!fn((*next)->key, (*next)->value->bytes)) return;
      if (!fn(it->first, it->second->bytes)) return;
    }
    for (; next != recent.end(); ++next)
      if (!fn((*next)->key, (*next)->value->bytes)) return;
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
  using Slot = std::pair<const std::string, Value>;

  void add_key(Slot& slot) {
    if (recent_.size() >= kRecentMax) merge();
    slot.second.recent = recent_.size();
    recent_.push_back({slot.first, &slot.second});
  }
  void drop_key(Slot& slot) {
    const std::size_t at = slot.second.recent;
    if (at == kOrdered) {
      order_.erase(std::string_view(slot.first));
      return;
    }
    recent_[at] = recent_.back();  // the last one takes its place
    recent_[at].value->recent = at;
    recent_.pop_back();
  }
  // Puts every recent key into order_ (sorted first: each insert then starts where the last one
  // ended, which is often the right place).
  void merge() {
    if (recent_.empty()) return;
    std::sort(recent_.begin(), recent_.end(),
              [](const Recent& a, const Recent& b) { return a.key < b.key; });
    auto hint = order_.end();
    for (const Recent& r : recent_) {
      r.value->recent = kOrdered;
      hint = std::next(order_.insert(hint, {r.key, r.value}));
    }
    recent_.clear();
  }

  struct Hash {
    using is_transparent = void;
    std::size_t operator()(std::string_view s) const { return absl::Hash<std::string_view>{}(s); }
  };
  absl::node_hash_map<std::string, Value, Hash, std::equal_to<>> values_;
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
