// The operations behind a Cache handle. A Service is either local (LocalService: this process
// owns the store, or the cache is in memory) or the shared-strategy node (src/shared/node.hpp),
// which runs each call locally while this process owns the store and sends it to the owner
// over a Unix socket otherwise. Cache (cache.cpp) checks arguments and resolves the default
// TTL; everything else happens here, so owner and clients behave identically: the owner's
// server answers a client by calling the same LocalService functions.
//
// Thread-safety: every member function may be called from many threads at once.
#pragma once

#include <algorithm>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <exception>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <type_traits>
#include <unordered_map>
#include <utility>
#include <vector>

#include "core/events.hpp"
#include "larder/larder.hpp"
#include "remote/tier.hpp"
#include "stats/counters.hpp"

namespace larder::core {

class Backend;

// One set request with its TTL resolved (seconds; 0 = never expires).
struct SetRequest {
  std::string key;
  std::string value;
  std::int64_t ttl_ms = 0;
  std::string category = "default";
  std::map<std::string, std::string> metadata;
};

// A SetRequest that views the caller's bytes (they must outlive the call): a shared cache's
// client encodes its request straight from them, without a copy of the value of its own.
struct SetView {
  std::string_view key;
  std::string_view value;
  std::int64_t ttl_ms = 0;
  std::string_view category = "default";
  const std::map<std::string, std::string>* metadata = nullptr;  // null: none

  SetRequest request() const {
    SetRequest q;
    q.key = std::string(key);
    q.value = std::string(value);
    q.ttl_ms = ttl_ms;
    q.category = std::string(category);
    if (metadata != nullptr) q.metadata = *metadata;
    return q;
  }
};

// Namespaces (Cache::ns). A named namespace's keys are stored as "\0" + name + "\0" + key (a
// name is not empty and has no NUL). A key of the unnamed namespace is stored as it is, unless it
// starts with NUL: then with one more NUL in front ("\0\0..."), which no namespace's prefix
// has. A scope names the keyspace an enumerating call (keys, clear, patterns, categories) stays
// in: "" the unnamed namespace, a named namespace's prefix, or "\0" every named namespace.
inline std::string ns_prefix(std::string_view name) {
  std::string p(1, '\0');
  p.append(name);
  p.push_back('\0');
  return p;
}
inline bool in_scope(std::string_view key, std::string_view scope) {
  if (!scope.empty())
    return key.starts_with(scope) && (scope.size() > 1 || (key.size() > 1 && key[1] != '\0'));
  return !key.starts_with('\0') || key.starts_with(std::string_view("\0\0", 2));
}
// `key` of `scope` as stored, and back.
inline std::string stored_key(std::string_view scope, std::string_view key) {
  std::string k;
  const bool escape = scope.empty() && key.starts_with('\0');
  k.reserve(scope.size() + key.size() + (escape ? 1 : 0));
  k.append(scope);
  if (escape) k.push_back('\0');
  k.append(key);
  return k;
}
inline std::string_view user_key(std::string_view scope, std::string_view stored) {
  if (scope.empty()) return stored.starts_with('\0') ? stored.substr(1) : stored;
  return stored.substr(std::min(scope.size(), stored.size()));
}
// A scope a peer may send: "", "\0", or "\0" + a valid namespace name + "\0".
inline bool valid_scope(std::string_view scope) {
  if (scope.size() <= 1) return scope.empty() || scope[0] == '\0';
  if (scope.size() < 3 || scope.size() > kMaxNamespaceBytes + 2 || scope.front() != '\0' ||
      scope.back() != '\0')
    return false;
  return scope.substr(1, scope.size() - 2).find('\0') == std::string_view::npos;
}

// The one key rule (larder.hpp): a key a caller gives, in any namespace, is 1 to kMaxKeyBytes
// bytes. Cache, cachectl and trace readers check it on the key they are given.
inline bool valid_user_key(std::string_view key) {
  return !key.empty() && key.size() <= kMaxKeyBytes;
}
// A key as stored (stored_key) whose user key keeps the rule above: a key of the unnamed
// namespace (escaped when it starts with NUL), or "\0" name "\0" key with a valid name. What the
// owner checks on a peer's request.
inline bool valid_key(std::string_view stored) {
  if (!stored.starts_with('\0')) return valid_user_key(stored);
  if (stored.size() >= 2 && stored[1] == '\0') return valid_user_key(stored.substr(1));
  const std::size_t end = stored.find('\0', 1);
  if (end == std::string_view::npos || end - 1 > kMaxNamespaceBytes) return false;
  return valid_user_key(stored.substr(end + 1));
}
inline bool valid_category(std::string_view category) {
  return category.size() <= kMaxCategoryBytes && category.find('\0') == std::string_view::npos;
}
// A set a Service may carry out: valid key and category, a TTL that is not negative. The one
// check of every path (the public Cache, the owner's dispatch of a peer's request).
template <class S>
requires std::is_same_v<S, SetRequest> || std::is_same_v<S, SetView>
inline bool valid_set(const S& s) {
  return valid_key(s.key) && valid_category(s.category) && s.ttl_ms >= 0;
}

// Maintenance operations (cachectl). Explicit values: they travel in the shared protocol.
enum class AdminCommand : std::uint8_t {
  settings = 1,          // fields: what the store runs with and where
  verify = 2,            // lines: the problems found; count: how many
  repair = 3,            // rebuild indexes and counters, then verify (count: problems left)
  compact = 4,           // compact every column family
  evict_older_than = 5,  // remove entries created more than arg seconds ago; count: removed
  zero_stats = 6,        // zero the statistics and record when
  // Limits set by an administrator (Engine::set_limits), persisted in the store and used
  // instead of every opener's configured ones; count: entries evicted to meet them.
  set_max_entries = 7,  // arg: the entry limit (0: none)
  set_max_bytes = 8,    // arg: the byte limit (0: none)
  reset_limits = 9,     // the configured limits apply again
};
inline constexpr std::uint8_t kLastAdminCommand = 9;

struct AdminResult {
  bool ok = false;
  std::string error;  // !ok: why
  std::uint64_t count = 0;
  std::vector<std::string> lines;
  std::map<std::string, std::string> fields;
};

// The remote tier's hooks into the local tier (local_service.cpp; Backend::start_remote):
// applies a change another cache made (without counting it or sending it back), the local entry
// of a stored key as the remote keeps it, and drops every local copy (the change stream lost
// changes this cache did not see).
void apply_remote_change(Backend& b, const remote::Change& change);
std::optional<remote::Entry> local_entry_for_remote(Backend& b, std::string_view key);
// Removes every local entry but those `keep` holds for (after a gap in the remote change stream:
// the ones whose local write has not reached Redis yet).
void drop_local_copies(Backend& b, const std::function<bool(std::string_view)>& keep);

class Service {
 public:
  virtual ~Service() = default;

  // As the Cache functions of the same name (larder.hpp), with arguments already checked.
  virtual bool set(const SetRequest& request) = 0;
  // The same set from the caller's bytes. By default a SetRequest copy of them; a shared
  // cache's client encodes its request from the views instead.
  virtual bool set(const SetView& view) { return set(view.request()); }
  virtual std::optional<std::string> get(std::string_view key) = 0;
  virtual std::optional<Entry> get_entry(std::string_view key, bool include_stale) = 0;
  virtual bool exists(std::string_view key) = 0;
  virtual std::optional<EntryInfo> metadata(std::string_view key) = 0;
  virtual bool remove(std::string_view key) = 0;
  virtual std::size_t clear(std::string_view scope = {}) = 0;
  virtual std::size_t clear_category(std::string_view category, std::string_view scope = {}) = 0;
  virtual bool invalidate(std::string_view key) = 0;
  virtual std::size_t invalidate_category(std::string_view category,
                                          std::string_view scope = {}) = 0;
  virtual std::size_t invalidate_pattern(std::string_view glob, std::string_view scope = {}) = 0;
  virtual std::vector<std::string> keys(std::string_view scope = {}) = 0;
  virtual std::vector<std::string> keys_in_category(std::string_view category,
                                                    std::string_view scope = {}) = 0;
  virtual std::size_t cleanup() = 0;
  virtual Stats stats() = 0;
  virtual void flush() = 0;
  virtual std::vector<std::optional<std::string>> get_many(const std::vector<std::string>& keys);
  virtual std::vector<bool> set_many(const std::vector<SetRequest>& requests);
  // The atomic primitives, as the Cache functions of the same name; each is atomic with respect
  // to every other call on the store. incr ignores request.value.
  virtual bool add(const SetRequest& request) = 0;
  virtual bool touch(std::string_view key, std::int64_t ttl_ms) = 0;
  virtual std::optional<std::int64_t> incr(const SetRequest& request, std::int64_t delta) = 0;
  virtual bool set_all(const std::vector<SetRequest>& requests) = 0;
  // Stores `request` only if the fresh stored value equals `expected`.
  virtual bool compare_and_set(const SetRequest& request, std::string_view expected) = 0;
  // The fresh entry with its TTL renewed from now in the same step (a hit or a miss, like get);
  // its info is as stored after the renewal.
  virtual std::optional<Entry> get_and_touch(std::string_view key, std::int64_t ttl_ms) = 0;
  // The fresh value of `key` without recording an access or counting a hit or miss.
  virtual std::optional<std::string> peek(std::string_view key) = 0;
  // Counts an error found by the caller, e.g. a value that does not deserialize, and logs
  // `what` (nothing when it is empty).
  virtual void count_error(std::string_view what) = 0;
  // Entry and info of each key in any status (nullopt: not stored); values only when asked.
  // Records no access, counts no hit or miss: an inspection.
  virtual std::vector<std::optional<Entry>> inspect(const std::vector<std::string>& keys,
                                                    bool with_values) = 0;
  // Cross-process single flight (get_or_compute): a compute lease on `key` for process
  // `holder`, lasting `timeout_ms`. True when granted: no lease, an expired one, one whose
  // holder process is gone, or the holder's own (renewed). False with *wait_ms set to what is
  // left of the current lease, or to -1 when the owner could not be asked (unreachable, stopped):
  // the caller then computes without waiting. In a shared cache the owner keeps the leases of
  // every process.
  virtual bool acquire_lease(std::string_view key, std::int64_t holder, std::int64_t timeout_ms,
                             std::int64_t* wait_ms) = 0;
  // Ends `holder`'s lease on `key` (nothing when another holds it).
  virtual void release_lease(std::string_view key, std::int64_t holder) = 0;
  // Changes from sequence number `from` on (kEventsFromNow: none, only where the log ends), at
  // most `max` (events.hpp). Keys as stored (with their namespace's prefix).
  virtual EventBatch events_since(std::uint64_t from, std::size_t max) = 0;
  // Runs a maintenance operation (AdminCommand says what `arg` means); never throws for I/O.
  virtual AdminResult admin(AdminCommand op, std::int64_t arg) = 0;

  virtual bool degraded() const = 0;
  virtual std::string last_error() const = 0;
  virtual std::filesystem::path directory() const = 0;
  // The Backend this process runs the store with, or null (a shared-cache client).
  virtual std::shared_ptr<Backend> backend() const = 0;
  // The configuration the service was opened with.
  virtual const Config& config() const = 0;
  // True in a child forked after the service was opened (see Backend::inherited()).
  virtual bool inherited() const = 0;

  // Single flight for get_or_compute, per Service (so per directory and process).
  struct Flight {
    std::mutex mu;
    std::condition_variable cv;
    bool done = false;
    std::string value;
    std::exception_ptr error;
    std::size_t followers = 0;  // callers that joined it after its leader (under flights_mu_)
  };
  // The counters of named namespace `name`'s operations through this process's handles
  // (Cache::ns): created on first use, valid as long as the Service.
  stats::Counters& ns_counters(std::string_view name);

  // The flight for `key` and whether the caller leads it (computes).
  std::shared_ptr<Flight> join_flight(std::string_view key, bool* leader);
  void end_flight(std::string_view key);
  // Waits until at least `n` callers joined the flight on `key` after its leader (for tests that
  // must know every caller shares one computation). True once they have; false at `timeout`.
  bool await_followers(std::string_view key, std::size_t n, std::chrono::milliseconds timeout);

 private:
  std::mutex flights_mu_;
  std::condition_variable joined_;  // a caller joined a flight
  std::unordered_map<std::string, std::shared_ptr<Flight>> flights_;
  std::mutex ns_mu_;
  std::map<std::string, std::unique_ptr<stats::Counters>, std::less<>> ns_counters_;
};

// The store (or memory cache) of this process, through its Backend.
class LocalService final : public Service {
 public:
  explicit LocalService(std::shared_ptr<Backend> backend);

  bool set(const SetRequest& request) override;
  using Service::set;
  bool add(const SetRequest& request) override;
  bool touch(std::string_view key, std::int64_t ttl_ms) override;
  std::optional<std::int64_t> incr(const SetRequest& request, std::int64_t delta) override;
  bool set_all(const std::vector<SetRequest>& requests) override;
  bool compare_and_set(const SetRequest& request, std::string_view expected) override;
  std::optional<Entry> get_and_touch(std::string_view key, std::int64_t ttl_ms) override;
  std::optional<std::string> get(std::string_view key) override;
  std::vector<std::optional<std::string>> get_many(const std::vector<std::string>& keys) override;
  // The values of a prefix of `keys`: it ends at the key whose value brings the value bytes to
  // `max_value_bytes` or more (a shared-cache reply must fit one frame). Only the keys answered
  // are counted as hits or misses.
  std::vector<std::optional<std::string>> get_many(const std::vector<std::string>& keys,
                                                   std::uint64_t max_value_bytes);
  std::vector<bool> set_many(const std::vector<SetRequest>& requests) override;
  std::optional<Entry> get_entry(std::string_view key, bool include_stale) override;
  bool exists(std::string_view key) override;
  std::optional<EntryInfo> metadata(std::string_view key) override;
  bool remove(std::string_view key) override;
  std::size_t clear(std::string_view scope = {}) override;
  std::size_t clear_category(std::string_view category, std::string_view scope = {}) override;
  bool invalidate(std::string_view key) override;
  std::size_t invalidate_category(std::string_view category, std::string_view scope = {}) override;
  std::size_t invalidate_pattern(std::string_view glob, std::string_view scope = {}) override;
  std::vector<std::string> keys(std::string_view scope = {}) override;
  std::vector<std::string> keys_in_category(std::string_view category,
                                            std::string_view scope = {}) override;
  std::size_t cleanup() override;
  Stats stats() override;
  void flush() override;
  std::optional<std::string> peek(std::string_view key) override;
  void count_error(std::string_view what) override;
  std::vector<std::optional<Entry>> inspect(const std::vector<std::string>& keys,
                                            bool with_values) override;
  AdminResult admin(AdminCommand op, std::int64_t arg) override;
  bool acquire_lease(std::string_view key, std::int64_t holder, std::int64_t timeout_ms,
                     std::int64_t* wait_ms) override;
  void release_lease(std::string_view key, std::int64_t holder) override;
  EventBatch events_since(std::uint64_t from, std::size_t max) override;

  bool degraded() const override;
  std::string last_error() const override;
  std::filesystem::path directory() const override;
  std::shared_ptr<Backend> backend() const override { return backend_; }
  const Config& config() const override;
  bool inherited() const override;

 private:
  // get and set; a local miss asks the remote tier / a stored entry is written through only
  // when told (get_many and set_many batch the remote's share; get_many counts the misses that
  // are left). *created_ns: the set's time.
  std::optional<std::string> get_impl(std::string_view key, bool ask_remote, bool count_miss);
  bool set_impl(const SetRequest& request, bool write_remote, std::int64_t* created_ns);
  // add and compare_and_set: stores `request` only if `allowed(the fresh stored value, or null
  // when none)`, decided by the remote tier when there is one, else atomically on the store.
  bool set_if(const SetRequest& request, std::string_view what,
              const std::function<bool(const std::string* fresh_value)>& allowed);
  // get_entry; with `ask_remote`, a local miss asks the remote tier once.
  std::optional<Entry> local_get_entry(std::string_view key, bool include_stale, bool ask_remote);

  std::shared_ptr<Backend> backend_;
  struct Lease {
    std::int64_t holder = 0;
    std::chrono::steady_clock::time_point expires;
    bool refused = false;  // another process was refused it (logged once)
  };
  std::mutex leases_mu_;
  std::unordered_map<std::string, Lease> leases_;  // bounded: expired ones are swept
};

}  // namespace larder::core
