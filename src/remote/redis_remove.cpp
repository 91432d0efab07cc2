// The remote tier's removals: keys, categories (their indexes), patterns (SCAN) and everything
// under the prefix (redis_tier.hpp).
#include <algorithm>
#include <cerrno>
#include <charconv>
#include <cstring>

#include <fmt/format.h>

#include "remote/redis_tier.hpp"
#include "util/fs.hpp"
#include "util/ttl.hpp"

namespace larder::remote {

namespace detail {

namespace {

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

}  // namespace

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

}  // namespace detail

}  // namespace larder::remote
