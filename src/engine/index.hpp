// The engine's in-memory index (private to src/engine): one node per stored key, holding the
// key's access record in memory, and the place the key's eviction policy gives it (Place, written
// only by the policy classes of policy.hpp).
//
// Thread-safety: none of its own; the engine uses it under the engine mutex.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
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
using Index = absl::node_hash_map<std::string, Node, Hash, std::equal_to<>>;
static_assert(std::is_same_v<Index::value_type, Slot>);

// A node's access record, with `category` (the node's category pointer is not copied).
AccessRecord record_of(const Node& n, std::string_view category);
// A node with the record's fields (no category: the engine interns it).
Node node_of(const AccessRecord& a);

}  // namespace larder::engine
