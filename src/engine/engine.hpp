// The cache engine: entries, access data, eviction-order / expiry / category indexes and counters
// kept over a kv::Kv, with exact LRU / LFU / FIFO / TTL-only eviction under entry and byte limits.
// The same code runs over RocksDB and over memory, which is what makes both stores behave alike.
//
// Invariants (see docs/ARCHITECTURE.md):
//  - every stored key has one entries record, one access record, one category-index record, one
//    order-index record (unless the policy is ttl) and, when it has a ttl or is invalid, one
//    expiry-index record; counters["entries"/"bytes"/"c/<category>"] equal their sums. All of a
//    key's records and the counters change in one atomic batch.
//  - every live order-index key is >= order_floor_ and every live expiry key >= expiry_floor_.
//  - no stored entry has an expired-at time below the drop watermark (the compaction filter
//    physically drops records below it, which are all already deleted).
//
// Thread-safety: every public function may be called from many threads at once. Reads do not
// take the write mutex; writes are serialized by it. Hits are recorded in a sharded in-memory
// buffer, applied in batches (every kAccessFlushBatch keys, by the AccessFlusher when one is
// set, before choosing victims, on cleanup, on flush_access() and in the destructor).
#pragma once

#include <array>
#include <atomic>
#include <cstdint>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "engine/records.hpp"
#include "kv/kv.hpp"
#include "larder/larder.hpp"
#include "stats/counters.hpp"
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
  std::int64_t default_ttl_s = 0;
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

enum class SetOutcome : std::uint8_t { stored, too_large, full };

// What verify() found. `problems` is empty for a consistent store.
struct VerifyReport {
  std::uint64_t entries = 0, bytes = 0;  // as counted by the scan
  std::vector<std::string> problems;     // one line each, naming the key or counter
};

inline constexpr std::size_t kAccessFlushBatch = 1024;
// Eviction candidates read per order-index scan (Engine::victims_).
inline constexpr std::size_t kVictimBatch = 64;

// Applies an engine's buffered hits off the reading threads (the Backend's housekeeper).
class AccessFlusher {
 public:
  virtual ~AccessFlusher() = default;
  // Called from a reading thread when a batch of hits is ready: arrange for
  // Engine::flush_access() soon and return at once.
  virtual void flush_soon() = 0;
};

// What a read returns: the entry's header only (exists, metadata), or its value too.
enum class Want : std::uint8_t { header, value };

class Engine {
 public:
  // `watermark` is shared with the compaction filter made by drop_predicate().
  Engine(std::unique_ptr<kv::Kv> kv, Options options,
         std::shared_ptr<std::atomic<std::int64_t>> watermark, Counters* counters,
         const util::Logger* log);
  ~Engine();
  Engine(const Engine&) = delete;
  Engine& operator=(const Engine&) = delete;

  // Loads the counters (no scan) and rebuilds the indexes when the policy or stale factor changed
  // since the last open or a rebuild was interrupted; records changed limits or default TTL.
  // Fails on I/O trouble or a newer format.
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

  kv::Status set(std::string_view key, std::string_view value, std::int64_t ttl_s,
                 std::string_view category, const std::map<std::string, std::string>& metadata,
                 std::int64_t now_ns, SetOutcome* outcome);
  kv::Status remove(std::string_view key, bool* removed);
  // Removes an entry whose record does not decode, with its index records when its access record
  // is intact (else only the raw records; verify/rebuild repair the rest).
  kv::Status drop_corrupt(std::string_view key);
  kv::Status remove_keys(const std::vector<std::string>& keys, std::size_t* removed);
  kv::Status invalidate_keys(const std::vector<std::string>& keys, std::size_t* marked);
  kv::Status clear(std::size_t* removed);
  // Removes every expired or invalid entry; *removed says how many.
  kv::Status cleanup(std::int64_t now_ns, std::size_t* removed);

  // Stored keys (any status) starting with `prefix`, in key order.
  kv::Status keys(std::string_view prefix, std::vector<std::string>* out);
  kv::Status keys_in_category(std::string_view category, std::vector<std::string>* out);
  kv::Status status_counts(std::int64_t now_ns, StatusCounts* out);

  // Applies buffered hits now.
  kv::Status flush_access();
  bool has_pending_access() const { return pending_size_.load(std::memory_order_relaxed) > 0; }
  // Who applies batches of hits (nullptr: readers apply them themselves). Set before use; it
  // must outlive the engine's use of it.
  void set_access_flusher(AccessFlusher* flusher) { flusher_ = flusher; }
  // Checks every invariant above against the stored records (a full scan; applies buffered hits
  // first). Fails only when the store cannot be read.
  kv::Status verify(VerifyReport* report);
  // Rebuilds access records, indexes and counters from the entries family.
  kv::Status rebuild();
  // Compacts every column family (reclaims the space of deleted records; no-op in memory).
  kv::Status compact();

  std::uint64_t entries() const { return entries_.load(); }
  std::uint64_t bytes() const { return bytes_.load(); }
  std::map<std::string, std::uint64_t> categories();
  const Options& options() const { return options_; }
  kv::Kv& kv() { return *kv_; }

 private:
  struct Pending {
    std::uint64_t count = 0;
    std::uint64_t tick = 0;
    std::int64_t ns = 0;
  };
  struct Hash {
    using is_transparent = void;
    std::size_t operator()(std::string_view s) const { return std::hash<std::string_view>{}(s); }
  };
  struct Shard {
    std::mutex mu;
    std::unordered_map<std::string, Pending, Hash, std::equal_to<>> map;
  };
  struct Txn;

  Shard& shard_of(std::string_view key);
  Pending take_pending(std::string_view key);
  std::unordered_map<std::string, Pending, Hash, std::equal_to<>> drain_pending();

  kv::Status flush_access_locked();
  kv::Status open_locked();
  kv::Status load_access(std::string_view key, AccessRecord* out, bool* found);
  void remove_in_txn(Txn& t, std::string_view key, const AccessRecord& access);
  bool over_limits(const Txn& t) const;
  enum class Pass : std::uint8_t { expired, policy };
  kv::Status evict(Txn& t, Pass pass, std::int64_t now_ns, std::string_view keep);
  kv::Status commit(Txn& t);
  // Puts an order-index key in `t`, noting whether it lands below the eviction candidates.
  void put_order(Txn& t, std::string_view key);
  kv::Status remove_locked(std::string_view key, bool* removed);
  kv::Status invalidate_locked(Txn& t, std::string_view key, bool* marked);
  kv::Status rebuild_locked();
  void write_meta(kv::Batch& batch);
  std::string limits_record() const;

  std::unique_ptr<kv::Kv> kv_;
  Options options_;
  std::shared_ptr<std::atomic<std::int64_t>> watermark_;
  Counters* counters_;
  const util::Logger* log_;

  std::mutex mu_;  // serializes every write
  std::atomic<std::uint64_t> entries_{0}, bytes_{0}, tick_{0};
  std::map<std::string, std::uint64_t> cats_;  // under mu_
  std::string order_floor_, expiry_floor_;     // under mu_
  // The next eviction candidates of the policy pass: order keys in ascending order, read by one
  // scan and checked against their access records when used. Invariant: every live order key
  // below victims_.back() is in it (an order key put below that empties it). Under mu_.
  std::deque<std::string> victims_;

  std::array<Shard, 16> shards_;
  std::atomic<std::size_t> pending_size_{0};
  std::atomic<bool> flush_requested_{false};
  AccessFlusher* flusher_ = nullptr;
};

}  // namespace larder::engine
