// The Redis tier's internals, shared by its files: redis_tier.cpp (connections, breaker,
// reads and writes, the Lua scripts), redis_listener.cpp (the change stream: the listener
// thread, replay of writes that failed) and redis_io.cpp (hiredis I/O with bounds and without
// SIGPIPE). Not a public interface: open_tier (tier.hpp) is.
//
// Thread-safety: RedisTier's members may be called from many threads (tier.hpp); the helpers
// work on one connection, owned by one thread at a time.
#pragma once

#include <sys/time.h>

#include <charconv>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <filesystem>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <set>
#include <string>
#include <string_view>
#include <thread>
#include <unordered_map>
#include <utility>
#include <vector>

// hiredis 0.14's sds.h declares C functions without extern "C", and hiredis.h includes it: it
// comes first here, inside extern "C".
extern "C" {
#include <hiredis/sds.h>
}
#include <hiredis/hiredis.h>

#include <absl/container/flat_hash_map.h>

#include "remote/tier.hpp"
#include "util/breaker.hpp"
#include "util/hash.hpp"
#include "util/log.hpp"
#include "util/result.hpp"

namespace larder::remote::detail {

using Clock = std::chrono::steady_clock;
using std::chrono::milliseconds;

using Clock = std::chrono::steady_clock;
using std::chrono::milliseconds;

constexpr milliseconds kFirstBackoff{500};
constexpr milliseconds kMaxBackoff{5000};
constexpr milliseconds kBlock{100};   // XREAD BLOCK: how late a stop is noticed
constexpr milliseconds kGather{5};    // pause after a read that brought items
constexpr std::size_t kBatch = 1000;  // keys per pipelined UNLINK / GET batch
constexpr std::size_t kMaxIdle = 8;   // pooled connections kept
constexpr std::size_t kMaxRecordBytes = 1u << 30;
constexpr std::size_t kReplySlack = 1u << 20;        // a record's header, a reply's framing
constexpr std::size_t kMaxReplyElements = 1u << 22;  // an array reply longer is refused
// The listener reads at most kReadCount stream items at once, each naming at most kEventKeys
// keys (of at most 4 KiB and a scope): its replies are allowed kListenerReplyBytes at least.
constexpr std::size_t kReadCount = 100;
constexpr std::size_t kEventKeys = 100;
constexpr std::uint64_t kListenerReplyBytes = 64u << 20;
constexpr std::size_t kMaxEventArgs = 1000;  // keys read from one stream item

inline timeval to_timeval(milliseconds ms) {
  timeval tv{};
  tv.tv_sec = static_cast<time_t>(ms.count() / 1000);
  tv.tv_usec = static_cast<suseconds_t>((ms.count() % 1000) * 1000);
  return tv;
}

// A stream id "ms-seq" as a comparable pair; nullopt when malformed.
inline std::optional<std::pair<std::uint64_t, std::uint64_t>> parse_id(std::string_view id) {
  const std::size_t dash = id.find('-');
  if (dash == std::string_view::npos) return std::nullopt;
  std::uint64_t ms = 0, seq = 0;
  const auto a = std::from_chars(id.data(), id.data() + dash, ms);
  const auto b = std::from_chars(id.data() + dash + 1, id.data() + id.size(), seq);
  if (a.ec != std::errc() || a.ptr != id.data() + dash || b.ec != std::errc() ||
      b.ptr != id.data() + id.size())
    return std::nullopt;
  return std::pair{ms, seq};
}

// Escapes Redis MATCH's special bytes so that `s` matches itself.
inline std::string match_literal(std::string_view s) {
  std::string out;
  for (char c : s) {
    if (c == '*' || c == '?' || c == '[' || c == ']' || c == '\\') out.push_back('\\');
    out.push_back(c);
  }
  return out;
}

// ---- hiredis I/O (redis_io.cpp)

// Writes what hiredis has buffered with send(MSG_NOSIGNAL) (hiredis's write(2) would raise
// SIGPIPE). False with ctx->err / errstr set when it could not.
bool send_buffered(redisContext* ctx);
// Makes `ctx` refuse array replies declaring more than kMaxReplyElements elements.
void bound_replies(redisContext* ctx);
// Why a connection failed: its error text, or `otherwise`.
std::string why_failed(const redisContext* ctx, const char* otherwise);
enum class ReadResult : std::uint8_t { ok, failed, oversized };
// The next reply, reading at most `max_bytes` of a reply not yet complete.
ReadResult read_reply(redisContext* ctx, void** reply, std::uint64_t max_bytes);

using ReplyPtr = std::unique_ptr<redisReply, decltype(&freeReplyObject)>;
// One command and its answer (nullptr: the connection failed, ctx->errstr says how, or the
// answer was over `max_bytes`).
ReplyPtr command(redisContext* ctx, const std::vector<std::string>& args, std::uint64_t max_bytes);

template <class R>
void convert(const redisReply* in, R* out, int depth) {
  out->type = in->type;
  out->integer = in->integer;
  if (in->str != nullptr) out->str.assign(in->str, in->len);
  if (in->type == REDIS_REPLY_ARRAY && depth < 8) {
    out->elements.resize(in->elements);
    for (std::size_t i = 0; i < in->elements; ++i)
      if (in->element[i] != nullptr) convert(in->element[i], &out->elements[i], depth + 1);
  }
}

std::string random_origin();

class RedisTier final : public Tier {
 public:
  // Starts the tier (the listener thread connects in the background; no call waits for it).
  // `state_file`: where the stream position is kept (empty: nowhere, start at the stream's end).
  RedisTier(RemoteUrl url, double stale_factor, std::uint64_t max_reply_bytes,
            std::filesystem::path state_file, TierHooks hooks, const util::Logger* log);
  ~RedisTier() override;
  RedisTier(const RedisTier&) = delete;
  RedisTier& operator=(const RedisTier&) = delete;

  // The entry of `stored_key`: hit (with *out), miss, or error (Redis unusable).
  Outcome get(std::string_view stored_key, Entry* out, StreamId* at,
              const Meanwhile& meanwhile = {}) override;
  // Pipelined gets, one outcome per key.
  std::vector<Outcome> get_many(const std::vector<std::string>& stored_keys,
                                std::vector<Entry>* out, StreamId* at,
                                const Meanwhile& meanwhile = {}) override;
  // Write-through of an entry (false: not written; remembered for replay).
  bool put(std::string_view stored_key, const Entry& e, const Meanwhile& meanwhile = {}) override;
  bool put_many(const std::vector<std::pair<std::string, Entry>>& items,
                const Meanwhile& meanwhile = {}) override;
  // Removal of one key (remove and invalidate).
  bool remove(std::string_view stored_key) override;
  // Removal of every key of `scope` in `category` / whose key (as the user sees it) matches
  // `glob` / of the whole scope (TierHooks::matches decides).
  bool remove_category(std::string_view category, std::string_view scope) override;
  bool remove_matching(std::string_view glob, std::string_view scope) override;
  bool remove_all(std::string_view scope) override;

  Outcome read_current(std::string_view stored_key, std::optional<std::string>* raw,
                       std::optional<Entry>* current) override;
  Cas put_if_unchanged(std::string_view stored_key, const std::optional<std::string>& raw,
                       const Entry& e) override;

  bool check() override;
  bool listening() const override { return listening_.load(); }
  const RemoteUrl& url() const override { return url_; }
  // True while the last attempt to use Redis worked.
  // Why Redis is not usable (empty while it is).
  std::string last_error() const override;

 private:
  struct Conn;
  struct ConnDeleter {
    void operator()(Conn* c) const;
  };
  using ConnPtr = std::unique_ptr<Conn, ConnDeleter>;

  util::Result<ConnPtr> connect(std::chrono::milliseconds read_timeout) const;
  // A pooled connection, or nullptr (breaker open, or connecting failed: counted as an outage).
  // *pooled: whether the connection came from the pool (it may have died since).
  ConnPtr acquire(bool* pooled);
  void release(ConnPtr c);
  void failed(const std::string& why);
  void succeeded();
  bool breaker_open() const;
  // Runs the pipelined commands on one connection; false (and an outage) on a transport
  // failure or an error reply.
  struct Reply {
    int type = 0;
    long long integer = 0;
    std::string str;
    std::vector<Reply> elements;
  };
  // oversized: a reply was longer than max_reply_bytes_ (the call fails, no outage).
  enum class Attempt : std::uint8_t { done, failed, transport_failed, oversized };
  // One try of run(): transport_failed (not counted as an outage) when a pooled connection
  // turned out dead, for run() to try once more on a fresh one.
  // `meanwhile` (may be empty) runs once the commands are sent, before the answers are read;
  // run() runs it exactly once whatever happens.
  Attempt run_once(const std::vector<std::vector<std::string>>& commands,
                   std::vector<Reply>* replies, bool* pooled,
                   const std::function<void()>& meanwhile);
  bool run(const std::vector<std::vector<std::string>>& commands, std::vector<Reply>* replies,
           const Meanwhile& meanwhile = {});
  std::vector<std::string> event_command(Change::Kind kind, std::string_view arg,
                                         std::string_view scope) const;
  void remember(Change::Kind kind, std::string_view arg, std::string_view scope);
  // unsynced_: a local write of a key is under way to Redis (+1 before its local write, -1 once
  // it reached Redis or was remembered) or waits in pending_ (+1 per pending key change).
  void count_unsynced(std::string_view stored_key, int delta);
  bool unsynced(std::string_view stored_key);
  bool remove_keys(const std::vector<std::string>& stored_keys, Change::Kind kind,
                   std::string_view arg, std::string_view scope);
  bool scan_remove(const std::string& match, Change::Kind kind, std::string_view arg,
                   std::string_view scope, const std::string* glob);
  bool apply_pending(const Change& c);
  void listen();
  void replay_pending();
  void save_position(const std::string& id);

  std::string entry_key(std::string_view stored_key) const;
  // The pipelined commands that write one entry: SET (with PX), SADD to its category, XADD.
  void append_put(std::string_view key, const Entry& e,
                  std::vector<std::vector<std::string>>* cmds) const;
  // The SET (with PX) alone.
  void append_set(std::string_view key, const Entry& e,
                  std::vector<std::vector<std::string>>* cmds) const;
  std::vector<std::string> last_id_command() const {
    return {"XREVRANGE", url_.prefix + ":events", "+", "-", "COUNT", "1"};
  }
  // The id an XREVRANGE ... COUNT 1 reply names ({0, 0} for an empty or missing stream).
  static StreamId last_id_of(const Reply& r);
  std::string category_key(std::string_view category) const;
  // EVAL of kIndexAdd for `category`'s index, members to be appended by append_member.
  std::vector<std::string> index_command(std::string_view category) const;
  void append_member(std::string_view key, const Entry& e, std::vector<std::string>* index) const;
  // The entry a record read from `stored_key` holds; nullopt (logged) when it is not accepted.
  std::optional<Entry> accept(std::string_view stored_key, std::string_view bytes);
  std::atomic<std::uint64_t> rejected_{0};
  std::atomic<bool> listening_{false};  // the listener is connected and positioned

  const RemoteUrl url_;
  const double stale_factor_;
  const std::uint64_t max_reply_bytes_;       // a longer reply is not read (open_tier)
  const std::uint64_t listener_reply_bytes_;  // the same for the listener's stream reads
  const std::filesystem::path state_file_;
  const TierHooks hooks_;
  const util::Logger* log_;
  const std::string origin_;  // this tier's id in the stream, so it skips its own changes

  std::mutex pool_mu_;
  std::vector<ConnPtr> idle_;

  mutable std::mutex state_mu_;
  std::string last_error_;
  // Open while Redis is unreachable: calls skip the remote tier until its retry time.
  util::Breaker breaker_{{1, kFirstBackoff, kMaxBackoff}};
  std::atomic<bool> down_{false};  // an outage is on (logged once)

  std::mutex pending_mu_;
  std::deque<Change> pending_;
  absl::flat_hash_map<std::string, int, util::StringHash, std::equal_to<>> unsynced_;
  std::uint64_t pending_dropped_ = 0;

  // Until the listener has a position in the stream, the earliest position a fetch read at: the
  // listener starts there (or the position is saved from there), so no change after a copy
  // was fetched is skipped.
  void note_fetch(StreamId at);
  // Once the listener has a position: every change up to it has been applied (handed to
  // on_change, or dropped as a gap); nullopt before.
  std::optional<StreamId> applied_position();
  void set_applied(std::string_view id);
  std::mutex early_mu_;
  bool positioned_ = false;
  StreamId applied_{0, 0};
  bool have_early_ = false;
  StreamId early_{0, 0};

  std::mutex stop_mu_;
  std::condition_variable stop_cv_;
  bool stop_ = false;
  std::thread listener_;
};

struct RedisTier::Conn {
  redisContext* ctx = nullptr;
};

inline void RedisTier::ConnDeleter::operator()(Conn* c) const {
  if (c != nullptr && c->ctx != nullptr) redisFree(c->ctx);
  delete c;
}

}  // namespace larder::remote::detail
