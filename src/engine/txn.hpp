// The engine's write transaction (private to src/engine): the batch being built, the totals'
// deltas, the keys it removes and the nodes it changes, applied to the index by Engine::commit
// once the batch is written. Planning never changes the index, except moves a policy makes as
// policy state (S3-FIFO's queue moves, like hits). A policy keeps its own part of the plan
// (Policy::begin starts it with the transaction).
// Thread-safety: used by one thread under the engine mutex.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include <absl/container/flat_hash_set.h>
#include <absl/container/inlined_vector.h>

#include "engine/engine.hpp"
#include "engine/index.hpp"
#include "engine/policy.hpp"
#include "kv/kv.hpp"

namespace larder::engine {

// A change the transaction makes to a key's index node once its batch is written.
struct Staged {
  std::string key;
  Node node;
  std::string category;
  EventKind kind = EventKind::set;  // set, or invalidate (node and category then unused)
};

struct Txn {
  Txn(kv::Kv& kv, Policy& policy) : batch(kv.new_batch()) { policy.begin(); }
  std::unique_ptr<kv::Batch> batch;
  std::int64_t d_entries = 0, d_bytes = 0;
  absl::InlinedVector<std::string, 2> removed;    // keys removed, in order
  absl::InlinedVector<EventKind, 2> removed_why;  // why each was (remove, evict, expire)
  // Views of `removed`'s keys in the index: the first kFewRemoved in a list, all of them in a set
  // once there are more (most transactions remove one key or none, and a look through a short
  // list is cheaper than hashing into a set).
  static constexpr std::size_t kFewRemoved = 8;
  absl::InlinedVector<std::string_view, kFewRemoved> few_removed;
  absl::flat_hash_set<std::string_view, Hash, std::equal_to<>> removed_set;
  absl::InlinedVector<Staged, 1> staged;  // nodes added or changed
  std::uint64_t evictions = 0, expirations = 0, invalidations = 0;
  std::optional<std::int64_t> watermark;
  bool totals_dirty = false;

  // Records a removal of `key`, which views the index's copy (it outlives the transaction).
  void add_removed(std::string_view key, EventKind why) {
    removed.emplace_back(key);
    removed_why.push_back(why);
    if (few_removed.size() < kFewRemoved) {
      few_removed.push_back(key);
      return;
    }
    if (removed_set.empty()) removed_set.insert(few_removed.begin(), few_removed.end());
    removed_set.insert(key);
  }
  // True if this transaction removes `key`.
  bool removes(std::string_view key) const {
    if (!removed_set.empty()) return removed_set.contains(key);
    for (const std::string_view k : few_removed)
      if (k == key) return true;
    return false;
  }
};

}  // namespace larder::engine
