#include "kv/memory_kv.hpp"

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

// One column family: a hash map for point reads (the get path) and a B-tree of views of its
// keys for ordered scans. node_hash_map keeps keys and values in place, so the views stay valid.
class Family {
 public:
  const std::string* find(std::string_view key) const {
    auto it = values_.find(key);
    return it == values_.end() ? nullptr : &it->second;
  }
  void put(std::string&& key, std::string&& value) {
    auto [it, inserted] = values_.try_emplace(std::move(key));
    it->second = std::move(value);
    if (inserted) order_.emplace(std::string_view(it->first), &it->second);
  }
  // As RocksDB's merge: no value yet reads as an empty one.
  void or_byte(std::string&& key, std::string_view operand) {
    auto [it, inserted] = values_.try_emplace(std::move(key));
    if (inserted) order_.emplace(std::string_view(it->first), &it->second);
    (void)apply_or_byte(operand, &it->second);
  }
  void del(std::string_view key) {
    auto it = values_.find(key);
    if (it == values_.end()) return;
    order_.erase(std::string_view(it->first));
    values_.erase(it);
  }
  void del_range(std::string_view begin, std::string_view end) {
    auto first = order_.lower_bound(begin);
    auto last = end.empty() ? order_.end() : order_.lower_bound(end);
    for (auto it = first; it != last; ++it) values_.erase(it->first);
    order_.erase(first, last);
  }
  void clear() {
    order_.clear();
    values_.clear();
  }
  template <class Fn>
  void scan(std::string_view begin, std::string_view end, Fn&& fn) const {
    for (auto it = order_.lower_bound(begin); it != order_.end(); ++it) {
      if (!end.empty() && it->first >= end) break;
      if (!fn(it->first, *it->second)) break;
    }
  }

 private:
  struct Hash {
    using is_transparent = void;
    std::size_t operator()(std::string_view s) const { return absl::Hash<std::string_view>{}(s); }
  };
  absl::node_hash_map<std::string, std::string, Hash, std::equal_to<>> values_;
  absl::btree_map<std::string_view, const std::string*> order_;
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
