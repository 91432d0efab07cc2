// larder: an embedded, persistent key-value cache.
//
// This is the whole public API. A program opens a cache with Cache::open(Config) (or one of the
// helpers at the bottom) and gets a persistent cache with TTL and entry status, categories,
// per-entry metadata, invalidation by key / category / glob, eviction under entry and byte limits
// (LRU, LFU, FIFO or TTL-only) and statistics that survive restarts.
//
// Thread-safety: every member function of Cache may be called from many threads at once. A Cache
// is movable, not copyable; a moved-from Cache may only be destroyed or assigned to. Opening the
// same directory twice in one process gives two handles on one underlying store.
//
// Shared caches (Strategy::shared): the processes that open one cache_root elect an owner with an
// flock; the owner keeps the store open and serves the others over a Unix socket, and a client
// takes over when the owner exits or dies. Calls behave the same in owner and clients; a client's
// call waits at most lock_timeout and then degrades (miss / false / 0, counted and logged). See
// docs/shared.md.
//
// fork(): a child process must not use a Cache opened before the fork. In the child such a
// handle is degraded (isolated: memory only; shared: calls fail) and destroying it leaves the
// parent's store untouched. Open a new Cache in the child: a shared cache works as a client of
// the owner. RocksDB cannot run in a child forked (without exec) from a process that had a store
// open, so there a process_isolated cache is a memory cache (degraded, last_error() says why);
// exec to get a store. larder makes such children skip RocksDB's static destructors at exit()
// (they would hang); see docs/shared.md.
//
// Faults: reads never throw because of I/O errors or corruption; they miss, count an error and
// log through Config::log. Only bad arguments throw (ConfigError, std::invalid_argument), and
// get_or_compute passes on what its compute function throws.
#pragma once

#include <chrono>
#include <cstdint>
#include <filesystem>
#include <functional>
#include <initializer_list>
#include <map>
#include <memory>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace larder {

// Where a cache keeps its data.
enum class Strategy : std::uint8_t {
  process_isolated = 0,  // <cache_root>/proc_<pid>/: one store per process
  shared = 1,            // <cache_root>/: one store for cooperating processes
  disabled = 2,          // memory only, nothing on disk, same semantics
};

// Which live entries go first when a limit is exceeded. Persisted in the store (explicit values).
enum class EvictionPolicy : std::uint8_t {
  lru = 0,   // least recently set or read
  lfu = 1,   // lowest access count, ties to the least recently accessed
  fifo = 2,  // oldest insertion; reads do not reorder
  ttl = 3,   // never evict live entries: refuse the set instead
  // S3-FIFO (Yang et al., SOSP 2023): a small FIFO queue for new entries, a main FIFO queue for
  // entries read again, and a ghost queue of keys recently evicted from the small one. A hit
  // only bumps a counter (nothing moves), so reads are cheaper than under lru.
  s3fifo = 4,
};

enum class EntryStatus : std::uint8_t {
  fresh = 0,    // age < ttl (or no ttl)
  stale = 1,    // ttl <= age < stale_factor x ttl
  expired = 2,  // age >= stale_factor x ttl
  invalid = 3,  // invalidated; stays until set again or removed by cleanup
};

enum class LogLevel : std::uint8_t { debug = 0, info = 1, warn = 2, error = 3 };

// Thrown by Cache::open and Config::from_env. what() names the offending field or variable.
class ConfigError : public std::invalid_argument {
 public:
  using std::invalid_argument::invalid_argument;
};

inline constexpr std::uint64_t kMiB = 1024 * 1024;
// Longest key accepted by set(); longer keys are refused (set returns false, reads miss).
inline constexpr std::size_t kMaxKeyBytes = 4096;
// Longest category name accepted by set(); categories may not contain a NUL byte.
inline constexpr std::size_t kMaxCategoryBytes = 255;
// Longest namespace name (Cache::ns); names are not empty and contain no NUL byte.
inline constexpr std::size_t kMaxNamespaceBytes = 255;

struct Config {
  // Empty: the per-user default ($XDG_CACHE_HOME/larder, else ~/.cache/larder).
  std::filesystem::path cache_root;
  Strategy strategy = Strategy::process_isolated;
  std::uint64_t max_size_bytes = 500 * kMiB;  // sum of value sizes; 0 = unlimited
  std::uint64_t max_entries = 10'000;         // 0 = unlimited
  // 0 = entries never expire. Milliseconds: seconds, minutes and hours convert implicitly.
  std::chrono::milliseconds default_ttl = std::chrono::hours(24);
  EvictionPolicy eviction_policy = EvictionPolicy::lru;
  std::chrono::seconds cleanup_interval = std::chrono::minutes(5);  // 0 = no periodic cleanup
  bool enable_statistics = true;  // false: no .cache_stats.json is read or written
  // shared: take part in the owner election (true), or open the store directly as its only
  // user (false: if another process holds it, the cache is a degraded memory cache).
  bool use_file_locking = true;
  // The longest a call waits for another process (owner election, connection, reply; taking a
  // process_isolated directory's liveness lock). Shared-cache clients wait at least 10 ms.
  std::chrono::milliseconds lock_timeout = std::chrono::seconds(5);
  double stale_factor = 2.0;  // stale until stale_factor x TTL, then expired; must be >= 1
  // Empty: the system clock. Tests inject one to control time without sleeping. Called from any
  // thread that uses the cache and from its housekeeping thread, concurrently: it must be
  // thread-safe, cheap and must not call back into the cache.
  std::function<std::chrono::system_clock::time_point()> clock;
  // Empty: std::chrono::steady_clock. The monotonic time that decides when something is due:
  // the store's circuit breaker and the remote tier's retry pauses, lease expiry, a shared-cache
  // client's fail-fast window. Tests inject one (with `clock`) to move time without sleeping;
  // waits on sockets and locks still take real time. The same rules as `clock` apply.
  std::function<std::chrono::steady_clock::time_point()> monotonic_clock;
  // Receives the cache's log lines. Empty: silent, unless LARDER_LOG=debug|info|warn|error is set,
  // in which case lines at that level and above go to stderr. Called from any thread that uses
  // the cache, from its housekeeping and index-loading threads and (shared caches) from the
  // owner's server threads, concurrently and sometimes with internal locks held: it must be
  // thread-safe and must not call back into the cache. What it throws is ignored.
  std::function<void(LogLevel, std::string_view)> log;
  // Open an existing store for inspection: reads work (recording no access; the view counts
  // nothing itself, its stats() show every other process's counters), every write
  // returns false or 0, and nothing on disk changes (no directory, lock, statistics or access
  // data is written; a damaged store is reported, not repaired). The store's own limits, policy
  // and default TTL are used. A shared cache is read directly, also while another process owns
  // it, without taking part in the owner election. A root that holds no store gives a degraded
  // memory cache (degraded() is true, last_error() says why). process_isolated caches cannot be
  // opened read-only (ConfigError): their store belongs to one process.
  bool read_only = false;
  // A remote tier shared by caches on other machines (docs/remote.md). Empty: none.
  //   redis://[[user:]password@]host[:port][/db][?options]
  //   redis+unix://[[user:]password@]/path/to/socket[?db=N&options]
  // Options: prefix=NAME (default larder; caches naming the same prefix share one remote
  // keyspace, different prefixes never see each other's keys), connect_timeout=MS (default
  // 100), operation_timeout=MS (default 1000), read_only=1 (read the remote, never write it),
  // secret_file=PATH (a 0600 file whose secret signs every record; unsigned or wrongly signed
  // records are misses), outage=local|miss (while the change listener is disconnected, serve
  // local copies, the default, or misses).
  // A get that misses locally asks the remote; a remote hit is stored locally with its remaining
  // lifetime. Writes go to both. A remote that is down, slow or refusing is bypassed (counted
  // as remote_error_count); calls then use the local tier only. A URL that cannot be parsed
  // throws ConfigError naming `remote`; a build without Redis support opens without the tier
  // (last_error() says so). Not used by a read_only cache.
  std::string remote;

  // Defaults overridden by LARDER_CACHE_ROOT, LARDER_STRATEGY (process_isolated|shared|disabled),
  // LARDER_MAX_SIZE_MB, LARDER_MAX_ENTRIES, LARDER_DEFAULT_TTL (decimal seconds),
  // LARDER_EVICTION_POLICY (lru|lfu|fifo|ttl|s3fifo), LARDER_REMOTE (a URL, as `remote`) and
  // LARDER_DISABLED=1.
  // Throws ConfigError naming the variable when a value cannot be parsed.
  static Config from_env();
};

struct SetOptions {
  // nullopt: default_ttl; 0: never expires; < 0 throws. Exact to the millisecond (status,
  // expires_at, the remote's expiry); any std::chrono duration of whole milliseconds or coarser.
  std::optional<std::chrono::milliseconds> ttl;
  std::string category = "default";
  std::map<std::string, std::string> metadata;
};

// How get_or_compute computes a missing value.
struct ComputeOptions {
  // Stale-while-revalidate. A stale entry (past its TTL, within stale_factor x TTL) is returned
  // at once to every caller but one: of the concurrent callers for the key in one process (any
  // thread), the first recomputes it if its process gets the compute lease (one compute across
  // the processes of a shared cache), stores the result and returns it (the compute runs on the
  // caller's thread: `compute` never outlives the call); without the lease it returns the stale
  // value too. A caller that finds no stale entry waits for that compute.
  bool serve_stale = false;
  // The longest one process's compute holds the key for the others: they wait for its value,
  // or this long, then compute themselves. A holder that dies loses its lease at once.
  std::chrono::milliseconds lease_timeout = std::chrono::seconds(30);
};

struct EntryInfo {
  std::string key;
  std::string category;
  EntryStatus status = EntryStatus::fresh;
  std::uint64_t size_bytes = 0;                      // value bytes
  std::chrono::system_clock::time_point created_at;  // time of the last set
  std::chrono::system_clock::time_point last_accessed;
  std::optional<std::chrono::system_clock::time_point>
      expires_at;  // created_at + ttl; none: no ttl
  std::uint64_t access_count = 0;
  std::map<std::string, std::string> metadata;
  // Both are computed against the cache's clock at the time the info was read.
  std::chrono::system_clock::time_point observed_at;

  // Seconds between created_at and the moment the info was read.
  double age_seconds() const;
  // Seconds until expires_at (negative once past); nullopt when the entry has no ttl.
  std::optional<double> remaining_ttl_seconds() const;
};

struct Entry {
  std::string value;
  EntryInfo info;
};

// What Cache::stats() returns. Counters (the *_count fields) add up every process that used the
// cache directory, across restarts, since the statistics were last zeroed; the other fields
// describe the store now. These names are the ones every output uses (.cache_stats.json,
// `cachectl stats` in text, JSON and Prometheus).
struct Stats {
  std::uint64_t hit_count = 0;         // reads (get, get_many, get_entry...) that returned an entry
  std::uint64_t miss_count = 0;        // reads that returned nothing (absent, not fresh, failed)
  std::uint64_t set_count = 0;         // entries stored (set, set_many items, computed values)
  std::uint64_t delete_count = 0;      // entries removed by remove, clear and clear_category
  std::uint64_t eviction_count = 0;    // live entries removed to keep the limits
  std::uint64_t expiration_count = 0;  // expired entries removed (cleanup, limit enforcement)
  std::uint64_t invalidation_count = 0;  // entries marked invalid (once each)
  std::uint64_t error_count = 0;         // I/O errors, corrupt data, timeouts, refused writes
  std::uint64_t cleanup_count = 0;       // cleanup runs (cleanup() and the periodic one)
  std::uint64_t remote_hit_count = 0;    // local misses the remote tier answered (Config::remote)
  std::uint64_t remote_miss_count = 0;   // local misses the remote tier did not have either
  std::uint64_t remote_error_count = 0;  // calls that needed the remote tier and could not use it
  std::uint64_t total_entries = 0;       // entries stored now, of any status
  std::uint64_t total_size_bytes = 0;    // bytes of the stored values
  std::uint64_t fresh_entries = 0;       // entries by status now (scans the expiry index)
  std::uint64_t stale_entries = 0;
  std::uint64_t expired_entries = 0;                // past stale_factor x ttl, not removed yet
  std::uint64_t invalid_entries = 0;                // invalidated, not removed yet
  std::map<std::string, std::uint64_t> categories;  // entries per category
  double hit_rate() const;   // percent of reads that hit; 0 when nothing was read
  double miss_rate() const;  // percent of reads that missed; 0 when nothing was read
};

// A change to a cache entry, delivered to subscribers (Cache::subscribe).
struct Event {
  enum class Kind : std::uint8_t {
    set = 0,         // stored (set, set_many, add, touch, incr, set_all, get_or_compute)
    remove = 1,      // removed (remove, clear, clear_category, cleanup of an invalid entry)
    invalidate = 2,  // marked invalid
    evict = 3,       // removed to keep the limits
    expire = 4,      // an expired entry removed (cleanup, limit enforcement)
  } kind;
  std::string key;  // as the subscribing handle's namespace knows it
};

// A live subscription (Cache::subscribe). Destroying it (or cancel()) unsubscribes: once that
// returns, its callback is not running and will not run again. Movable, not copyable.
class Subscription {
 public:
  Subscription() = default;
  Subscription(Subscription&&) noexcept;
  Subscription& operator=(Subscription&&) noexcept;
  Subscription(const Subscription&) = delete;
  Subscription& operator=(const Subscription&) = delete;
  ~Subscription();
  // Unsubscribes now (see above). Must not be called from the subscription's own callback.
  void cancel();
  // Events this subscription lost because it fell behind the bounded event log.
  std::uint64_t dropped() const;

  struct State;  // internal

 private:
  friend class Cache;
  explicit Subscription(std::shared_ptr<State> state);
  std::shared_ptr<State> state_;
};

class Cache {
 public:
  // Opens (creating if needed) the cache described by `config`. Throws ConfigError naming the bad
  // field when the configuration is invalid or the cache_root is unsafe (owned by another user,
  // writable by others). Never throws for I/O trouble: a corrupt store is moved aside and started
  // empty; an unusable directory gives a memory cache with degraded() == true. Returns once the
  // store is open; the in-memory eviction index of a stored cache then loads in the background
  // (about 3 s per million entries): reads are served at once, calls that need the index (writes,
  // stats(), metadata) wait for it.
  static Cache open(const Config& config);

  Cache(Cache&&) noexcept;
  Cache& operator=(Cache&&) noexcept;
  Cache(const Cache&) = delete;
  Cache& operator=(const Cache&) = delete;
  ~Cache();

  // Stores `value` under `key`. Returns true when stored; false for an empty or too long key, a
  // bad category, a value larger than max_size_bytes, a TTL-policy cache that is full of live
  // entries, or a storage failure. Throws std::invalid_argument for a negative ttl.
  bool set(std::string_view key, std::string_view value, const SetOptions& options = {});
  // The value of a fresh entry; nullopt otherwise (missing, stale, expired, invalid, error).
  std::optional<std::string> get(std::string_view key);
  // get() of every key, in order. A shared-cache client sends them in one round trip.
  std::vector<std::optional<std::string>> get_many(const std::vector<std::string>& keys);
  // set() of every (key, value) with the same options, in order; element i is what set() would
  // have returned for item i. A shared-cache client sends them in one round trip. Throws
  // std::invalid_argument for a negative ttl (nothing is stored then).
  std::vector<bool> set_many(const std::vector<std::pair<std::string, std::string>>& items,
                             const SetOptions& options = {});
  // Atomic primitives. Each is atomic with respect to every other call on the store, from any
  // thread or process (a shared cache's owner runs them for its clients); each is one batch.
  // With a remote tier, add, touch, incr, compare_and_set and get_and_touch are decided by the
  // remote (a compare-and-set on
  // Redis), so they are atomic across every machine sharing it; while Redis cannot be used they
  // run on this machine's store alone (docs/remote.md).
  //
  // Stores `value` only if no fresh entry is stored under `key` (a stale, expired or invalid one
  // is replaced). Returns true when stored; false when a fresh entry exists, and for what makes
  // set() return false. Throws std::invalid_argument for a negative ttl.
  bool add(std::string_view key, std::string_view value, const SetOptions& options = {});
  // Gives the fresh entry under `key` a new TTL counted from now (0s: never expires); value,
  // category and metadata stay, created_at becomes now. Returns true when done; false when no
  // fresh entry is stored (or the write failed). Throws std::invalid_argument for a negative ttl.
  bool touch(std::string_view key, std::chrono::milliseconds ttl);
  // Adds `delta` to the integer stored under `key` as decimal text and returns the sum. A key
  // without a fresh entry counts as 0 and is created with `options`; an existing counter keeps
  // its lifetime (created_at and TTL), category and metadata. nullopt (nothing changed) when
  // the stored value is not a decimal 64-bit integer, the sum overflows, or the write failed.
  // Throws std::invalid_argument for a negative ttl.
  std::optional<std::int64_t> incr(std::string_view key, std::int64_t delta = 1,
                                   const SetOptions& options = {});
  // Stores `value` (with `options`, as set()) only if a fresh entry is stored under `key` and
  // its value equals `expected`, in one atomic step. Returns true when stored; false when no
  // fresh entry is stored, its value differs, and for what makes set() return false. Throws
  // std::invalid_argument for a negative ttl.
  bool compare_and_set(std::string_view key, std::string_view expected, std::string_view value,
                       const SetOptions& options = {});
  // The fresh value under `key`, with the entry's TTL renewed from now (0ms: never expires) in
  // the same step, as touch() renews it; counted as a hit or a miss like get(). nullopt on a
  // miss (no fresh entry) or when the renewal could not be written. Throws
  // std::invalid_argument for a negative ttl.
  std::optional<std::string> get_and_touch(std::string_view key, std::chrono::milliseconds ttl);
  // get_and_touch() returning the entry with its info as stored after the renewal.
  std::optional<Entry> get_entry_and_touch(std::string_view key, std::chrono::milliseconds ttl);
  // Stores every (key, value) with `options` in one batch, or nothing: true when all were
  // stored; false, storing none, when any item would make set() return false or the limits
  // cannot hold them all. Eviction to make room never chooses one of the items' keys. A key
  // given twice is stored with its last value. Throws std::invalid_argument for a negative ttl.
  bool set_all(const std::vector<std::pair<std::string, std::string>>& items,
               const SetOptions& options = {});
  // get(key), or `fallback` on a miss.
  std::string get_or(std::string_view key, std::string_view fallback);
  // The entry with its info. Fresh entries only, unless include_stale: then any stored status.
  std::optional<Entry> get_entry(std::string_view key, bool include_stale = false);
  // True if a fresh entry is stored. Records no access and counts no hit or miss.
  bool exists(std::string_view key);
  // Info of a stored entry of any status; nullopt if none. Records no access, counts nothing.
  std::optional<EntryInfo> metadata(std::string_view key);
  // Removes the entry. Returns true if it was stored.
  bool remove(std::string_view key);
  // Removes every entry; returns how many were removed.
  std::size_t clear();
  // Removes every entry of `category`; returns how many were removed.
  std::size_t clear_category(std::string_view category);
  // Marks the entry invalid until it is set again. Returns true if a valid entry was marked.
  bool invalidate(std::string_view key);
  // Marks every valid entry of `category` invalid; returns how many were marked.
  std::size_t invalidate_category(std::string_view category);
  // Marks every valid entry whose key matches the glob ('*', '?', '[...]', '\' escapes) invalid;
  // returns how many. Throws std::invalid_argument for an empty pattern.
  std::size_t invalidate_pattern(std::string_view glob);
  std::vector<std::string> keys();  // stored entries of any status, in key order
  std::vector<std::string> keys_in_category(std::string_view category);  // any status, key order
  // Removes expired and invalid entries; returns how many were removed.
  std::size_t cleanup();
  // Counters and current totals of the whole store (every namespace; see ns() for a namespace
  // handle's). The status counts scan the expiry index (entries with a TTL or invalid): about
  // 0.2 s per million such entries; everything else is read from counters.
  Stats stats();
  // Persists statistics and buffered access data now.
  void flush();
  // The fresh value of `key`, or the result of `compute()`, which is then stored with `options`.
  // Concurrent callers for the same missing key compute once: in one process, and across the
  // processes of a shared cache (the owner grants one process a compute lease; the others wait
  // for its value, see ComputeOptions). An exception from `compute` reaches every caller waiting
  // in its process and nothing is cached (the lease ends: another process computes).
  std::string get_or_compute(std::string_view key, const std::function<std::string()>& compute,
                             const SetOptions& options = {});
  // The same with ComputeOptions (serve_stale, lease_timeout). Throws std::invalid_argument for
  // a negative ttl or lease_timeout.
  std::string get_or_compute(std::string_view key, const std::function<std::string()>& compute,
                             const SetOptions& options, const ComputeOptions& compute_options);

  // Stores `value` serialized with cereal's binary archive (native byte order: a cache is per
  // machine). Returns as set(). Defined in <larder/object.hpp> (include it to use these two;
  // larder.hpp itself does not need cereal).
  template <class T>
  bool set_object(std::string_view key, const T& value, const SetOptions& options = {});
  // The deserialized fresh value; nullopt on a miss or when the bytes do not decode as T.
  template <class T>
  std::optional<T> get_object(std::string_view key);

  // A handle on the namespace `name` of the same store: a keyspace of its own, with the whole
  // Cache API. Keys never collide across namespaces nor with this unnamed one; keys(), clear(),
  // keys_in_category(), clear_category(), invalidate_category() and invalidate_pattern() stay
  // inside the namespace; entries get `default_ttl` (nullopt: this handle's default TTL).
  // Limits and eviction stay per store (a namespace's entries compete with all others).
  // stats() on a namespace handle counts that namespace: its entries, bytes, statuses and
  // categories now (a scan of its keys), and the hits, misses, sets, deletes and invalidations
  // made through its handles in this process (evictions and expirations are counted per store
  // only). ns() on a namespace handle gives another namespace of the store (they do not nest).
  // Throws std::invalid_argument for an empty name, one longer
  // than kMaxNamespaceBytes or containing NUL, and for a negative default_ttl. The handle
  // shares the store with this one and may outlive it.
  Cache ns(std::string_view name,
           std::optional<std::chrono::milliseconds> default_ttl = std::nullopt);

  // Calls `callback` for every change to an entry whose key (in this handle's namespace)
  // matches `glob`: sets, removals, invalidations, evictions and expirations made by this
  // process and, for a shared cache, by every process using it (the owner keeps the log; its
  // clients read it). Events arrive on a thread of the subscription's own, in commit order
  // (so per key in order), about every 10 ms (20 ms for a shared cache's client). The log is
  // bounded (65,536 events): a subscriber that falls that far behind loses the oldest events,
  // counted in Subscription::dropped(); writers never wait for subscribers. What the callback
  // throws is ignored; it must not call cancel() of its own subscription. After a shared
  // cache's takeover, events the old owner logged but did not deliver are lost (not counted).
  // Throws std::invalid_argument for an empty glob.
  Subscription subscribe(std::function<void(const Event&)> callback, std::string_view glob = "*");

  // True while the cache runs on memory only because its store could not be used (at open, or
  // while the circuit breaker bypasses a failing store). last_error() says why.
  bool degraded() const;
  std::string last_error() const;
  // The directory holding this cache's store and statistics file; empty for disabled caches.
  std::filesystem::path directory() const;

  // Signing of values whose decoding would run code, such as the Python module's pickles
  // (docs/python.md, "Security"): a reader decodes such a value only when its tag verifies.
  // value_tag returns the 32-byte HMAC-SHA256 tag of `bytes` under the key this cache signs
  // with: the remote tier's shared secret when its URL names a secret_file (machines with the
  // same secret accept each other's values), else this cache's own key, kept in
  // <cache_root>/value.key (32 random bytes, created on first use with mode 0600, never sent
  // anywhere; a disabled cache's key lives in memory). Never throws for I/O trouble: a key
  // file that cannot be used is logged and replaced by a key of this process only.
  std::string value_tag(std::string_view bytes);
  // True when `tag` is the tag of `bytes` under the shared secret or this cache's own key.
  bool value_tag_valid(std::string_view bytes, std::string_view tag);
  // Reports a stored value the caller refused to decode (an unsigned or wrongly signed pickle):
  // counted in error_count; the first report of a cache is logged (a warning naming the key,
  // `why`, and secret_file when none is configured).
  void report_untrusted_value(std::string_view key, std::string_view why);

  // Internal access for larder's own tools and tests (defined in src/api/access.hpp).
  struct Access;

 private:
  class Impl;
  explicit Cache(std::unique_ptr<Impl> impl);
  void count_decode_error(std::string_view key, std::string_view what);
  std::unique_ptr<Impl> impl_;
};

struct CacheKey {
  // Parts joined with ':'; ':' and '\' inside a part are escaped with '\'. Hierarchical keys made
  // this way work with invalidate_pattern("a:b:*").
  static std::string from_parts(std::initializer_list<std::string_view> parts);
  // "k=v&k=v" in key order ('=', '&' and '\' escaped): independent of insertion order.
  static std::string from_map(const std::map<std::string, std::string>& fields);
  // "file:<absolute path>:<size>:<mtime ns>": changes when the file's size or mtime changes;
  // "file:<absolute path>:missing" when it does not exist.
  static std::string from_path(const std::filesystem::path& path);
};

// The process-wide cache, opened with Config::from_env() on first use (thread-safe). Throws
// ConfigError if the environment holds an invalid value; later calls try again.
Cache& global_cache();
// A cache at the default root with the default limits.
Cache create_default_cache(Strategy strategy = Strategy::process_isolated,
                           bool use_file_locking = true);
// A memory-only cache (Strategy::disabled) with the given limits.
Cache create_memory_cache(std::uint64_t max_size_bytes = 100 * kMiB,
                          std::uint64_t max_entries = 10'000,
                          std::chrono::milliseconds default_ttl = std::chrono::hours(24));

// A TTL given as a decimal number of seconds (Python's `expire`, LARDER_DEFAULT_TTL, cachectl's
// --ttl) in milliseconds: rounded to the nearest millisecond, and a positive value below 1 ms is
// 1 ms (never 0, which means "never expires"). nullopt for NaN, infinity, a negative value or
// more than 1e12 seconds.
std::optional<std::chrono::milliseconds> ttl_from_seconds(double seconds);

// process_isolated housekeeping (Cache::open runs it for directories idle for a day; `cachectl
// gc` runs it on demand): removes the <cache_root>/proc_<pid> directories whose process is gone,
// proven by taking the directory's liveness lock (never guessed from pids), and that were last
// modified at least `min_age` ago. Empty cache_root: the default root. Returns the directories
// removed, or with dry_run those that would be. Never throws for I/O trouble: a directory that
// cannot be removed is left out (and logged through `log` when given).
std::vector<std::filesystem::path> collect_dead_process_dirs(
    const std::filesystem::path& cache_root = {},
    std::chrono::seconds min_age = std::chrono::seconds(0), bool dry_run = false,
    const std::function<void(LogLevel, std::string_view)>& log = {});

}  // namespace larder
