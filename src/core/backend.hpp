// One open cache store per directory per process: the engine over RocksDB (or memory), the
// circuit breaker that bypasses a failing store, statistics and their file, the housekeeping
// thread (periodic cleanup, statistics writes, access-data flushes) and single-flight state for
// get_or_compute. Cache handles share a Backend through the registry in backend.cpp.
//
// Thread-safety: every member function may be called from many threads at once.
#pragma once

#include <array>
#include <atomic>
#include <condition_variable>
#include <exception>
#include <functional>
#include <memory>
#include <mutex>
#include <span>
#include <string>
#include <thread>
#include <unordered_map>
#include <unordered_set>
#include <vector>

#include <absl/container/flat_hash_set.h>

#include "core/config.hpp"
#include "core/events.hpp"
#include "engine/engine.hpp"
#include "kv/kv.hpp"
#include "kv/rocks_kv.hpp"
#include "remote/tier.hpp"
#include "stats/counter_file.hpp"
#include "stats/stats_file.hpp"
#include "util/breaker.hpp"
#include "util/clock.hpp"
#include "util/lock_file.hpp"
#include "util/log.hpp"

namespace larder::core {

// Opens the primary store (tests inject failing stores through it). Default: RocksDB in
// <dir>/db, or memory for the disabled strategy.
using KvOpener =
    std::function<kv::Status(const Resolved&, const kv::RocksOptions&, std::unique_ptr<kv::Kv>*)>;

// process_isolated: directories of processes that are gone are removed on open past this age.
inline constexpr std::chrono::hours kCollectOnOpenAge{24};
inline constexpr int kBreakerThreshold = 5;  // consecutive I/O failures that open the breaker
inline constexpr std::chrono::seconds kBreakerRecovery{30};
// The least time (the cache's clock) between two recoveries attempted by refused writes.
inline constexpr std::chrono::seconds kInlineRecoverySpacing{1};
// Keys the breaker remembers one by one while bypassing; past that, the store is cleared when
// the breaker closes.
inline constexpr std::size_t kMaxTouched = 100'000;

// Marks the cache root for backup tools (CACHEDIR.TAG) and, for a shared cache, warns when the
// root is on a network or FUSE filesystem (flock and RocksDB's lock are not reliable there).
// Failures are logged, never fatal. Returns the network filesystem's name, if any.
std::optional<std::string> prepare_root(const Resolved& r, const util::Logger& log);

class Backend final : private engine::AccessFlusher {
 public:
  // Opens the store for `r`; never throws for I/O trouble (see Cache::open). Throws ConfigError
  // for an unsafe cache_root.
  static std::shared_ptr<Backend> open(const Resolved& r, const KvOpener& opener = {});
  ~Backend();
  Backend(const Backend&) = delete;
  Backend& operator=(const Backend&) = delete;

  // The engine one operation runs on, lent by begin() and returned with finish().
  struct Lease {
    engine::Engine* engine;
    bool primary;  // the primary store (not the memory fallback)
  };
  // What an operation wrote, for the keys the breaker remembers while bypassing the store.
  enum class Wrote : std::uint8_t {
    listed,      // the key given as `written` (none when it is empty)
    everything,  // anything (clear(), invalidations by category or pattern)
  };
  // The engine for one operation: the primary store, or memory while the breaker is open.
  Lease begin();
  // Reports an operation's outcome: counts and logs failures, drives the breaker, and remembers
  // keys written while bypassing.
  void finish(const Lease& lease, const kv::Status& s, std::string_view what,
              std::string_view written = {}, Wrote scope = Wrote::listed);
  // The same for an operation that wrote each of `written` (set_all).
  void finish(const Lease& lease, const kv::Status& s, std::string_view what,
              std::span<const std::string> written);
  // Counts one public operation; every 100th asks the housekeeper to write the statistics file.
  void note_call();

  std::int64_t now_ns() const;
  // The monotonic clock (Config::monotonic_clock) of breakers, leases and pauses.
  const util::MonotonicClock& monotonic_clock() const { return mono_; }
  std::chrono::system_clock::time_point now() const;
  const Resolved& resolved() const { return r_; }
  const util::Logger& log() const { return log_; }
  // This process's counters for the directory (in its counter file when statistics are kept).
  engine::Counters& counters() { return *counters_; }
  engine::Engine& primary() { return *primary_; }
  // Every change committed to the store (or the memory fallback), for subscribers.
  EventLog& events() { return events_; }

  bool degraded() const { return degraded_at_open_ || breaker_.open() || inherited(); }
  // True in a child process forked after this Backend was opened: the store, its file locks
  // and the housekeeping thread belong to the parent, so operations use memory and destruction
  // leaks instead of closing the parent's store.
  bool inherited() const;
  std::string last_error() const;
  void set_last_error(std::string message);

  // The counters of every process that used this directory (stats/counter_file.hpp): the
  // statistics file plus what every counter file holds beyond it. Only this process's counters
  // when statistics are disabled or there is no directory.
  void counter_totals(Stats* out);
  // Folds the counters into the statistics file now. Returns an empty string on success, else
  // why not (no counter file: statistics disabled, read-only or degraded at open; I/O).
  util::Status save_stats(stats::FoldMode mode = stats::FoldMode::save);
  // The remote tier (Config::remote), or nullptr: none configured, a read-only view, a build
  // without Redis support, or an inherited (forked) Backend.
  remote::Tier* remote() const { return inherited() ? nullptr : remote_.get(); }
  // Whether a change from another cache that may concern `key` and comes after `at` in the
  // change stream has been applied here: then an entry fetched from the remote at `at` may be
  // older than that change and is not stored locally. (Changes up to `at` are in what was
  // fetched; one applied after the copy is stored removes it as usual.) Kept per key hash (256
  // slots) and for changes that may touch any key (categories, patterns, clears, gaps).
  bool remote_changed_since(std::string_view key, remote::StreamId at) const {
    std::lock_guard lock(remote_mu_);
    return remote_any_change_ > at || remote_key_change_[slot_of(key)] > at;
  }
  // True while the remote listener drops every local copy after a gap in the change stream:
  // from the moment fetched copies stop being kept (remote_changed_since) until the drop is
  // done, reads serve no local copy either (outage_miss), so a read never sees a copy fetched
  // after the gap next to one from before it. Cheap: an atomic load.
  bool dropping_copies() const { return dropping_copies_.load(std::memory_order_acquire) > 0; }
  // Tests: called by the listener once a gap is published and before the local copies are
  // dropped (nothing by default).
  void set_gap_hook_for_test(std::function<void()> hook) {
    std::lock_guard lock(remote_mu_);
    gap_hook_ = std::move(hook);
  }
  // Tests: called by get_entry with the key once it has stored a remote copy locally and before
  // it reads it back (nothing by default). The hook may remove the key, as the remote listener
  // may at that moment.
  void set_copy_stored_hook_for_test(std::function<void(std::string_view key)> hook) {
    std::lock_guard lock(remote_mu_);
    copy_stored_hook_ = std::move(hook);
  }
  // Calls the hook above, if any.
  void copy_stored_for_test(std::string_view key) {
    std::function<void(std::string_view)> hook;
    {
      std::lock_guard lock(remote_mu_);
      hook = copy_stored_hook_;
    }
    if (hook) hook(key);
  }
  // Remote copies a get has returned and not yet stored locally (docs/remote.md, "Near-cache
  // fills"): a get stores them while its own round trip to Redis is under way, and any other
  // local operation stores them first, so no local operation ever sees the store without them.
  // A fill is dropped if a remote change that may concern it (remote_changed_since) was applied
  // after it was fetched, or if its key has a fresh local entry by then. At most kMaxFills wait;
  // defer_fill() stores them all first when that many do.
  struct Fill {
    std::string key;
    remote::Entry entry;
    remote::StreamId at{};
  };
  static constexpr std::size_t kMaxFills = 256;
  void defer_fill(Fill fill);
  // Whether fills wait (cheap: an atomic load).
  bool has_fills() const { return has_fills_.load(std::memory_order_acquire); }
  // Whether a fill of `key` waits.
  bool fill_waits(std::string_view key);
  // Stores the waiting fills in one batch. Thread-safe; never called with the engine mutex held.
  void settle_fills();
  // The settings the store runs with (adopted from the store when asked, see Resolved).
  engine::Options engine_options() const { return primary_->options(); }

 private:
  explicit Backend(const Resolved& r);
  // engine::AccessFlusher: wakes the housekeeper to apply buffered hits.
  void flush_soon() override;
  // Holds r_.dir open so that its files are reached through r_.io() (config.hpp). Returns an
  // empty string on success, else why the directory cannot be opened.
  void start_housekeeper();
  // Starts the remote tier when one is configured (its failures are logged, never fatal).
  void start_remote();
  void housekeeper(util::MonotonicClock::time_point opened);
  bool try_recover();
  // One attempt to make the primary store writable again (the housekeeper's, or a refused
  // write's: see writes_failing_). Serialized by recovery_mu_; a no-op when another thread is
  // at it.
  void recover_writes();

  Resolved r_;
  util::Logger log_;
  util::LockFile alive_;             // process_isolated: the directory's liveness lock
  engine::Counters local_counters_;  // used without a counter file
  std::unique_ptr<stats::CounterFile> counter_file_;
  engine::Counters* counters_ = &local_counters_;
  std::shared_ptr<std::atomic<std::int64_t>> watermark_;
  EventLog events_;  // before the engines, which report to it
  std::unique_ptr<engine::Engine> primary_;
  std::unique_ptr<engine::Engine> fallback_;  // memory; serves while the breaker is open

  bool degraded_at_open_ = false;
  mutable std::mutex error_mu_;
  std::string last_error_;

  // The monotonic clock of the breaker and the housekeeper's decisions (Config::monotonic_clock).
  util::MonotonicClock mono_{r_.config.monotonic_clock};
  // Circuit breaker: open while the store is bypassed (memory serves).
  util::Breaker breaker_{{kBreakerThreshold, kBreakerRecovery, kBreakerRecovery}};
  // A write to the primary store failed (full disk, read-only filesystem, I/O error): sets are
  // refused (false) while reads go on from the store; the housekeeper asks the store to take
  // writes again (Engine::recover_store) with a growing pause, from 100 ms to 5 s, and a
  // refused write asks at once, at most once per kInlineRecoverySpacing of the cache's clock
  // (so that space freed on a small disk is used by the next write, not after that pause).
  std::atomic<bool> writes_failing_{false};
  std::atomic<std::int64_t> inline_recovery_at_ns_{0};
  std::mutex recovery_mu_;
  std::mutex breaker_mu_;                    // the bypass's recovery and the keys below
  std::unordered_set<std::string> touched_;  // keys written while bypassing
  // Writes served by memory while bypassing: never persisted; logged when the breaker closes.
  std::atomic<std::uint64_t> bypassed_writes_{0};
  bool touched_all_ = false;

  // Statistics file.
  std::mutex stats_mu_;
  std::atomic<std::uint64_t> ops_{0};

  // Housekeeping thread.
  std::mutex hk_mu_;
  std::condition_variable hk_cv_;
  bool hk_stop_ = false;
  bool hk_save_ = false;
  bool hk_flush_ = false;
  bool hk_recover_ = false;
  std::unique_ptr<std::thread> hk_;
  std::uint64_t fork_generation_ = 0;  // fork_generation() when opened
  static std::size_t slot_of(std::string_view key) {
    return std::hash<std::string_view>{}(key) % kRemoteSlots;
  }
  static constexpr std::size_t kRemoteSlots = 256;
  // Stores `fills` (taken from fills_) in one batch. Under settle_mu_.
  void store_fills(const std::vector<Fill>& fills);
  std::mutex settle_mu_;  // held while waiting copies are stored
  std::mutex fills_mu_;
  std::vector<Fill> fills_;                     // under fills_mu_
  absl::flat_hash_set<std::string> fill_keys_;  // their keys, under fills_mu_
  std::atomic<bool> has_fills_{false};
  mutable std::mutex remote_mu_;
  remote::StreamId remote_any_change_{};  // the last applied change of any key
  std::array<remote::StreamId, kRemoteSlots> remote_key_change_{};
  std::atomic<int> dropping_copies_{0};
  std::function<void()> gap_hook_;                          // under remote_mu_
  std::function<void(std::string_view)> copy_stored_hook_;  // under remote_mu_
  // Last: its listener thread reaches the members above; ~Backend stops it first.
  std::unique_ptr<remote::Tier> remote_;
};

}  // namespace larder::core
