#include "core/near_cache.hpp"

#include "util/glob.hpp"

namespace larder::core {

namespace detail {

remote::Entry remote_entry(const SetRequest& q, std::int64_t created_ns) {
  return remote::Entry{q.value, q.category, q.metadata, created_ns, q.ttl_ms};
}

// Sends the local entry of `key` (after add, touch, incr) to the remote tier, or its removal
// when there is none.
void push_local(Backend& b, std::string_view key) {
  remote::Tier* t = b.remote();
  if (t == nullptr) return;
  const std::optional<remote::Entry> e = local_entry_for_remote(b, key);
  if (!(e ? t->put(key, *e) : t->remove(key))) b.counters().remote_error++;
}

// What a local miss of `key` does with a remote tier: the remote's entry, unless it is expired
// (past stale_factor x TTL), stored locally with its own created time and TTL so its status is
// How old a remote entry is at `now`, in TTLs: below 1 fresh, from 1 to stale_factor stale, then
// expired (the remote keeps no invalid entries). 0 for an entry without a TTL.
double age_in_ttls(const remote::Entry& e, std::int64_t now) {
  if (e.ttl_ms <= 0) return 0.0;
  return (static_cast<double>(now) - static_cast<double>(e.created_ns)) /
         (static_cast<double>(e.ttl_ms) * 1e6);
}

// What the remote answered for `key`, read at stream position `at`.
// `defer`: the local copy is stored later (Backend::defer_fill), not before this returns.
std::optional<RemoteCopy> keep_remote(Backend& b, std::string_view key, remote::Tier::Outcome o,
                                      remote::Entry&& entry, remote::StreamId at, bool defer) {
  switch (o) {
    case remote::Tier::Outcome::error:
    case remote::Tier::Outcome::rejected:
      b.counters().remote_error++;
      return std::nullopt;
    case remote::Tier::Outcome::miss:
      b.counters().remote_miss++;
      return std::nullopt;
    case remote::Tier::Outcome::hit:
      break;
  }
  RemoteCopy c;
  c.entry = std::move(entry);
  const std::int64_t now = b.now_ns();
  const double age = age_in_ttls(c.entry, now);
  if (age >= b.resolved().config.stale_factor) {  // expired
    b.counters().remote_miss++;
    return std::nullopt;
  }
  c.fresh = age < 1.0;
  const remote::Entry& e = c.entry;
  b.counters().remote_hit++;
  // A change from another cache applied meanwhile may have been about this key: then the copy
  // is served this once, not kept.
  if (b.remote_changed_since(key, at) || b.resolved().read_only) return c;
  if (defer) {  // stored with the next round trip or before the next local operation
    b.defer_fill(Backend::Fill{std::string(key), c.entry, at});
    return c;
  }
  engine::SetOutcome outcome = engine::SetOutcome::skipped;
  (void)run(
      b, "storing a remote entry",
      [&](Engine& en) {
        return en.update(
            key, now,
            [&](const engine::Found* current) {
              std::optional<engine::Rewrite> w;
              if (!is_fresh(current))
                w = engine::Rewrite{e.value, e.ttl_ms, e.category, e.metadata, e.created_ns};
              return w;
            },
            &outcome);
      },
      key);
  c.stored = outcome == engine::SetOutcome::stored;
  return c;
}

// True when reads must not serve local copies now: the remote URL says outage=miss and the
// change listener is disconnected (a copy might be older than what another cache wrote), or the
// listener is dropping every local copy after a gap in the change stream.
bool outage_miss(Backend& b) {
  const remote::Tier* t = b.remote();
  if (t == nullptr) return false;
  if (b.dropping_copies()) return true;
  return t->url().outage == remote::RemoteUrl::Outage::miss && !t->listening();
}

// An entry as the remote holds it, described as a local one (accessed now).
Entry remote_as_entry(std::string_view key, remote::Entry e, bool fresh, std::int64_t now) {
  engine::Found rf;
  rf.status = fresh ? EntryStatus::fresh : EntryStatus::stale;
  rf.size = e.value.size();
  rf.header.category = std::move(e.category);
  rf.header.metadata = std::move(e.metadata);
  rf.header.created_ns = e.created_ns;
  rf.header.ttl_ms = e.ttl_ms;
  engine::AccessRecord ra;
  ra.last_access_ns = now;
  Entry entry;
  entry.info = make_info(key, rf, ra, now);
  entry.value = std::move(e.value);
  return entry;
}

// `defer`: as keep_remote's; the fills already waiting are stored during the round trip.
std::optional<RemoteCopy> from_remote(Backend& b, std::string_view key, bool defer) {
  remote::Tier* t = b.remote();
  if (t == nullptr) return std::nullopt;
  remote::Entry e;
  remote::StreamId at{};
  const remote::Tier::Outcome o = t->get(key, &e, &at, [&b] { b.settle_fills(); });
  return keep_remote(b, key, o, std::move(e), at, defer);
}

}  // namespace detail

using namespace detail;

void apply_remote_change(Backend& b, const remote::Change& c) {
  std::size_t n = 0;
  (void)run(
      b, "applying a remote change",
      [&](Engine& e) {
        std::vector<std::string> keys;
        kv::Status st;
        switch (c.kind) {
          case remote::Change::Kind::key: {
            bool removed = false;
            return e.remove(c.arg, &removed);
          }
          case remote::Change::Kind::category:
            st = e.keys_in_category(c.arg, &keys);
            if (st.ok())
              std::erase_if(keys, [&](const std::string& k) { return !in_scope(k, c.scope); });
            return st.ok() ? e.invalidate_keys(keys, &n) : st;
          case remote::Change::Kind::pattern:
            st = e.keys(stored_key(c.scope, util::glob_literal_prefix(c.arg)), &keys);
            if (st.ok())
              std::erase_if(keys, [&](const std::string& k) {
                return !in_scope(k, c.scope) || !util::glob_match(c.arg, user_key(c.scope, k));
              });
            return st.ok() ? e.invalidate_keys(keys, &n) : st;
          case remote::Change::Kind::clear:
            st = e.keys(c.scope, &keys);
            if (st.ok())
              std::erase_if(keys, [&](const std::string& k) { return !in_scope(k, c.scope); });
            return st.ok() ? e.remove_keys(keys, &n) : st;
        }
        return st;
      },
      c.kind == remote::Change::Kind::key ? std::string_view(c.arg) : std::string_view(),
      c.kind == remote::Change::Kind::key ? Wrote::listed : Wrote::everything);
}

std::optional<remote::Entry> local_entry_for_remote(Backend& b, std::string_view key) {
  engine::Found f;
  const kv::Status s = run(b, "reading an entry for the remote tier", [&](Engine& e) {
    return e.read(key, b.now_ns(), engine::Want::value, &f);
  });
  if (!s.ok() || (f.status != EntryStatus::fresh && f.status != EntryStatus::stale))
    return std::nullopt;
  return remote::Entry{std::move(f.value), f.header.category, f.header.metadata,
                       f.header.created_ns, f.header.ttl_ms};
}

void drop_local_copies(Backend& b, const std::function<bool(std::string_view)>& keep) {
  std::size_t n = 0;
  (void)run(
      b, "dropping local copies",
      [&](Engine& e) { return e.remove_if([&](std::string_view k) { return !keep(k); }, &n); }, {},
      Wrote::everything);
}

}  // namespace larder::core
