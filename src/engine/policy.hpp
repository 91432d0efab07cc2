// Eviction policies (private to src/engine): the order in which the engine evicts live entries
// when a limit requires it. One class per policy family, each owning its own state and its part
// of a transaction's plan:
//  - ListPolicy (policy_lists.cpp): LRU, LFU and FIFO, lists of index nodes in (rank, tick)
//    order;
//  - S3FifoPolicy (policy_s3fifo.cpp): S3-FIFO's small and main queues and its ghost queue;
//  - TtlPolicy (policy.cpp): no order; only expired and invalid entries ever go.
// The engine tells a policy of every node that enters or leaves the index, of hits and of
// overwrites, and asks it for victims; it never reads a node's Place. Expired and invalid entries
// go first under every policy: that pass is the engine's (the expiry order).
//
// Thread-safety: none of its own; every call is made under the engine mutex.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <string_view>

#include <absl/container/flat_hash_set.h>

#include "engine/index.hpp"
#include "kv/kv.hpp"
#include "larder/larder.hpp"
#include "util/log.hpp"

namespace larder::engine {

struct Txn;

// The keys an eviction must not choose: the one being set, or the keys of a set_all.
struct Keep {
  std::string_view key;
  const absl::flat_hash_set<std::string_view, Hash, std::equal_to<>>* keys = nullptr;
  bool operator()(std::string_view k) const {
    return k == key || (keys != nullptr && keys->contains(k));
  }
};

// What a policy asks of the engine (under the engine mutex).
class PolicyHost {
 public:
  // Whether the stored entries, with the transaction's planned changes, exceed a limit.
  virtual bool over_limits(const Txn& t) const = 0;
  // Plans removing `victim` as an eviction (counted as one).
  virtual void evict(Txn& t, Slot& victim) = 0;
  // A new tick (the logical clock of the index), and one seen in the store.
  virtual std::uint64_t next_tick() = 0;
  virtual void see_tick(std::uint64_t tick) = 0;
  // `key`'s node changed and its access record must be written again / has been written.
  virtual void mark_dirty(std::string_view key) = 0;
  virtual void mark_clean(std::string_view key) = 0;
  virtual std::uint64_t max_entries() const = 0;  // limits in force, 0: none
  virtual std::uint64_t max_bytes() const = 0;
  virtual Index& index() = 0;
  virtual kv::Kv& store() = 0;
  // Whether the store outlives the process (kv::Kv::durable): else policy state lives in memory.
  virtual bool durable() const = 0;
  virtual const util::Logger& log() const = 0;

 protected:
  ~PolicyHost() = default;
};

class Policy {
 public:
  explicit Policy(PolicyHost& host) : host_(host) {}
  virtual ~Policy() = default;
  Policy(const Policy&) = delete;
  Policy& operator=(const Policy&) = delete;

  // ---- index membership
  // `slot`'s node entered the index / leaves it. `keep_place`: an overwrite whose node keeps its
  // place (keeps_place() said so; the place was copied into the new node).
  virtual void link(Slot& slot, bool keep_place) = 0;
  virtual void unlink(Slot& slot, bool keep_place) = 0;
  // An overwrite of `old` by `now`: true when `now` keeps old's place in the order, which is then
  // copied into `now` (FIFO: an overwrite keeps its rank and tick).
  virtual bool keeps_place(const Node& old, Node& now) const {
    (void)old;
    (void)now;
    return false;
  }
  // A node as loaded from an access record written under another policy, or this one.
  virtual void loaded(Node& n) const { (void)n; }
  // Loading many nodes at once (open, rebuild): link() may defer ordering until end_load().
  virtual void begin_load() {}
  virtual void end_load() {}
  // After the index is loaded: reads the policy's own records (S3-FIFO's ghosts).
  virtual kv::Status load() { return kv::Status(); }
  // Whether the store keeps records of this policy beyond the access records (ghosts): when the
  // policy changes to one that does not, they are deleted.
  virtual bool keeps_ghosts() const { return false; }
  virtual void clear() = 0;

  // ---- hits
  // Whether a hit changes a node's place (LRU, LFU): the engine applies buffered hits before a
  // set, so that they land before the set's node.
  virtual bool hits_reorder() const { return false; }
  // `hits` hits of `slot`'s node, the last at `tick`, before the engine adds them to the node's
  // count and last tick. A batch of hits ends with end_hits().
  virtual void hit(Slot& slot, std::uint64_t hits, std::uint64_t tick) = 0;
  virtual void end_hits() {}

  // ---- writes (a transaction)
  // A transaction starts (Txn's constructor): the policy's plan starts empty.
  virtual void begin() {}
  // Where a new key goes, asked before any eviction is planned (S3-FIFO looks it up in the ghost
  // queue); placed() then gives the node its place with the set's tick.
  virtual Place admit(Txn& t, std::string_view key, std::uint64_t size) {
    (void)t;
    (void)key;
    (void)size;
    return {};
  }
  virtual void placed(Node& n, const Place& admitted, std::uint64_t tick) const {
    (void)n;
    (void)admitted;
    (void)tick;
  }
  // An overwrite of a stored node (a copy, staged), counting as `hits` hits.
  virtual void rewritten(Node& n, std::uint64_t hits) const {
    (void)n;
    (void)hits;
  }
  // The transaction plans removing `n`'s key.
  virtual void removing(const Node& n) { (void)n; }
  // Plans evictions in the policy's order (host().evict) until host().over_limits() is false or
  // only `keep` is left.
  virtual void victims(Txn& t, const Keep& keep) = 0;
  // Adds the policy's records to the transaction's batch, before it is written.
  virtual void stage(Txn& t) { (void)t; }
  // The batch was written: the plan takes effect (before the engine erases removed nodes).
  virtual void commit(Txn& t) { (void)t; }

  // ---- checks
  // Whether `have` (in the index) and `want` (as its access record loads) agree on the place.
  virtual bool same_place(const Node& have, const Node& want) const {
    (void)have;
    (void)want;
    return true;
  }
  // Reports every inconsistency of the policy's state with the index and its records.
  virtual void verify(const std::function<void(std::string)>& problem) = 0;
  // Nodes that list inserts walked past (ListPolicy; 0 for the others): a diagnostic.
  virtual std::uint64_t steps() const { return 0; }

 protected:
  PolicyHost& host() const { return host_; }

 private:
  PolicyHost& host_;
};

// The policy class for `policy`.
std::unique_ptr<Policy> make_policy(EvictionPolicy policy, PolicyHost& host);

}  // namespace larder::engine
