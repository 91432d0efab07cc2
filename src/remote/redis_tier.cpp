// The remote tier over hiredis: reads and writes of entries (redis_tier.hpp). Connections and
// the breaker are in redis_conn.cpp, bulk removals in redis_remove.cpp, the listener in
// redis_listener.cpp.
#include <algorithm>
#include <cerrno>
#include <charconv>
#include <cstring>

#include <fmt/format.h>

#include "remote/redis_tier.hpp"
#include "util/fs.hpp"
#include "util/hmac.hpp"
#include "util/ttl.hpp"

namespace larder::remote {

namespace detail {

namespace {

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
  if (kind == Change::Kind::key) ++unsynced_[arg];
}

void RedisTier::count_unsynced(std::string_view stored_key, int delta) {
  std::lock_guard lock(pending_mu_);
  auto it = unsynced_.find(stored_key);
  if (it == unsynced_.end()) it = unsynced_.emplace(std::string(stored_key), 0).first;
  it->second += delta;
  if (it->second <= 0) unsynced_.erase(it);
}

bool RedisTier::unsynced(std::string_view stored_key) {
  std::lock_guard lock(pending_mu_);
  return unsynced_.contains(stored_key);
}

bool RedisTier::check() {
  breaker_.probe_now();  // an explicit question is asked even during a pause
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
  // Counted before the local writes (meanwhile) until remembered: a gap found meanwhile spares
  // them (TierHooks::on_gap).
  for (const auto& item : items) count_unsynced(item.first, +1);
  const bool ok = run(cmds, nullptr, meanwhile);
  for (const auto& item : items) {
    if (!ok) remember(Change::Kind::key, item.first, {});
    count_unsynced(item.first, -1);
  }
  return ok;
}

bool RedisTier::put(std::string_view stored_key, const Entry& e, const Meanwhile& meanwhile) {
  if (url_.read_only) {
    if (meanwhile) meanwhile();
    return true;
  }
  std::vector<std::vector<std::string>> cmds;
  append_put(stored_key, e, &cmds);  // the value is copied once, by encode()
  count_unsynced(stored_key, +1);    // as in put_many
  const bool ok = run(cmds, nullptr, meanwhile);
  if (!ok) remember(Change::Kind::key, stored_key, {});
  count_unsynced(stored_key, -1);
  return ok;
}

}  // namespace detail

util::Result<std::unique_ptr<Tier>> open_tier(RemoteUrl url, double stale_factor,
                                              std::uint64_t max_value_bytes,
                                              std::filesystem::path state_file, TierHooks hooks,
                                              const util::Logger* log) {
  const std::uint64_t record =
      max_value_bytes == 0 ? detail::kMaxRecordBytes
                           : std::min<std::uint64_t>(detail::kMaxRecordBytes, max_value_bytes);
  return std::unique_ptr<Tier>(std::make_unique<detail::RedisTier>(
      std::move(url), stale_factor, record + detail::kReplySlack, std::move(state_file),
      std::move(hooks), log));
}

}  // namespace larder::remote
