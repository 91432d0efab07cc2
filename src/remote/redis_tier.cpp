#include "remote/tier.hpp"

#include <sys/socket.h>
#include <sys/time.h>

#include <ctime>

// hiredis 0.14's sds.h declares C functions without extern "C", and hiredis.h includes it: it
// comes first here, inside extern "C".
extern "C" {
#include <hiredis/sds.h>
}
#include <hiredis/hiredis.h>

#include <algorithm>
#include <cerrno>
#include <charconv>
#include <cstdio>
#include <cstring>
#include <random>

#include <fmt/format.h>

#include "util/fs.hpp"
#include "util/hmac.hpp"
#include "util/ttl.hpp"

namespace larder::remote {

namespace {

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

// A category's index, <prefix>:c:<category>: a sorted set of stored keys scored by when their
// entry leaves Redis (Redis's own clock, ms; inf for none). index_write(idx, entries, members)
// adds `members` (pairs: stored key, lifetime in ms or -1), removes the members whose entries
// are past their lifetime (ZREMRANGEBYSCORE) and checks a few random members for entries that
// are gone (deleted, evicted), so the index stays near the category's live keys whatever the
// churn. An index of an older larder (a plain set) is converted first, each member scored by its
// entry's remaining lifetime. `entries`: "<prefix>:e:". Every script that writes an index starts
// with this function.
constexpr std::string_view kIndexWrite = R"lua(
local function index_write(idx, entries, members)
  local t = redis.call('TIME')
  local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
  local function add(member, ms)
    if ms < 0 then redis.call('ZADD', idx, 'inf', member)
    else redis.call('ZADD', idx, string.format('%.0f', now + ms), member) end
  end
  if redis.call('TYPE', idx).ok == 'set' then
    local old = redis.call('SMEMBERS', idx)
    redis.call('DEL', idx)
    for _, m in ipairs(old) do
      local left = redis.call('PTTL', entries .. m)
      if left == -1 or left >= 0 then add(m, left) end
    end
  end
  redis.call('ZREMRANGEBYSCORE', idx, '-inf', '(' .. string.format('%.0f', now))
  for i = 1, #members, 2 do add(members[i], tonumber(members[i + 1])) end
  for _, m in ipairs(redis.call('ZRANDMEMBER', idx, 4)) do
    if redis.call('EXISTS', entries .. m) == 0 then redis.call('ZREM', idx, m) end
  end
end
)lua";

// Writes an index. KEYS[1]: the index; ARGV[1]: "<prefix>:e:"; then pairs (stored key, lifetime
// in ms or -1).
const std::string kIndexAdd = std::string(kIndexWrite) + R"lua(
index_write(KEYS[1], ARGV[1], {unpack(ARGV, 2)})
return 0
)lua";

// Compare-and-swap of an entry record. KEYS[1]: the entry, KEYS[2]: its category's index,
// KEYS[3]: the change stream. ARGV[1]: '1' when a record is expected (ARGV[2] its bytes), '0'
// when none is; ARGV[3]: the new record; ARGV[4]: its lifetime in ms (-1: none); ARGV[5]: the
// stored key; ARGV[6]: "<prefix>:e:"; ARGV[7]: the stream's MAXLEN; ARGV[8..]: the change item's
// fields. 1: written (with its index entry and change item), 0: the record had changed (nothing
// written).
const std::string kCompareAndSet = std::string(kIndexWrite) + R"lua(
local cur = redis.call('GET', KEYS[1])
if ARGV[1] == '1' then
  if cur ~= ARGV[2] then return 0 end
elseif cur then
  return 0
end
local ms = tonumber(ARGV[4])
if ms < 0 then redis.call('SET', KEYS[1], ARGV[3]) else redis.call('SET', KEYS[1], ARGV[3], 'PX', ms) end
index_write(KEYS[2], ARGV[6], {ARGV[5], ARGV[4]})
redis.call('XADD', KEYS[3], 'MAXLEN', '~', ARGV[7], '*', unpack(ARGV, 8))
return 1
)lua";
// The members of an index (either kind). KEYS[1]: the index.
constexpr const char* kIndexMembers = R"lua(
if redis.call('TYPE', KEYS[1]).ok == 'set' then return redis.call('SMEMBERS', KEYS[1]) end
return redis.call('ZRANGE', KEYS[1], 0, -1)
)lua";
// Removes members from an index (either kind). KEYS[1]: the index; ARGV: the members.
constexpr const char* kIndexRemove = R"lua(
if #ARGV == 0 then return 0 end
if redis.call('TYPE', KEYS[1]).ok == 'set' then return redis.call('SREM', KEYS[1], unpack(ARGV)) end
return redis.call('ZREM', KEYS[1], unpack(ARGV))
)lua";

timeval to_timeval(milliseconds ms) {
  timeval tv{};
  tv.tv_sec = static_cast<time_t>(ms.count() / 1000);
  tv.tv_usec = static_cast<suseconds_t>((ms.count() % 1000) * 1000);
  return tv;
}

void put_u32(std::string* out, std::uint32_t v) {
  for (int i = 0; i < 4; ++i) out->push_back(static_cast<char>((v >> (8 * i)) & 0xff));
}
void put_i64(std::string* out, std::int64_t v) {
  const auto u = static_cast<std::uint64_t>(v);
  for (int i = 0; i < 8; ++i) out->push_back(static_cast<char>((u >> (8 * i)) & 0xff));
}
void put_bytes(std::string* out, std::string_view b) {
  put_u32(out, static_cast<std::uint32_t>(b.size()));
  out->append(b);
}

// Reads from hostile bytes: every length is checked against what is left.
class Reader {
 public:
  explicit Reader(std::string_view b) : b_(b) {}
  bool u32(std::uint32_t* v) {
    if (b_.size() < 4) return false;
    *v = 0;
    for (int i = 0; i < 4; ++i) *v |= std::uint32_t(static_cast<unsigned char>(b_[i])) << (8 * i);
    b_.remove_prefix(4);
    return true;
  }
  bool i64(std::int64_t* v) {
    if (b_.size() < 8) return false;
    std::uint64_t u = 0;
    for (int i = 0; i < 8; ++i) u |= std::uint64_t(static_cast<unsigned char>(b_[i])) << (8 * i);
    *v = static_cast<std::int64_t>(u);
    b_.remove_prefix(8);
    return true;
  }
  bool bytes(std::string* out) {
    std::uint32_t n = 0;
    if (!u32(&n) || n > b_.size()) return false;
    out->assign(b_.substr(0, n));
    b_.remove_prefix(n);
    return true;
  }
  std::string_view rest() const { return b_; }

 private:
  std::string_view b_;
};

// A stream id "ms-seq" as a comparable pair; nullopt when malformed.
std::optional<std::pair<std::uint64_t, std::uint64_t>> parse_id(std::string_view id) {
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
std::string match_literal(std::string_view s) {
  std::string out;
  for (char c : s) {
    if (c == '*' || c == '?' || c == '[' || c == ']' || c == '\\') out.push_back('\\');
    out.push_back(c);
  }
  return out;
}

// hiredis writes with write(2), which raises SIGPIPE (killing the host) when the peer went away.
// So this writes what hiredis has buffered itself, with send(MSG_NOSIGNAL), before hiredis reads
// the answers (with nothing left to write, hiredis only reads). The process's handling of
// SIGPIPE is not touched. Returns false with ctx->err / errstr set (errno kept: EAGAIN is the
// send timeout) when the buffer could not be written.
bool send_buffered(redisContext* ctx) {
  std::size_t len = sdslen(ctx->obuf);
  std::size_t done = 0;
  while (done < len) {
    const ssize_t n = ::send(ctx->fd, ctx->obuf + done, len - done, MSG_NOSIGNAL);
    if (n < 0) {
      if (errno == EINTR) continue;
      const int saved = errno;
      ctx->err = REDIS_ERR_IO;
      std::snprintf(ctx->errstr, sizeof(ctx->errstr), "%s", std::strerror(saved));
      errno = saved;  // the connection is dropped: what is left in its buffer does not matter
      return false;
    }
    done += static_cast<std::size_t>(n);
  }
  if (sdsalloc(ctx->obuf) > (64u << 10)) {  // as hiredis does: a large buffer is not kept
    sdsfree(ctx->obuf);
    ctx->obuf = sdsempty();
  } else {
    sdsclear(ctx->obuf);
  }
  return ctx->obuf != nullptr;
}

// hiredis allocates an array reply's element table as the reply declares it: a reply declaring
// more than kMaxReplyElements elements is refused instead (the reader fails with "Out of
// memory", the connection is dropped). Installed on every connection (bound_replies).
void* (*g_create_array)(const redisReadTask*, int) = nullptr;
void* bounded_create_array(const redisReadTask* task, int elements) {
  if (elements < 0 || static_cast<std::size_t>(elements) > kMaxReplyElements) return nullptr;
  return g_create_array(task, elements);
}
void bound_replies(redisContext* ctx) {
  static redisReplyObjectFunctions bounded = [&] {
    redisReplyObjectFunctions f = *ctx->reader->fn;
    g_create_array = f.createArray;
    f.createArray = bounded_create_array;
    return f;
  }();
  ctx->reader->fn = &bounded;
}

// Why a connection failed: its error text, or what a reader failing with REDIS_ERR_OOM means
// here as a rule; `otherwise` when it has none.
std::string why_failed(const redisContext* ctx, const char* otherwise) {
  if (ctx->err == REDIS_ERR_OOM)
    return fmt::format("a reply declared more than {} elements, or memory ran out (not read)",
                       kMaxReplyElements);
  return ctx->errstr[0] != '\0' ? std::string(ctx->errstr) : std::string(otherwise);
}

enum class ReadResult : std::uint8_t { ok, failed, oversized };
// The next reply, reading at most `max_bytes` of a reply not yet complete: hiredis buffers a
// bulk string until all of it is there, whatever length the peer declares. oversized: the peer
// sent more (the connection must be dropped); failed: ctx->err says why.
ReadResult read_reply(redisContext* ctx, void** reply, std::uint64_t max_bytes) {
  *reply = nullptr;
  if (redisGetReplyFromReader(ctx, reply) != REDIS_OK) return ReadResult::failed;
  while (*reply == nullptr) {
    if (redisBufferRead(ctx) != REDIS_OK) return ReadResult::failed;
    if (ctx->reader->len - ctx->reader->pos > max_bytes) return ReadResult::oversized;
    if (redisGetReplyFromReader(ctx, reply) != REDIS_OK) return ReadResult::failed;
  }
  return ReadResult::ok;
}

// A record in one of the plain (unsigned) formats.
bool plain_record(std::string_view bytes) {
  const auto format = static_cast<std::uint8_t>(bytes[0]);
  return format == kRecordFormat || format == kRecordFormatSeconds;
}

std::string random_origin() {
  std::random_device rd;
  return fmt::format("{:08x}{:08x}", rd(), rd());
}

}  // namespace

std::string encode(const Entry& e) {
  std::string out;
  out.reserve(1 + 8 + 8 + 4 + e.category.size() + 4 + e.value.size() + 16 * e.metadata.size());
  out.push_back(static_cast<char>(kRecordFormat));
  put_i64(&out, e.created_ns);
  put_i64(&out, e.ttl_ms);
  put_bytes(&out, e.category);
  put_u32(&out, static_cast<std::uint32_t>(e.metadata.size()));
  for (const auto& [k, v] : e.metadata) {
    put_bytes(&out, k);
    put_bytes(&out, v);
  }
  out.append(e.value);
  return out;
}

std::optional<Entry> decode(std::string_view bytes) {
  if (bytes.empty() || !plain_record(bytes)) return std::nullopt;
  Reader r(bytes.substr(1));
  Entry e;
  std::uint32_t pairs = 0;
  if (!r.i64(&e.created_ns) || !r.i64(&e.ttl_ms) || e.ttl_ms < 0 || !r.bytes(&e.category) ||
      !r.u32(&pairs) || pairs > r.rest().size() / 8)  // each pair takes at least 8 bytes
    return std::nullopt;
  if (static_cast<std::uint8_t>(bytes[0]) == kRecordFormatSeconds)
    e.ttl_ms = util::seconds_to_ms(e.ttl_ms);
  for (std::uint32_t i = 0; i < pairs; ++i) {
    std::string k, v;
    if (!r.bytes(&k) || !r.bytes(&v)) return std::nullopt;
    e.metadata.emplace(std::move(k), std::move(v));
  }
  e.value.assign(r.rest());
  return e;
}

namespace {
constexpr std::string_view kRecordDomain{"larder.record.v1\0", 17};
std::string record_tag(std::string_view secret, std::string_view stored_key,
                       std::string_view record) {
  return util::hmac_sha256(secret, {kRecordDomain, stored_key, std::string_view("\0", 1), record});
}
}  // namespace

std::string seal(std::string_view stored_key, const Entry& e, std::string_view secret) {
  std::string record = encode(e);
  if (secret.empty()) return record;
  std::string out;
  out.reserve(1 + util::kTagBytes + record.size());
  out.push_back(static_cast<char>(kSignedRecordFormat));
  out += record_tag(secret, stored_key, record);
  out += record;
  return out;
}

std::optional<Entry> unseal(std::string_view stored_key, std::string_view bytes,
                            std::string_view secret, RecordFault* fault) {
  *fault = RecordFault::none;
  std::string_view record = bytes;
  if (!bytes.empty() && static_cast<std::uint8_t>(bytes[0]) == kSignedRecordFormat) {
    if (bytes.size() < 1 + util::kTagBytes) {
      *fault = RecordFault::malformed;
      return std::nullopt;
    }
    record = bytes.substr(1 + util::kTagBytes);
    if (!secret.empty() &&
        !util::hmac_valid(secret, {kRecordDomain, stored_key, std::string_view("\0", 1), record},
                          bytes.substr(1, util::kTagBytes))) {
      *fault = RecordFault::bad_tag;
      return std::nullopt;
    }
  } else if (!secret.empty()) {
    *fault = bytes.empty() || !plain_record(bytes) ? RecordFault::malformed
                                                   : RecordFault::unsigned_record;
    return std::nullopt;
  }
  auto e = decode(record);
  if (!e) *fault = RecordFault::malformed;
  return e;
}

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
  std::chrono::steady_clock::time_point retry_at_{};
  std::chrono::milliseconds backoff_{0};
  std::atomic<bool> down_{false};  // an outage is on (logged once)

  std::mutex pending_mu_;
  std::deque<Change> pending_;
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

void RedisTier::ConnDeleter::operator()(Conn* c) const {
  if (c != nullptr && c->ctx != nullptr) redisFree(c->ctx);
  delete c;
}

namespace {

using ReplyPtr = std::unique_ptr<redisReply, decltype(&freeReplyObject)>;

// One command and its answer (nullptr: the connection failed, ctx->errstr says how, or the
// answer was over `max_bytes`).
ReplyPtr command(redisContext* ctx, const std::vector<std::string>& args, std::uint64_t max_bytes) {
  std::vector<const char*> argv;
  std::vector<std::size_t> lens;
  for (const auto& a : args) {
    argv.push_back(a.data());
    lens.push_back(a.size());
  }
  void* raw = nullptr;
  if (redisAppendCommandArgv(ctx, static_cast<int>(argv.size()), argv.data(), lens.data()) !=
          REDIS_OK ||
      !send_buffered(ctx) || read_reply(ctx, &raw, max_bytes) != ReadResult::ok)
    raw = nullptr;
  return ReplyPtr(static_cast<redisReply*>(raw), &freeReplyObject);
}

}  // namespace

RedisTier::RedisTier(RemoteUrl url, double stale_factor, std::uint64_t max_reply_bytes,
                     std::filesystem::path state_file, TierHooks hooks, const util::Logger* log)
    : url_(std::move(url)),
      stale_factor_(std::max(1.0, stale_factor)),
      max_reply_bytes_(max_reply_bytes),
      listener_reply_bytes_(std::max(max_reply_bytes, kListenerReplyBytes)),
      state_file_(std::move(state_file)),
      hooks_(std::move(hooks)),
      log_(log),
      origin_(random_origin()) {
  listener_ = std::thread([this] { listen(); });
}

RedisTier::~RedisTier() {
  {
    std::lock_guard lock(stop_mu_);
    stop_ = true;
  }
  stop_cv_.notify_all();
  if (listener_.joinable()) listener_.join();
}

util::Result<RedisTier::ConnPtr> RedisTier::connect(milliseconds read_timeout) const {
  const timeval tv = to_timeval(url_.connect_timeout);
  redisContext* ctx = url_.transport == RemoteUrl::Transport::tcp
                          ? redisConnectWithTimeout(url_.host.c_str(), url_.port, tv)
                          : redisConnectUnixWithTimeout(url_.path.c_str(), tv);
  ConnPtr c(new Conn{ctx});
  if (ctx == nullptr) return util::fail("redis {}: out of memory", url_.display());
  if (ctx->err != 0) return util::fail("cannot connect to {}: {}", url_.display(), ctx->errstr);
  bound_replies(ctx);
  if (redisSetTimeout(ctx, to_timeval(read_timeout)) != REDIS_OK)
    return util::fail("redis {}: cannot set the timeout", url_.display());
  const auto check = [&](const ReplyPtr& r, std::string_view what) -> util::Status {
    if (!r) return util::fail("redis {}: {}: {}", url_.display(), what, why_failed(ctx, "failed"));
    if (r->type == REDIS_REPLY_ERROR)
      return util::fail("redis {}: {} refused: {}", url_.display(), what,
                        std::string_view(r->str, r->len));
    return {};
  };
  if (!url_.password.empty()) {
    std::vector<std::string> auth{"AUTH"};
    if (!url_.user.empty()) auth.push_back(url_.user);
    auth.push_back(url_.password);
    if (auto ok = check(command(ctx, auth, kReplySlack), "AUTH"); !ok)
      return util::fail(ok.error());
  }
  if (url_.db != 0) {
    if (auto ok = check(command(ctx, {"SELECT", std::to_string(url_.db)}, kReplySlack),
                        fmt::format("SELECT {}", url_.db));
        !ok)
      return util::fail(ok.error());
  }
  return c;
}

bool RedisTier::breaker_open() const {
  std::lock_guard lock(state_mu_);
  return Clock::now() < retry_at_;
}

void RedisTier::failed(const std::string& why) {
  {
    std::lock_guard lock(state_mu_);
    last_error_ = why;
    backoff_ = backoff_.count() == 0 ? kFirstBackoff : std::min(backoff_ * 2, kMaxBackoff);
    retry_at_ = Clock::now() + backoff_;
  }
  if (!down_.exchange(true)) {
    if (log_)
      log_->logf(util::Level::warn, "remote tier unusable, using the local tier only: {}", why);
    if (hooks_.on_state) hooks_.on_state(false, why);
  }
}

void RedisTier::succeeded() {
  {
    std::lock_guard lock(state_mu_);
    backoff_ = milliseconds(0);
    retry_at_ = {};
    last_error_.clear();
  }
  if (down_.exchange(false)) {
    if (log_) log_->logf(util::Level::info, "remote tier {} reachable again", url_.display());
    if (hooks_.on_state) hooks_.on_state(true, {});
  }
}

std::string RedisTier::last_error() const {
  std::lock_guard lock(state_mu_);
  return last_error_;
}

RedisTier::ConnPtr RedisTier::acquire(bool* pooled) {
  *pooled = false;
  if (breaker_open()) return nullptr;
  {
    std::lock_guard lock(pool_mu_);
    if (!idle_.empty()) {
      ConnPtr c = std::move(idle_.back());
      idle_.pop_back();
      *pooled = true;
      return c;
    }
  }
  auto c = connect(url_.operation_timeout);
  if (!c) {
    failed(c.error());
    return nullptr;
  }
  return std::move(*c);
}

void RedisTier::release(ConnPtr c) {
  std::lock_guard lock(pool_mu_);
  if (idle_.size() < kMaxIdle) idle_.push_back(std::move(c));
}

namespace {

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

}  // namespace

bool RedisTier::run(const std::vector<std::vector<std::string>>& commands,
                    std::vector<Reply>* replies, const Meanwhile& meanwhile) {
  bool ran = !meanwhile;
  const std::function<void()> once = [&] {
    if (!ran) {
      ran = true;
      meanwhile();
    }
  };
  bool ok = false;
  // A pooled connection may have died since (a restarted server): one fresh try then.
  for (int attempt = 0; attempt < 2; ++attempt) {
    bool pooled = false;
    const Attempt a = run_once(commands, replies, &pooled, once);
    ok = a == Attempt::done;
    if (a != Attempt::transport_failed || !pooled) break;
    if (replies != nullptr) replies->clear();
  }
  once();
  return ok;
}

RedisTier::Attempt RedisTier::run_once(const std::vector<std::vector<std::string>>& commands,
                                       std::vector<Reply>* replies, bool* pooled,
                                       const std::function<void()>& meanwhile) {
  ConnPtr c = acquire(pooled);
  if (!c) return Attempt::failed;
  for (const auto& args : commands) {
    std::vector<const char*> argv;
    std::vector<std::size_t> lens;
    for (const auto& a : args) {
      argv.push_back(a.data());
      lens.push_back(a.size());
    }
    if (redisAppendCommandArgv(c->ctx, static_cast<int>(argv.size()), argv.data(), lens.data()) !=
        REDIS_OK) {
      failed(fmt::format("redis {}: {}", url_.display(), c->ctx->errstr));
      return Attempt::failed;
    }
  }
  const bool sent = send_buffered(c->ctx);
  const int send_errno = errno;
  meanwhile();
  errno = send_errno;
  std::string error_reply;
  for (std::size_t i = 0; i < commands.size(); ++i) {
    void* raw = nullptr;
    const ReadResult got = sent ? read_reply(c->ctx, &raw, max_reply_bytes_) : ReadResult::failed;
    if (got == ReadResult::oversized) {
      // A record larger than this cache takes (or a peer that is not Redis): this call fails
      // and the connection goes, but Redis is not taken for unusable.
      if (log_)
        log_->logf(util::Level::warn,
                   "remote tier: a reply from {} was longer than {} bytes; not read (the call "
                   "fails)",
                   url_.display(), max_reply_bytes_);
      return Attempt::oversized;
    }
    if (got != ReadResult::ok || raw == nullptr) {
      // The connection is dropped: its stream may be out of step. A pooled one that the server
      // closed (not one that timed out) gets one more try on a fresh connection.
      const bool timed_out =
          c->ctx->err == REDIS_ERR_IO && (errno == EAGAIN || errno == EWOULDBLOCK);
      if (*pooled && !timed_out) return Attempt::transport_failed;
      failed(fmt::format("redis {}: {}", url_.display(),
                         timed_out ? std::string("no answer within operation_timeout")
                                   : why_failed(c->ctx, "no answer")));
      return Attempt::failed;
    }
    const ReplyPtr r(static_cast<redisReply*>(raw), &freeReplyObject);
    if (r->type == REDIS_REPLY_ERROR && error_reply.empty())
      error_reply = fmt::format("redis {}: {} answered: {}", url_.display(), commands[i][0],
                                std::string_view(r->str, r->len));
    if (replies != nullptr) {
      replies->emplace_back();
      convert(r.get(), &replies->back(), 0);
    }
  }
  release(std::move(c));
  if (!error_reply.empty()) {
    failed(error_reply);
    return Attempt::failed;
  }
  succeeded();
  return Attempt::done;
}

std::string RedisTier::entry_key(std::string_view stored_key) const {
  std::string k = url_.prefix;
  k.append(":e:");
  k.append(stored_key);
  return k;
}

std::string RedisTier::category_key(std::string_view category) const {
  std::string k = url_.prefix;
  k.append(":c:");
  k.append(category);
  return k;
}

std::vector<std::string> RedisTier::event_command(Change::Kind kind, std::string_view arg,
                                                  std::string_view scope) const {
  return {"XADD",
          url_.prefix + ":events",
          "MAXLEN",
          "~",
          std::to_string(kStreamLength),
          "*",
          "o",
          origin_,
          "t",
          std::to_string(static_cast<int>(kind)),
          "a",
          std::string(arg),
          "s",
          std::string(scope)};
}

void RedisTier::remember(Change::Kind kind, std::string_view arg, std::string_view scope) {
  std::lock_guard lock(pending_mu_);
  if (pending_.size() >= kMaxPending) {
    if (pending_dropped_++ == 0 && log_)
      log_->logf(util::Level::warn,
                 "remote tier: more than {} writes waiting for Redis; later ones will not be "
                 "replayed (their keys stay as they are on the remote)",
                 kMaxPending);
    return;
  }
  pending_.push_back(Change{kind, std::string(arg), std::string(scope)});
}

bool RedisTier::check() {
  {
    std::lock_guard lock(state_mu_);
    retry_at_ = {};  // an explicit question is asked even during a pause
  }
  return run({{"PING"}}, nullptr);
}

StreamId RedisTier::last_id_of(const Reply& r) {
  if (r.elements.size() == 1 && !r.elements[0].elements.empty())
    if (auto id = parse_id(r.elements[0].elements[0].str)) return *id;
  return {0, 0};
}

std::optional<StreamId> RedisTier::applied_position() {
  std::lock_guard lock(early_mu_);
  if (positioned_) return applied_;
  return std::nullopt;
}

std::optional<Entry> RedisTier::accept(std::string_view stored_key, std::string_view bytes) {
  RecordFault fault{};
  std::optional<Entry> e = unseal(stored_key, bytes, url_.secret, &fault);
  if (!e && log_) {
    // Logged for the first few and then every 1000th, so a flood of planted records does not
    // flood the log.
    const std::uint64_t n = rejected_.fetch_add(1, std::memory_order_relaxed);
    if (n < 10 || n % 1000 == 0)
      log_->logf(util::Level::warn,
                 "remote tier: the record of '{}' is {}; read as a miss ({} so far)", stored_key,
                 fault == RecordFault::unsigned_record
                     ? "not signed (secret_file is set: only records signed with it are used)"
                 : fault == RecordFault::bad_tag
                     ? "signed with another secret, or altered (its HMAC-SHA256 tag does not "
                       "verify with secret_file)"
                     : "malformed",
                 n + 1);
  }
  return e;
}

Tier::Outcome RedisTier::get(std::string_view stored_key, Entry* out, StreamId* at,
                             const Meanwhile& meanwhile) {
  std::vector<Reply> replies;
  // Once the listener has a position, what it has applied is the position (read before the
  // entry, so every change up to it is in what the GET reads); until then the stream's end is
  // asked for with the entry.
  const std::optional<StreamId> applied = applied_position();
  std::vector<std::vector<std::string>> cmds;
  if (!applied) cmds.push_back(last_id_command());
  cmds.push_back({"GET", entry_key(stored_key)});
  if (!run(cmds, &replies, meanwhile)) return Outcome::error;
  if (applied) {
    *at = *applied;
  } else {
    *at = last_id_of(replies[0]);
    note_fetch(*at);
  }
  const Reply& r = replies.back();
  if (r.type != REDIS_REPLY_STRING) return Outcome::miss;
  if (r.str.size() > kMaxRecordBytes) return Outcome::miss;
  auto e = accept(stored_key, r.str);
  if (!e) return Outcome::rejected;
  *out = std::move(*e);
  return Outcome::hit;
}

namespace {

// The expiry Redis gets: the stale window too (stale reads keep working), at least 1 ms.
std::optional<std::int64_t> expiry_ms(const Entry& e, double stale_factor) {
  if (e.ttl_ms <= 0) return std::nullopt;
  const double ms = static_cast<double>(e.ttl_ms) * stale_factor;
  constexpr double kMax = 9.0e15;  // well inside Redis's limit
  return static_cast<std::int64_t>(std::clamp(ms, 1.0, kMax));
}

}  // namespace

Tier::Outcome RedisTier::read_current(std::string_view stored_key, std::optional<std::string>* raw,
                                      std::optional<Entry>* current) {
  raw->reset();
  current->reset();
  std::vector<Reply> replies;
  if (!run({{"GET", entry_key(stored_key)}}, &replies)) return Outcome::error;
  const Reply& r = replies.back();
  if (r.type != REDIS_REPLY_STRING) return Outcome::miss;
  *raw = r.str;
  if (r.str.size() <= kMaxRecordBytes) *current = accept(stored_key, r.str);
  return *current ? Outcome::hit : Outcome::miss;
}

Tier::Cas RedisTier::put_if_unchanged(std::string_view stored_key,
                                      const std::optional<std::string>& raw, const Entry& e) {
  if (url_.read_only) return Cas::error;
  const auto ms = expiry_ms(e, stale_factor_);
  std::vector<std::string> cmd{"EVAL",
                               kCompareAndSet,
                               "3",
                               entry_key(stored_key),
                               category_key(e.category),
                               url_.prefix + ":events",
                               raw ? "1" : "0",
                               raw.value_or(std::string()),
                               seal(stored_key, e, url_.secret),
                               ms ? std::to_string(*ms) : std::string("-1"),
                               std::string(stored_key),
                               url_.prefix + ":e:",
                               std::to_string(kStreamLength)};
  std::vector<std::string> event = event_command(Change::Kind::key, stored_key, {});
  cmd.insert(cmd.end(), event.begin() + 6, event.end());  // the fields after "XADD s MAXLEN ~ n *"
  std::vector<Reply> replies;
  if (!run({cmd}, &replies)) return Cas::error;
  return replies.back().integer == 1 ? Cas::swapped : Cas::conflict;
}

std::vector<Tier::Outcome> RedisTier::get_many(const std::vector<std::string>& stored_keys,
                                               std::vector<Entry>* out, StreamId* at,
                                               const Meanwhile& meanwhile) {
  std::vector<Outcome> outcomes(stored_keys.size(), Outcome::error);
  out->assign(stored_keys.size(), Entry{});
  if (stored_keys.empty()) {
    if (meanwhile) meanwhile();
    return outcomes;
  }
  const std::optional<StreamId> applied = applied_position();
  if (applied) *at = *applied;
  const std::size_t skip = applied ? 0 : 1;
  for (std::size_t from = 0; from < stored_keys.size(); from += kBatch) {
    const std::size_t to = std::min(stored_keys.size(), from + kBatch);
    std::vector<std::vector<std::string>> cmds;
    if (!applied) cmds.push_back(last_id_command());
    for (std::size_t i = from; i < to; ++i) cmds.push_back({"GET", entry_key(stored_keys[i])});
    std::vector<Reply> replies;
    // The first batch runs `meanwhile` (run() runs it exactly once, whatever happens).
    if (!run(cmds, &replies, from == 0 ? meanwhile : Meanwhile())) break;
    if (from == 0 && !applied) {
      *at = last_id_of(replies[0]);  // the earliest: later batches are newer
      note_fetch(*at);
    }
    for (std::size_t i = from; i < to; ++i) {
      const Reply& r = replies[i - from + skip];
      if (r.type != REDIS_REPLY_STRING || r.str.size() > kMaxRecordBytes) {
        outcomes[i] = Outcome::miss;
        continue;
      }
      std::optional<Entry> e = accept(stored_keys[i], r.str);
      outcomes[i] = e ? Outcome::hit : Outcome::rejected;
      if (e) (*out)[i] = std::move(*e);
    }
  }
  return outcomes;
}

void RedisTier::append_put(std::string_view key, const Entry& e,
                           std::vector<std::vector<std::string>>* cmds) const {
  append_set(key, e, cmds);
  std::vector<std::string> index = index_command(e.category);
  append_member(key, e, &index);
  cmds->push_back(std::move(index));
  cmds->push_back(event_command(Change::Kind::key, key, {}));
}

std::vector<std::string> RedisTier::index_command(std::string_view category) const {
  return {"EVAL", kIndexAdd, "1", category_key(category), url_.prefix + ":e:"};
}

void RedisTier::append_member(std::string_view key, const Entry& e,
                              std::vector<std::string>* index) const {
  index->emplace_back(key);
  const auto ms = expiry_ms(e, stale_factor_);
  index->push_back(ms ? std::to_string(*ms) : std::string("-1"));
}

void RedisTier::append_set(std::string_view key, const Entry& e,
                           std::vector<std::vector<std::string>>* cmds) const {
  std::vector<std::string> set{"SET", entry_key(key), seal(key, e, url_.secret)};
  if (const auto ms = expiry_ms(e, stale_factor_)) {
    set.push_back("PX");
    set.push_back(std::to_string(*ms));
  }
  cmds->push_back(std::move(set));
}

bool RedisTier::put_many(const std::vector<std::pair<std::string, Entry>>& items,
                         const Meanwhile& meanwhile) {
  if (url_.read_only || items.empty()) {
    if (meanwhile) meanwhile();
    return true;
  }
  // A SET per entry, one index update per category and a stream item per kEventKeys keys (the
  // listener applies each "a" of an item).
  std::vector<std::vector<std::string>> cmds;
  cmds.reserve(items.size() + 2);
  std::map<std::string_view, std::vector<std::string>> by_category;
  for (const auto& [key, e] : items) {
    append_set(key, e, &cmds);
    auto& index = by_category[e.category];
    if (index.empty()) index = index_command(e.category);
    append_member(key, e, &index);
  }
  for (auto& [category, index] : by_category) cmds.push_back(std::move(index));
  for (std::size_t from = 0; from < items.size(); from += kEventKeys) {
    std::vector<std::string> event = event_command(Change::Kind::key, items[from].first, {});
    for (std::size_t i = from + 1; i < std::min(items.size(), from + kEventKeys); ++i) {
      event.push_back("a");
      event.push_back(items[i].first);
    }
    cmds.push_back(std::move(event));
  }
  if (run(cmds, nullptr, meanwhile)) return true;
  for (const auto& item : items) remember(Change::Kind::key, item.first, {});
  return false;
}

bool RedisTier::put(std::string_view stored_key, const Entry& e, const Meanwhile& meanwhile) {
  if (url_.read_only) {
    if (meanwhile) meanwhile();
    return true;
  }
  std::vector<std::vector<std::string>> cmds;
  append_put(stored_key, e, &cmds);  // the value is copied once, by encode()
  if (run(cmds, nullptr, meanwhile)) return true;
  remember(Change::Kind::key, stored_key, {});
  return false;
}

bool RedisTier::remove_keys(const std::vector<std::string>& stored_keys, Change::Kind kind,
                            std::string_view arg, std::string_view scope) {
  for (std::size_t from = 0; from < stored_keys.size(); from += kBatch) {
    std::vector<std::string> unlink{"UNLINK"};
    for (std::size_t i = from; i < std::min(stored_keys.size(), from + kBatch); ++i)
      unlink.push_back(entry_key(stored_keys[i]));
    if (!run({unlink}, nullptr)) return false;
  }
  return run({event_command(kind, arg, scope)}, nullptr);
}

bool RedisTier::remove(std::string_view stored_key) {
  if (url_.read_only) return true;
  if (remove_keys({std::string(stored_key)}, Change::Kind::key, stored_key, {})) return true;
  remember(Change::Kind::key, stored_key, {});
  return false;
}

bool RedisTier::remove_category(std::string_view category, std::string_view scope) {
  if (url_.read_only) return true;
  const auto attempt = [&]() {
    std::vector<Reply> members;
    if (!run({{"EVAL", kIndexMembers, "1", category_key(category)}}, &members)) return false;
    std::vector<std::string> candidates;
    for (const Reply& m : members.front().elements)
      if (hooks_.matches(m.str, scope, nullptr)) candidates.push_back(m.str);
    // A member may have been rewritten in another category since: only entries whose record
    // still names this category go. Members checked are taken out of the set either way.
    std::vector<std::string> doomed;
    for (std::size_t from = 0; from < candidates.size(); from += kBatch) {
      const std::size_t to = std::min(candidates.size(), from + kBatch);
      std::vector<std::vector<std::string>> cmds;
      for (std::size_t i = from; i < to; ++i) cmds.push_back({"GET", entry_key(candidates[i])});
      std::vector<Reply> got;
      if (!run(cmds, &got)) return false;
      std::vector<std::string> srem{"EVAL", kIndexRemove, "1", category_key(category)};
      for (std::size_t i = from; i < to; ++i) {
        const Reply& r = got[i - from];
        std::optional<Entry> e;
        RecordFault fault{};
        if (r.type == REDIS_REPLY_STRING) e = unseal(candidates[i], r.str, url_.secret, &fault);
        if (e && e->category == category) doomed.push_back(candidates[i]);
        srem.push_back(candidates[i]);
      }
      if (!run({srem}, nullptr)) return false;
    }
    return remove_keys(doomed, Change::Kind::category, category, scope);
  };
  if (attempt()) return true;
  remember(Change::Kind::category, category, scope);
  return false;
}

bool RedisTier::scan_remove(const std::string& match, Change::Kind kind, std::string_view arg,
                            std::string_view scope, const std::string* glob) {
  const std::string entry_prefix = url_.prefix + ":e:";
  std::string cursor = "0";
  do {
    std::vector<Reply> r;
    if (!run({{"SCAN", cursor, "MATCH", match, "COUNT", "1000"}}, &r)) return false;
    const Reply& page = r.front();
    if (page.elements.size() != 2) return false;
    cursor = page.elements[0].str;
    std::vector<std::string> doomed;
    for (const Reply& k : page.elements[1].elements) {
      if (!std::string_view(k.str).starts_with(entry_prefix)) continue;
      std::string stored = k.str.substr(entry_prefix.size());
      if (hooks_.matches(stored, scope, glob)) doomed.push_back(std::move(stored));
    }
    if (!doomed.empty()) {
      std::vector<std::string> unlink{"UNLINK"};
      for (const auto& d : doomed) unlink.push_back(entry_key(d));
      if (!run({unlink}, nullptr)) return false;
    }
  } while (cursor != "0");
  return run({event_command(kind, arg, scope)}, nullptr);
}

bool RedisTier::remove_matching(std::string_view glob, std::string_view scope) {
  if (url_.read_only) return true;
  const std::string g(glob);
  // The scan looks only under the literal start every match has (unless that could be an
  // escaped key of the unnamed namespace, which is stored with one more NUL).
  std::string literal;
  for (char c : g) {
    if (c == '*' || c == '?' || c == '[' || c == '\\') break;
    literal.push_back(c);
  }
  if (scope.empty() && literal.starts_with('\0')) literal.clear();
  const std::string match =
      match_literal(url_.prefix + ":e:") + match_literal(scope) + match_literal(literal) + "*";
  if (scan_remove(match, Change::Kind::pattern, glob, scope, &g)) return true;
  remember(Change::Kind::pattern, glob, scope);
  return false;
}

bool RedisTier::remove_all(std::string_view scope) {
  if (url_.read_only) return true;
  const std::string match = match_literal(url_.prefix + ":e:") + match_literal(scope) + "*";
  if (scan_remove(match, Change::Kind::clear, {}, scope, nullptr)) return true;
  remember(Change::Kind::clear, {}, scope);
  return false;
}

bool RedisTier::apply_pending(const Change& c) {
  switch (c.kind) {
    case Change::Kind::key: {
      std::optional<Entry> e = hooks_.local_entry ? hooks_.local_entry(c.arg) : std::nullopt;
      return e ? put(c.arg, *e) : remove(c.arg);
    }
    case Change::Kind::category:
      return remove_category(c.arg, c.scope);
    case Change::Kind::pattern:
      return remove_matching(c.arg, c.scope);
    case Change::Kind::clear:
      return remove_all(c.scope);
  }
  return true;
}

void RedisTier::replay_pending() {
  std::deque<Change> todo;
  std::uint64_t dropped = 0;
  {
    std::lock_guard lock(pending_mu_);
    todo.swap(pending_);
    std::swap(dropped, pending_dropped_);
  }
  if (todo.empty()) return;
  std::size_t done = 0;
  // Each failed replay remembers itself again (put/remove/... do), so stop at the first one
  // and put the rest back in order.
  while (!todo.empty()) {
    Change c = std::move(todo.front());
    todo.pop_front();
    if (!apply_pending(c)) break;
    ++done;
  }
  if (!todo.empty()) {
    std::lock_guard lock(pending_mu_);
    for (auto& c : todo)
      if (pending_.size() < kMaxPending) pending_.push_back(std::move(c));
  }
  if (log_)
    log_->logf(util::Level::info,
               "remote tier: replayed {} write(s) made while Redis was unreachable{}", done,
               dropped > 0 ? fmt::format(" ({} more were not kept)", dropped) : std::string());
}

void RedisTier::note_fetch(StreamId at) {
  std::lock_guard lock(early_mu_);
  if (positioned_) return;
  if (!have_early_ || at < early_) early_ = at;
  have_early_ = true;
}

void RedisTier::set_applied(std::string_view id) {
  const std::optional<StreamId> at = parse_id(id);
  if (!at) return;
  std::lock_guard lock(early_mu_);
  positioned_ = true;
  applied_ = *at;
}

void RedisTier::save_position(const std::string& id) {
  if (state_file_.empty()) return;
  (void)util::atomic_write_file(state_file_, fmt::format("{}\n{}\n", url_.prefix, id));
}

void RedisTier::listen() {
  // Where this tier last read the stream (a previous process's position, if it was on this
  // prefix), so changes made while nobody here listened are applied too.
  std::string last;
  if (!state_file_.empty()) {
    if (auto content = util::read_file(state_file_); content && content->size() < 256) {
      const std::size_t nl = content->find('\n');
      if (nl != std::string::npos && content->substr(0, nl) == url_.prefix) {
        std::string id = content->substr(nl + 1);
        while (!id.empty() && (id.back() == '\n' || id.back() == '\r')) id.pop_back();
        if (parse_id(id)) last = id;
      }
    }
  }
  const std::string stream = url_.prefix + ":events";
  milliseconds pause{100};
  std::string saved = last;
  auto saved_at = Clock::now();
  const auto stopping = [&](milliseconds wait) {
    std::unique_lock lock(stop_mu_);
    return stop_cv_.wait_for(lock, wait, [&] { return stop_; });
  };
  while (!stopping(milliseconds(0))) {
    auto conn = connect(url_.operation_timeout + kBlock);
    if (!conn) {
      failed(conn.error());
      if (stopping(pause)) break;
      pause = std::min(pause * 2, milliseconds(2000));
      continue;
    }
    redisContext* ctx = (*conn)->ctx;
    pause = milliseconds(100);
    bool ok = true;
    std::string refused;  // an error reply's text
    // Writes that did not reach Redis go first: a gap found below drops the local copies, and
    // the replay reads them. Pooled connections from before are likely dead.
    {
      std::lock_guard lock(pool_mu_);
      idle_.clear();
    }
    {
      std::lock_guard lock(state_mu_);
      retry_at_ = {};
    }
    replay_pending();
    bool replayed = false;
    {
      std::lock_guard lock(pending_mu_);
      replayed = pending_.empty();
    }
    if (!replayed) {  // Redis refused them: try again later, before anything else
      if (stopping(pause)) break;
      continue;
    }
    if (last.empty()) {
      // First start on this prefix: from the stream's end, or from where the earliest fetch
      // made so far read, if that is earlier.
      const ReplyPtr r =
          command(ctx, {"XREVRANGE", stream, "+", "-", "COUNT", "1"}, listener_reply_bytes_);
      ok = r != nullptr && r->type != REDIS_REPLY_ERROR;
      if (r != nullptr && r->type == REDIS_REPLY_ERROR) refused.assign(r->str, r->len);
      StreamId end{0, 0};
      if (ok && r->type == REDIS_REPLY_ARRAY && r->elements == 1 &&
          r->element[0]->type == REDIS_REPLY_ARRAY && r->element[0]->elements >= 1 &&
          r->element[0]->element[0]->type == REDIS_REPLY_STRING)
        end = parse_id({r->element[0]->element[0]->str, r->element[0]->element[0]->len})
                  .value_or(StreamId{0, 0});
      if (ok) {
        std::lock_guard lock(early_mu_);
        if (have_early_ && early_ < end) end = early_;
        positioned_ = true;
        applied_ = end;
        last = fmt::format("{}-{}", end.first, end.second);
      }
    } else {
      // Back after a while: were changes removed from the stream before this tier read them?
      // Trimming removes the oldest items, so they were if the stream's first item is past this
      // tier's position (its own last item is gone), if it is empty but has had items past it,
      // or if it is gone (Redis lost its data) while this tier had read some. Conservative: a
      // position whose next items all survive may still count as a gap.
      const ReplyPtr r = command(ctx, {"XINFO", "STREAM", stream}, listener_reply_bytes_);
      ok = r != nullptr;
      const StreamId mine = parse_id(last).value_or(StreamId{0, 0});
      bool gap = false;
      StreamId newest{0, 0};
      if (ok && r->type == REDIS_REPLY_ERROR) {
        if (std::string_view(r->str, r->len).find("no such key") != std::string_view::npos) {
          gap = mine > StreamId{0, 0};
        } else {
          ok = false;
          refused.assign(r->str, r->len);
        }
      } else if (ok && r->type == REDIS_REPLY_ARRAY) {
        long long length = -1;
        StreamId first{0, 0};
        for (std::size_t i = 0; i + 1 < r->elements; i += 2) {
          const redisReply* name = r->element[i];
          const redisReply* value = r->element[i + 1];
          if (name->type != REDIS_REPLY_STRING) continue;
          const std::string_view n(name->str, name->len);
          if (n == "length" && value->type == REDIS_REPLY_INTEGER) length = value->integer;
          if (value->type != REDIS_REPLY_STRING) continue;
          const StreamId id = parse_id({value->str, value->len}).value_or(StreamId{0, 0});
          if (n == "last-generated-id") newest = id;
          if (n == "recorded-first-entry-id") first = id;
        }
        gap = length == 0 ? newest > mine : (length > 0 && first > mine);
      }
      if (ok && gap) {
        if (log_)
          log_->logf(util::Level::warn,
                     "remote tier: changes were removed from the stream before this cache read "
                     "them; dropping the local copies");
        if (hooks_.on_gap) hooks_.on_gap(std::max(newest, mine));
        last = newest > StreamId{0, 0} ? fmt::format("{}-{}", newest.first, newest.second) : last;
      }
      if (ok) set_applied(last);
    }
    if (!ok) {
      failed(fmt::format("redis {}: {}", url_.display(),
                         !refused.empty()         ? "reading the change stream: " + refused
                         : ctx->errstr[0] != '\0' ? why_failed(ctx, "")
                                                  : std::string("reading the change stream")));
      if (stopping(pause)) break;
      continue;
    }
    succeeded();
    listening_ = true;
    while (!stopping(milliseconds(0))) {
      const ReplyPtr r = command(ctx,
                                 {"XREAD", "COUNT", std::to_string(kReadCount), "BLOCK",
                                  std::to_string(kBlock.count()), "STREAMS", stream, last},
                                 listener_reply_bytes_);
      if (r == nullptr || r->type == REDIS_REPLY_ERROR) {
        listening_ = false;
        failed(r == nullptr
                   ? fmt::format("redis {}: {}", url_.display(), why_failed(ctx, "no answer"))
                   : fmt::format("redis {}: XREAD answered: {}", url_.display(),
                                 std::string_view(r->str, r->len)));
        break;
      }
      if (down_.load()) succeeded();  // a call failed meanwhile, but Redis answers again
      if (r->type == REDIS_REPLY_ARRAY && r->elements == 1 &&
          r->element[0]->type == REDIS_REPLY_ARRAY && r->element[0]->elements == 2) {
        const redisReply* items = r->element[0]->element[1];
        for (std::size_t i = 0; items->type == REDIS_REPLY_ARRAY && i < items->elements; ++i) {
          const redisReply* item = items->element[i];
          if (item->type != REDIS_REPLY_ARRAY || item->elements != 2 ||
              item->element[0]->type != REDIS_REPLY_STRING)
            continue;
          last.assign(item->element[0]->str, item->element[0]->len);
          const redisReply* fields = item->element[1];
          std::string o, sc;
          std::vector<std::string> args;  // a key item names one key or more
          int kind = 0;
          for (std::size_t f = 0; fields->type == REDIS_REPLY_ARRAY && f + 1 < fields->elements;
               f += 2) {
            const redisReply* n = fields->element[f];
            const redisReply* v = fields->element[f + 1];
            if (n->type != REDIS_REPLY_STRING || v->type != REDIS_REPLY_STRING) continue;
            const std::string_view name(n->str, n->len);
            const std::string_view value(v->str, v->len);
            if (name == "o")
              o = value;
            else if (name == "a" && args.size() < kMaxEventArgs)
              args.emplace_back(value);
            else if (name == "s")
              sc = value;
            else if (name == "t" && value.size() == 1)
              kind = value[0] - '0';
          }
          if (o == origin_ || kind < 1 || kind > 4 || !hooks_.on_change) continue;
          const auto k = static_cast<Change::Kind>(kind);
          const StreamId id = parse_id(last).value_or(StreamId{0, 0});
          if (args.empty()) args.emplace_back();
          // Only a key item names several; for the others the first is the argument.
          if (k != Change::Kind::key) args.resize(1);
          for (std::string& a : args) hooks_.on_change(Change{k, std::move(a), sc, id});
        }
      }
      set_applied(last);
      {
        std::lock_guard lock(pending_mu_);
        ok = pending_.empty();
      }
      if (!ok && !breaker_open()) replay_pending();
      if (last != saved && Clock::now() - saved_at > std::chrono::seconds(1)) {
        save_position(last);
        saved = last;
        saved_at = Clock::now();
      }
      // After items, a short pause gathers the next ones into one read: a burst of writes (this
      // cache's own, which it reads back too) wakes the listener once per pause, not per item.
      if (r->type == REDIS_REPLY_ARRAY && stopping(kGather)) break;
    }
    if (stopping(milliseconds(0))) break;
    if (stopping(pause)) break;
  }
  if (last.empty()) {
    std::lock_guard lock(early_mu_);
    if (have_early_) last = fmt::format("{}-{}", early_.first, early_.second);
  }
  if (last != saved && !last.empty()) save_position(last);
}

util::Result<std::unique_ptr<Tier>> open_tier(RemoteUrl url, double stale_factor,
                                              std::uint64_t max_value_bytes,
                                              std::filesystem::path state_file, TierHooks hooks,
                                              const util::Logger* log) {
  const std::uint64_t record = max_value_bytes == 0
                                   ? kMaxRecordBytes
                                   : std::min<std::uint64_t>(kMaxRecordBytes, max_value_bytes);
  return std::unique_ptr<Tier>(
      std::make_unique<RedisTier>(std::move(url), stale_factor, record + kReplySlack,
                                  std::move(state_file), std::move(hooks), log));
}

}  // namespace larder::remote
