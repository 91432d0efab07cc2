// The remote tier: larder entries kept in Redis (or Valkey) under a key prefix, shared by every
// cache on any machine that names the same prefix, and a change stream that keeps each
// machine's local copies coherent.
//
// Redis layout (docs/remote.md), all under <prefix>:
//   <prefix>:e:<stored key>   STRING  an entry record (format 1, below), PX = stale_factor x TTL
//   <prefix>:c:<category>     SET     stored keys last written in that category (may hold keys
//                                     since rewritten in another category or gone: checked)
//   <prefix>:events           STREAM  one item per change (fields o: origin, t: kind, a: key,
//                                     category or glob, s: scope), trimmed to ~100,000 items
// A tier reads the stream from where it last was (persisted in the cache directory), so changes
// made while it was disconnected or closed are applied when it is back; if the stream was
// trimmed past that point, on_gap says that every local copy is suspect.
//
// Failures never reach the caller as exceptions: a call that cannot use Redis returns
// Outcome::error (or false) within the operation timeout, and for a while afterwards (a breaker,
// 0.5 s doubling to 5 s) calls do not try. Writes that did not reach Redis are remembered
// (at most kMaxPending) and replayed by the listener once Redis answers again.
//
// Thread-safety: every member function may be called from many threads at once (a Redis tier
// takes connections from a small pool; each hiredis context is used by one thread at a time).
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <filesystem>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include "remote/url.hpp"
#include "util/clock.hpp"
#include "util/log.hpp"
#include "util/result.hpp"

namespace larder::remote {

// An entry as the remote keeps it. Record format 3 (little-endian): u8 format = 3, i64
// created_ns, i64 ttl in milliseconds, u32 category length + bytes, u32 metadata pair count +
// (u32 length + bytes) x 2 per pair, then the value (the rest). Format 1 is the same with the ttl
// in whole seconds: still decoded (as seconds x 1000), no longer written.
struct Entry {
  std::string value;
  std::string category = "default";
  std::map<std::string, std::string> metadata;
  std::int64_t created_ns = 0;
  std::int64_t ttl_ms = 0;  // 0: never expires
};
inline constexpr std::uint8_t kRecordFormat = 3;
inline constexpr std::uint8_t kRecordFormatSeconds = 1;
std::string encode(const Entry& e);
// The entry, or nullopt for bytes that are not a well-formed record.
std::optional<Entry> decode(std::string_view bytes);

// Record format 2, written by a tier with a shared secret (secret_file): u8 format = 2, a
// 32-byte HMAC-SHA256 tag under the secret over ("larder.record.v1", NUL, the stored key, NUL,
// the format-1 record), then the format-1 record. The key is covered, so a signed record moved
// to another key does not verify either.
inline constexpr std::uint8_t kSignedRecordFormat = 2;
// The record to write for `stored_key`: format 2 with a secret, format 1 without.
std::string seal(std::string_view stored_key, const Entry& e, std::string_view secret);
// Why a record was not accepted.
enum class RecordFault : std::uint8_t { none = 0, malformed = 1, unsigned_record = 2, bad_tag = 3 };
// The entry a record read from `stored_key` holds. With a secret only a format-2 record whose
// tag verifies is accepted (unsigned_record / bad_tag otherwise); without one, both formats are
// read (a format-2 tag cannot be checked). nullopt with *fault set when refused.
std::optional<Entry> unseal(std::string_view stored_key, std::string_view bytes,
                            std::string_view secret, RecordFault* fault);

// A change another cache made, to apply to the local tier (stored keys; scope as core's).
// A position in the change stream (a stream id: milliseconds, sequence), ordered.
using StreamId = std::pair<std::uint64_t, std::uint64_t>;

struct Change {
  enum class Kind : std::uint8_t { key = 1, category = 2, pattern = 3, clear = 4 };
  Kind kind = Kind::key;
  std::string arg;  // the stored key, the category or the glob
  std::string scope;
  StreamId id{};  // where the change is in the stream
};

struct TierHooks {
  // A change made by another cache (runs on the listener thread).
  std::function<void(const Change&)> on_change;
  // The stream lost changes this tier never saw (trimmed while it was away): drop local copies,
  // except those for which `unsynced` holds (a local write of that key has not reached Redis
  // yet: waiting for replay or under way; the replay reads the local entry). The first argument:
  // the stream's last id then (every change up to it may be among those lost). `unsynced` may
  // be called from any thread while on_gap runs.
  std::function<void(StreamId, const std::function<bool(std::string_view stored_key)>& unsynced)>
      on_gap;
  // A write that did not reach Redis, replayed now: the local entry of `stored_key` (nullopt if
  // there is none any more, which removes it from the remote).
  std::function<std::optional<Entry>(std::string_view stored_key)> local_entry;
  // Whether `stored_key` is in `scope` and, given a glob, matches it as the user sees the key.
  std::function<bool(std::string_view stored_key, std::string_view scope, const std::string* glob)>
      matches;
  // An outage began or ended (for logs and last_error); `why` names the failure.
  std::function<void(bool reachable, const std::string& why)> on_state;
  // The monotonic time of the retry pauses after a failure (Config::monotonic_clock).
  util::MonotonicClock clock;
};

inline constexpr std::size_t kMaxPending = 100'000;
inline constexpr std::size_t kStreamLength = 100'000;

class Tier {
 public:
  // rejected: Redis answered with a record that is not accepted (malformed, unsigned or
  // wrongly signed under secret_file): a miss, counted as a remote error and logged.
  enum class Outcome : std::uint8_t { hit, miss, error, rejected };
  virtual ~Tier() = default;

  // Local work to do while Redis answers: get, get_many, put and put_many send their commands,
  // run `meanwhile` (when given) once, then read the answers, so the caller's own work overlaps
  // the round trip. It runs exactly once, also when Redis is not asked (breaker open, no
  // connection) or fails; it must not call this tier.
  using Meanwhile = std::function<void()>;

  // The entry of `stored_key`: hit (with *out), miss, or error (Redis unusable).
  // *at: a stream position such that every change at or before it is in what was read (the
  // stream's last id read with the entry, or the last change the listener has applied, which
  // is older); a change after it may be newer than the entry.
  virtual Outcome get(std::string_view stored_key, Entry* out, StreamId* at,
                      const Meanwhile& meanwhile = {}) = 0;
  // Pipelined gets, one outcome per key (out: one entry per key, meaningful on hits).
  virtual std::vector<Outcome> get_many(const std::vector<std::string>& stored_keys,
                                        std::vector<Entry>* out, StreamId* at,
                                        const Meanwhile& meanwhile = {}) = 0;
  // Write-through of entries (false: not all written; those not written are remembered and
  // replayed). A read_only URL writes nothing and returns true (after running `meanwhile`).
  virtual bool put(std::string_view stored_key, const Entry& e,
                   const Meanwhile& meanwhile = {}) = 0;
  virtual bool put_many(const std::vector<std::pair<std::string, Entry>>& items,
                        const Meanwhile& meanwhile = {}) = 0;
  // Removal of one key (remove and invalidate).
  virtual bool remove(std::string_view stored_key) = 0;
  // Removal of every key of `scope` in `category` / whose key (as the user sees it) matches
  // `glob` / of the whole scope (TierHooks::matches decides).
  virtual bool remove_category(std::string_view category, std::string_view scope) = 0;
  virtual bool remove_matching(std::string_view glob, std::string_view scope) = 0;
  virtual bool remove_all(std::string_view scope) = 0;

  // Compare-and-swap, for the calls whose outcome the remote decides across machines (add,
  // incr, touch). read_current: the record of `stored_key` as Redis holds it now: *raw its bytes
  // (nullopt: none), *current the entry when it is accepted (nullopt: none, or refused: a
  // refused record can still be replaced). hit or miss, or error (Redis unusable).
  virtual Outcome read_current(std::string_view stored_key, std::optional<std::string>* raw,
                               std::optional<Entry>* current) = 0;
  // Writes `e` (with its index update and change item, in one script) only if the record is
  // still `raw` (nullopt: still absent). swapped; conflict (another cache changed it first: read
  // again); error (Redis unusable, or a read_only URL: nothing written).
  enum class Cas : std::uint8_t { swapped, conflict, error };
  virtual Cas put_if_unchanged(std::string_view stored_key, const std::optional<std::string>& raw,
                               const Entry& e) = 0;

  // Asks Redis now (PING, within the operation timeout, even while the breaker is open). Returns
  // whether it answered; last_error() then says why not.
  virtual bool check() = 0;

  // True while the change listener is connected and positioned in the stream: changes other
  // caches make reach this one (a local copy is then as current as the stream says).
  virtual bool listening() const = 0;

  virtual const RemoteUrl& url() const = 0;
  // Why Redis is not usable (empty while it is).
  virtual std::string last_error() const = 0;
};

// Starts a tier on `url` (its listener connects in the background; nothing waits for Redis).
// `max_value_bytes`: the largest value the local tier takes (0: no limit); a reply from Redis
// longer than that (at most 1 GiB) plus 1 MiB is not read: the call fails, the connection is
// dropped. `state_file`: where the change stream's position is kept (empty: nowhere). Returns the
// tier, or why there is none (this build has no Redis support).
util::Result<std::unique_ptr<Tier>> open_tier(RemoteUrl url, double stale_factor,
                                              std::uint64_t max_value_bytes,
                                              std::filesystem::path state_file, TierHooks hooks,
                                              const util::Logger* log);

}  // namespace larder::remote
