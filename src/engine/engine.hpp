// The cache engine: entries, access data and counters kept over a kv::Kv, with an in-memory
// index (eviction order, expiry order, category membership) that gives exact LRU / LFU / FIFO /
// S3-FIFO / TTL-only eviction under entry and byte limits (the policies in policy.hpp). The
// same code runs over RocksDB and over memory, which is what makes both stores behave alike.
//
// What is persisted (docs/format.md, store format 3): per key one entries record (immutable header
// + value) and one access record (times, counts, size, expiry, category); the totals and settings
// in the counters family. The index is derived: it is loaded from the access records on open.
// Over a store that is not durable (kv::Kv::durable: the memory store) only the entries are
// written; access data, totals and S3-FIFO ghosts live in the index alone.
//
// Invariants (see docs/ARCHITECTURE.md):
//  - (durable store) every stored key has one entries record and one access record, written in
//    one atomic batch with the totals counter; counters["totals"] equals the sums over the
//    entries.
//  - the index holds exactly the stored keys; its node of a key equals the key's access record
//    plus the hits not yet persisted (dirty nodes, written by the AccessFlusher within its delay:
//    500 ms in core::Backend).
//  - no stored entry has an expired-at time below the drop watermark (the compaction filter
//    physically drops records below it, which are all already deleted).
//
// Thread-safety: every public function may be called from many threads at once. Reads of values
// do not take the engine mutex; writes and index reads are serialized by it. Hits are recorded in
// a sharded buffer and applied to the index in batches (before choosing victims, when a batch is
// full, and by flush_access()); the AccessFlusher persists the access records they dirtied.
#pragma once

#include <algorithm>
#include <array>
#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <thread>
#include <tuple>
#include <utility>
#include <vector>

#include <absl/container/btree_set.h>
#include <absl/container/flat_hash_map.h>
#include <absl/container/flat_hash_set.h>
#include <absl/container/node_hash_map.h>

#include "engine/index.hpp"
#include "engine/policy.hpp"
#include "engine/records.hpp"
#include "kv/kv.hpp"
#include "larder/larder.hpp"
#include "stats/counters.hpp"
#include "util/adaptive_mutex.hpp"
#include "util/hash.hpp"
#include "util/log.hpp"

namespace larder::engine {

// Operation counters (stats/counters.hpp): the engine counts evictions, expirations and
// invalidations into them.
using Counters = stats::Counters;

struct Options {
  std::uint64_t max_entries = 0;  // 0 = unlimited
  std::uint64_t max_bytes = 0;    // 0 = unlimited
  EvictionPolicy policy = EvictionPolicy::lru;
  double stale_factor = 2.0;
  // Not used by the engine; persisted with the settings so tools can show and reuse it.
  std::int64_t default_ttl_ms = 0;
  // Repair on open what the open finds damaged (rebuild, corrected totals, migration); false:
  // write nothing at open and let verify report it (read-only views, inspection tools).
  bool repair_on_open = true;
  // Tests: called by the background index load after each page, while it does not hold the
  // engine mutex (a test pauses the load there).
  std::function<void()> on_load_page;
};

struct Found {
  EntryHeader header;
  std::string value;  // only when asked for
  std::uint64_t size = 0;
  EntryStatus status = EntryStatus::fresh;
};

struct StatusCounts {
  std::uint64_t fresh = 0, stale = 0, expired = 0, invalid = 0;
};

// What a set did: stored; refused (a value larger than the byte limit, or a ttl-policy store
// full of live entries); or, for an update(), nothing asked (the decision was to store nothing).
enum class SetOutcome : std::uint8_t { stored, too_large, full, skipped };

// One entry to store (Engine::set_all, Engine::update). The views must outlive the call.
struct SetItem {
  std::string_view key, value;
  std::int64_t ttl_ms = 0;  // 0: never expires
  std::string_view category;
  const std::map<std::string, std::string>* metadata = nullptr;  // null: none
  // The entry's created time when it is not the set's own time (update() keeps an entry's
  // lifetime this way: created time and TTL both unchanged).
  std::optional<std::int64_t> created_ns;
};

// What update() stores instead of a key's current entry.
struct Rewrite {
  std::string value;
  std::int64_t ttl_ms = 0;
  std::string category;
  std::map<std::string, std::string> metadata;
  std::optional<std::int64_t> created_ns;  // as SetItem::created_ns
};

// What verify() found. `problems` is empty for a consistent store.
struct VerifyReport {
  std::uint64_t entries = 0, bytes = 0;  // as counted by the scan
  std::vector<std::string> problems;     // one line each, naming the key or counter
};

inline constexpr std::size_t kAccessFlushBatch = 1024;

// Applies an engine's buffered hits off the reading threads (the Backend's housekeeper).
class AccessFlusher {
 public:
  virtual ~AccessFlusher() = default;
  // Called from a reading thread when a batch of hits is ready: arrange for
  // Engine::flush_access() soon and return at once.
  virtual void flush_soon() = 0;
};

// A change to a stored key, for subscribers (Cache::subscribe). Values as larder::Event::Kind.
enum class EventKind : std::uint8_t { set = 0, remove = 1, invalidate = 2, evict = 3, expire = 4 };

// Receives the engine's changes once they are written, in commit order (the Backend's event log).
class EventSink {
 public:
  virtual ~EventSink() = default;
  // False while nobody listens: the engine then reports nothing (costs nothing).
  virtual bool wants_events() const = 0;
  // Called under the engine mutex: must be quick and must not call back into the engine.
  virtual void on_event(EventKind kind, std::string_view key) = 0;
};

// What a read returns: the entry's header only (exists, metadata), its value too, or the value
// with only the header's flags and times (category and metadata left empty: the get path).
enum class Want : std::uint8_t { header, value, value_only };

struct Txn;

class Engine {
 public:
  // `watermark` is shared with the compaction filter made by drop_predicate().
  Engine(std::unique_ptr<kv::Kv> kv, Options options,
         std::shared_ptr<std::atomic<std::int64_t>> watermark, Counters* counters,
         const util::Logger* log);
  ~Engine();
  Engine(const Engine&) = delete;
  Engine& operator=(const Engine&) = delete;

  // Reads the counters and starts loading the index from the access records: in a background
  // thread for a non-empty store, in pages (open returns at once; reads of values never wait for
  // it; sets and removes under the LRU, LFU and FIFO policies that need no eviction do not wait
  // either: they load their own keys' records first; every other call that needs the index waits
  // for its end; totals are the stored ones, moved by those writes, until the scan recounts and,
  // if they differ, corrects them). Rebuilds access records, index and totals from the entries
  // instead (synchronously) when the store has format 1 (migration), the stale factor changed, a
  // rebuild was interrupted or an access record does not decode. Records changed limits or default
  // TTL. Fails on I/O trouble or a newer format.
  kv::Status open();
  // After failed writes: asks the store to take writes again (kv::Kv::recover) and, when it was
  // reopened, reloads the counters from it. Returns ok when the store takes writes again.
  kv::Status recover_store();

  // The compaction-filter predicate for the entries family: true for records whose expired-at
  // time is below the watermark.
  static std::function<bool(std::string_view)> drop_predicate(
      std::shared_ptr<std::atomic<std::int64_t>> watermark, double stale_factor);
  // The same with a stale factor that may be set after the store is opened (before the engine
  // over it is: until Engine::open the watermark drops nothing).
  static std::function<bool(std::string_view)> drop_predicate(
      std::shared_ptr<std::atomic<std::int64_t>> watermark,
      std::shared_ptr<const std::atomic<double>> stale_factor);
  // The settings a store was last opened with (policy, stale factor, limits, default TTL) into
  // *out, leaving fields the store does not record alone; *found is false for a store without
  // settings (new or unknown format). Fails only when the store cannot be read.
  static kv::Status read_settings(kv::Kv& kv, Options* out, bool* found);

  // ok with *out filled (its value only with Want::value), not_found, or a failure (corruption
  // for an undecodable record).
  kv::Status read(std::string_view key, std::int64_t now_ns, Want want, Found* out);
  // Records a hit (buffered).
  void record_access(std::string_view key, std::int64_t now_ns);
  // The access record including buffered hits; not_found when the key is not stored.
  kv::Status access_of(std::string_view key, AccessRecord* out);

  // Stores one entry, evicting by the policy when a limit requires it. ok with *outcome saying
  // whether it was stored (SetOutcome), or the write's failure.
  kv::Status set(std::string_view key, std::string_view value, std::int64_t ttl_ms,
                 std::string_view category, const std::map<std::string, std::string>& metadata,
                 std::int64_t now_ns, SetOutcome* outcome);
  // Stores every item in one atomic batch, or none: *outcome is stored, or the reason nothing
  // was. A key given twice is stored with its last item. Eviction is planned once for the whole
  // batch and never chooses one of its keys.
  kv::Status set_all(std::span<const SetItem> items, std::int64_t now_ns, SetOutcome* outcome);
  // A read-modify-write of `key`, atomic with respect to every other write: under the engine
  // mutex, `decide` sees the key's stored entry with its value and status (nullptr when none is
  // stored) and returns what to store instead, or nullopt to store nothing (*outcome: skipped).
  // A corrupt entry fails the call (corruption) without calling `decide`.
  kv::Status update(std::string_view key, std::int64_t now_ns,
                    const std::function<std::optional<Rewrite>(const Found*)>& decide,
                    SetOutcome* outcome);
  // Copies from another tier (remote hits): in one atomic batch, stores each item whose key has
  // no fresh entry now and whose value fits the byte limit; the others are left as they are.
  // Keys must be distinct. Nothing is stored when the batch finds no room.
  kv::Status fill(std::span<const SetItem> items, std::int64_t now_ns);
  kv::Status remove(std::string_view key, bool* removed);
  // Removes an entry whose record does not decode, with its index records when its access record
  // is intact (else only the raw records; verify/rebuild repair the rest).
  kv::Status drop_corrupt(std::string_view key);
  kv::Status remove_keys(const std::vector<std::string>& keys, std::size_t* removed);
  kv::Status invalidate_keys(const std::vector<std::string>& keys, std::size_t* marked);
  kv::Status clear(std::size_t* removed);
  // Removes every entry whose key `doomed` holds for, a page at a time; `doomed` is asked under
  // the engine mutex, in the same hold as the key's removal. *removed: how many went.
  kv::Status remove_if(const std::function<bool(std::string_view)>& doomed, std::size_t* removed);
  // Removes every expired or invalid entry; *removed says how many.
  kv::Status cleanup(std::int64_t now_ns, std::size_t* removed);

  // Stored keys (any status) starting with `prefix`, in key order.
  kv::Status keys(std::string_view prefix, std::vector<std::string>* out);
  // *any: whether some stored key starts with `prefix` (one step of a scan).
  kv::Status has_keys(std::string_view prefix, bool* any);
  kv::Status keys_in_category(std::string_view category, std::vector<std::string>* out);
  kv::Status status_counts(std::int64_t now_ns, StatusCounts* out);

  // Applies buffered hits to the index and persists every access record they changed.
  kv::Status flush_access();
  // Applies buffered hits to the index only (memory; the next flush_access() persists them).
  void apply_access();
  // Hits not yet applied, or applied but not yet persisted.
  bool has_pending_access() const {
    return pending_size_.load(std::memory_order_relaxed) > 0 ||
           dirty_size_.load(std::memory_order_relaxed) > 0;
  }
  // Nodes that list inserts walked past since the engine was made: a diagnostic (LRU, LFU and
  // FIFO place a node by walking its list; tests bound this).
  std::uint64_t list_steps() const;
  // Who applies batches of hits (nullptr: readers apply them themselves). Set before use; it
  // must outlive the engine's use of it.
  void set_access_flusher(AccessFlusher* flusher) { flusher_ = flusher; }
  // Who hears of every change (nullptr: nobody). Set before use; it must outlive the engine.
  void set_event_sink(EventSink* sink) { sink_ = sink; }
  // Checks every invariant above against the stored records and the index against both (a full
  // scan; flushes buffered hits first). Fails only when the store cannot be read.
  kv::Status verify(VerifyReport* report);
  // Rebuilds access records, the index and the counters from the entries family.
  kv::Status rebuild();
  // Compacts every column family (reclaims the space of deleted records; no-op in memory).
  kv::Status compact();

  // Calls waiting for the background index load to end (tests, diagnostics).
  int load_waiters() const { return load_waiters_.load(); }
  std::uint64_t entries() const { return entries_.load(); }
  std::uint64_t bytes() const { return bytes_.load(); }
  std::map<std::string, std::uint64_t> categories();
  // The options the engine runs with: the configured ones, with the limits in force.
  Options options() const {
    Options o = options_;
    o.max_entries = max_entries();
    o.max_bytes = max_bytes();
    return o;
  }
  // Whether a value of `size` bytes is within the byte limit in force (set() refuses it as
  // too_large otherwise).
  bool value_fits(std::size_t size) const { return max_bytes() == 0 || size <= max_bytes(); }
  // True while the limits are an administrator's (set_limits), not the configured ones.
  bool admin_limits() const { return admin_limits_.load(); }
  // Limits set by an administrator (cachectl limits; nullopt: keep that one as it is): persisted
  // in the store, they replace the configured limits now and at every later open, until
  // reset_limits(). Evicts down to them at once (*evicted: how many entries went); under the
  // ttl policy only expired and invalid entries go. Fails only when the store cannot be written.
  kv::Status set_limits(std::optional<std::uint64_t> max_entries,
                        std::optional<std::uint64_t> max_bytes, std::int64_t now_ns,
                        std::size_t* evicted);
  // Forgets the administrator's limits: the configured ones apply again (evicting if needed).
  kv::Status reset_limits(std::int64_t now_ns, std::size_t* evicted);
  kv::Kv& kv() { return *kv_; }

 private:
  struct Pending {
    std::uint64_t count = 0;
    std::uint64_t tick = 0;
    std::int64_t ns = 0;
  };
  using PendingMap = absl::flat_hash_map<std::string, Pending, Hash, std::equal_to<>>;
  // One shard of the hit buffer, on cache lines of its own (readers on different cores write
  // different shards). `size` is map.size(), written under mu and read without it, so that
  // draining skips empty shards without locking them: a set drains the buffer before it
  // chooses victims, and usually finds one or two shards with hits.
  struct alignas(64) Shard {
    std::mutex mu;
    PendingMap map;
    std::atomic<std::size_t> size{0};
  };
  struct PolicyHostImpl;  // the engine as its policy sees it (engine.cpp)

  // The engine mutex for one foreground call (counted in waiting_), and for one page of a long
  // loop (cleanup, invalidation, flushing), which first lets waiting foreground calls in.
  // Both wait for the index load's end (loading_).
  std::unique_lock<util::AdaptiveMutex> foreground_lock();
  std::unique_lock<util::AdaptiveMutex> page_lock();
  // The engine mutex for a set of `items` (adds: true) or a remove of their keys (false): while
  // the index loads, such a write goes ahead when it cannot need an eviction (any policy but
  // S3-FIFO, and within the limits even if every key is new) once its keys' records are in the
  // index (load_key_locked); otherwise it waits for the load's end. Costs nothing more otherwise.
  std::unique_lock<util::AdaptiveMutex> write_lock(std::span<const SetItem> items, bool adds);
  void wait_loaded(std::unique_lock<util::AdaptiveMutex>& lock);
  // Releases the mutex, calls `meanwhile` (if any), lets waiting foreground calls take the
  // mutex first (bounded), then takes it again.
  void yield_to_waiting(std::unique_lock<util::AdaptiveMutex>& lock,
                        const std::function<void()>& meanwhile = {});
  Shard& shard_of(std::size_t hash);  // the shard of a key of this Hash
  Pending take_pending(std::string_view key);
  PendingMap take_shard(Shard& shard);           // one shard's hits
  PendingMap drain_pending();                    // every shard's
  void apply_locked(const PendingMap& pending);  // hits into the index (and dirty_)
  // `key` (a view of the index's copy) has a node newer than its access record. Nothing to write
  // when the store is not durable.
  void mark_dirty(std::string_view key) {
    if (durable_ && dirty_.insert(key).second) dirty_size_.fetch_add(1, std::memory_order_relaxed);
  }

  // Index maintenance (under mu_). link/unlink add a node to / take it from the policy's order,
  // the expiry and category structures and the totals; the key's entry in index_ stays.
  // count: also add the node to entries_ / bytes_ (the index load recounts them at its end).
  // keep_place: the node keeps its place in the policy's order (Policy::keeps_place).
  void link(Index::iterator it, bool count = true, bool keep_place = false);
  void unlink(Index::iterator it, bool keep_place = false);
  void erase_node(Index::iterator it);
  void upsert_node(std::string_view key, Node node, std::string_view category);
  const std::string* intern(std::string_view category);
  void clear_index();
  // A node as the index loads it from an access record (the policy's place filled in).
  Node load_node(const AccessRecord& a) const;

  void apply_pending_locked();
  kv::Status persist_dirty_locked(std::size_t max_keys);
  kv::Status flush_access_locked();
  // What open found to do once the counters are read: load the index from the access records,
  // then check the stored totals, limits and policy against it.
  struct LoadPlan {
    bool load = false;
    std::uint64_t stored_entries = 0, stored_bytes = 0;
    std::string stored_limits, stored_policy;
  };
  kv::Status open_locked(LoadPlan* plan);
  // `lock`: the loader's hold of mu_, released between pages (null: load in one hold).
  kv::Status finish_load_locked(const LoadPlan& plan,
                                std::unique_lock<util::AdaptiveMutex>* lock = nullptr);
  // *before_entries / *before_bytes: the totals just before the recount (the stored ones, moved
  // by the writes made during the load).
  kv::Status load_index_locked(bool* needs_rebuild, std::uint64_t* before_entries,
                               std::uint64_t* before_bytes,
                               std::unique_lock<util::AdaptiveMutex>* lock);
  // One access record into the index as the load puts it there (not counted in the totals),
  // unless the key is in the index already.
  void load_record_locked(std::string_view key, const AccessRecord& a);
  // While loading_: puts `key`'s access record into the index if the scan has not reached it
  // yet. False when the record cannot be read or decoded (left to the load).
  bool load_key_locked(std::string_view key);
  Txn new_txn();
  void remove_in_txn(Txn& t, std::string_view key, const Node& node,
                     EventKind why = EventKind::remove);
  bool over_limits(const Txn& t) const;
  // Plans removals until the limits hold: expired and invalid entries first, in expiry order,
  // then live entries in the policy's order. Never removes `keep`.
  void evict_locked(Txn& t, std::int64_t now_ns, const Keep& keep);
  kv::Status set_locked(std::span<const SetItem> items, std::int64_t now_ns, SetOutcome* outcome);
  kv::Status commit(Txn& t);
  kv::Status remove_locked(std::string_view key, bool* removed);
  // Plans marking `key` invalid (counted in t.invalidations) unless it is not stored or is
  // invalid already.
  void invalidate_locked(Txn& t, std::string_view key);
  kv::Status rebuild_locked();
  void write_meta(kv::Batch& batch);
  std::string limits_record() const;
  std::string limits_record(std::uint64_t max_entries, std::uint64_t max_bytes) const;
  kv::Status apply_limits_locked(std::uint64_t max_entries, std::uint64_t max_bytes, bool admin,
                                 std::int64_t now_ns, std::size_t* evicted);
  std::uint64_t max_entries() const { return max_entries_.load(std::memory_order_relaxed); }
  std::uint64_t max_bytes() const { return max_bytes_.load(std::memory_order_relaxed); }

  std::unique_ptr<kv::Kv> kv_;
  Options options_;  // as configured; the limits in force are max_entries_ and max_bytes_
  std::unique_ptr<PolicyHostImpl> host_;
  std::unique_ptr<Policy> policy_;  // the eviction order (policy.hpp); under mu_
  std::atomic<std::uint64_t> max_entries_, max_bytes_;
  std::atomic<bool> admin_limits_{false};
  std::shared_ptr<std::atomic<std::int64_t>> watermark_;
  Counters* counters_;
  const util::Logger* log_;
  // The store outlives the process (kv::Kv::durable). When it does not (the memory store), access
  // records, totals and ghosts are kept in the index only: nothing would ever read them back.
  const bool durable_;
  // The family keys() lists: the small access records, or the entries where there are none.
  kv::Cf keys_family() const { return durable_ ? kv::Cf::access : kv::Cf::entries; }

  util::AdaptiveMutex mu_;       // serializes every write and every use of the index below
  std::atomic<int> waiting_{0};  // foreground calls waiting for mu_
  std::atomic<std::uint64_t> entries_{0}, bytes_{0}, tick_{0};
  Index index_;             // under mu_
  std::string entry_head_;  // under mu_: a set's scratch for the header of the entry it writes
  // (expiry_t, slot id) of each node with a TTL or invalid (0), in (expiry_t, key) order.
  absl::btree_set<std::pair<std::uint64_t, Index::Id>, ExpiryLess> expiry_{ExpiryLess{&index_}};
  absl::node_hash_map<std::string, std::uint64_t, Hash, std::equal_to<>>
      cats_;  // category -> entries; under mu_
  absl::flat_hash_set<std::string_view, Hash, std::equal_to<>>
      dirty_;  // keys with unpersisted hits
  std::atomic<std::size_t> dirty_size_{0};
  std::vector<std::string> open_problems_;  // what open found and did not repair; under mu_
  // The store says format 2 (no merge operands): commit writes format 3 with the first ones.
  bool format_relabel_ = false;  // under mu_

  std::array<Shard, 16> shards_;
  std::atomic<std::size_t> pending_size_{0};
  std::atomic<bool> flush_requested_{false};
  AccessFlusher* flusher_ = nullptr;
  EventSink* sink_ = nullptr;
  std::thread loader_;  // loads the index after open() returned; joined by the destructor
  // Under mu_: true while loader_ loads; keys below load_cursor_ are in the index (the scan has
  // passed them), the others only if a write loaded them (load_key_locked).
  bool loading_ = false;
  std::string load_cursor_;
  std::condition_variable_any loaded_cv_;  // loading_ became false
  std::atomic<int> load_waiters_{0};       // calls waiting in wait_loaded()
};

}  // namespace larder::engine
