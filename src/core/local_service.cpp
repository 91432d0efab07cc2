// LocalService: the cache operations over this process's Backend (store or memory). Every
// function is noexcept in spirit for I/O: failures become misses or false, counted and logged
// by Backend::finish.
#include <unistd.h>

#include <cerrno>
#include <csignal>

#include <algorithm>
#include <charconv>
#include <fstream>
#include <limits>
#include <set>

#include <fmt/format.h>

#include "core/backend.hpp"
#include "core/service.hpp"
#include "util/glob.hpp"

namespace larder::core {

using engine::Engine;

namespace {

// Counts a public operation when it ends, so a statistics write it triggers includes it.
class CallCount {
 public:
  explicit CallCount(Backend& b) : b_(b) {}
  ~CallCount() { b_.note_call(); }
  CallCount(const CallCount&) = delete;
  CallCount& operator=(const CallCount&) = delete;

 private:
  Backend& b_;
};

using Wrote = Backend::Wrote;

// Runs `f` on the engine of the moment and reports its outcome to the backend, which counts and
// logs a failure: callers that only need f's results may ignore the status returned.
template <class F>
kv::Status run_unsettled(Backend& b, std::string_view what, F&& f, std::string_view written = {},
                         Wrote scope = Wrote::listed) {
  const Backend::Lease lease = b.begin();
  const kv::Status s = f(*lease.engine);
  b.finish(lease, s, what, written, scope);
  return s;
}
// As run_unsettled(), once the remote copies a get returned and did not store yet are stored.
template <typename F>
kv::Status run(Backend& b, std::string_view what, F&& f, std::string_view written = {},
               Wrote scope = Wrote::listed) {
  b.settle_fills();
  return run_unsettled(b, what, std::forward<F>(f), written, scope);
}

// A read that found `key`'s entry undecodable: counted and logged by run(); remove it so the
// next read is a plain miss.
void drop_if_corrupt(Backend& b, const kv::Status& s, std::string_view key) {
  if (s.code != kv::Code::corruption) return;
  const Backend::Lease lease = b.begin();
  b.finish(lease, lease.engine->drop_corrupt(key), "dropping a corrupt entry", key);
}

// A read-only view (Config::read_only) refuses every write: false or 0, logged, not counted as
// an error (nothing failed).
bool read_only(Backend& b, std::string_view what) {
  if (!b.resolved().read_only) return false;
  b.log().logf(util::Level::debug, "{} refused: the cache is open read-only", what);
  return true;
}

EntryInfo make_info(std::string_view key, const engine::Found& f, const engine::AccessRecord& a,
                    std::int64_t now_ns) {
  using std::chrono::nanoseconds;
  using std::chrono::system_clock;
  auto tp = [](std::int64_t ns) {
    return system_clock::time_point(
        std::chrono::duration_cast<system_clock::duration>(nanoseconds(ns)));
  };
  EntryInfo info;
  info.key = std::string(key);
  info.category = f.header.category;
  info.status = f.status;
  info.size_bytes = f.size;
  info.created_at = tp(f.header.created_ns);
  info.last_accessed = tp(a.last_access_ns);
  if (f.header.ttl_ms > 0) {
    // Saturates (at the clock's last representable time) instead of overflowing for huge TTLs.
    const std::int64_t max_ttl_ms = (std::numeric_limits<std::int64_t>::max() -
                                     std::max<std::int64_t>(f.header.created_ns, 0)) /
                                    1'000'000LL;
    info.expires_at = f.header.ttl_ms >= max_ttl_ms
                          ? tp(std::numeric_limits<std::int64_t>::max())
                          : tp(f.header.created_ns + f.header.ttl_ms * 1'000'000LL);
  }
  info.access_count = a.access_count;
  info.metadata = f.header.metadata;
  info.observed_at = tp(now_ns);
  return info;
}

}  // namespace

std::vector<std::optional<std::string>> Service::get_many(const std::vector<std::string>& keys) {
  std::vector<std::optional<std::string>> out;
  out.reserve(keys.size());
  for (const auto& k : keys) out.push_back(get(k));
  return out;
}

std::vector<bool> Service::set_many(const std::vector<SetRequest>& requests) {
  std::vector<bool> out;
  out.reserve(requests.size());
  for (const auto& r : requests) out.push_back(set(r));
  return out;
}

std::shared_ptr<Service::Flight> Service::join_flight(std::string_view key, bool* leader) {
  std::lock_guard lock(flights_mu_);
  auto [it, inserted] = flights_.try_emplace(std::string(key));
  if (inserted) it->second = std::make_shared<Flight>();
  *leader = inserted;
  return it->second;
}

stats::Counters& Service::ns_counters(std::string_view name) {
  std::lock_guard lock(ns_mu_);
  auto it = ns_counters_.find(name);
  if (it == ns_counters_.end())
    it = ns_counters_.emplace(std::string(name), std::make_unique<stats::Counters>()).first;
  return *it->second;
}

void Service::end_flight(std::string_view key) {
  std::lock_guard lock(flights_mu_);
  flights_.erase(std::string(key));
}

LocalService::LocalService(std::shared_ptr<Backend> backend) : backend_(std::move(backend)) {}

namespace {

// Logs why a write was not stored; true when it was.
bool stored(Backend& b, engine::SetOutcome outcome, std::string_view what, std::string_view key) {
  if (outcome == engine::SetOutcome::stored) return true;
  if (outcome != engine::SetOutcome::skipped)
    b.log().logf(util::Level::debug, "{} of '{}' refused: {}", what, key,
                 outcome == engine::SetOutcome::too_large
                     ? "value larger than max_size_bytes"
                     : "cache full of live entries (ttl policy)");
  return false;
}

engine::Rewrite rewrite_of(const SetRequest& q, std::string value) {
  return engine::Rewrite{std::move(value), q.ttl_ms, q.category, q.metadata, std::nullopt};
}

bool is_fresh(const engine::Found* current) {
  return current != nullptr && current->status == EntryStatus::fresh;
}

// A decimal int64 and nothing else ("-12", not " 12", "+12" or "1e3").
std::optional<std::int64_t> parse_int(std::string_view text) {
  std::int64_t v = 0;
  const char* end = text.data() + text.size();
  const auto [ptr, ec] = std::from_chars(text.data(), end, v);
  if (ec != std::errc() || ptr != end || text.empty()) return std::nullopt;
  return v;
}

}  // namespace

namespace {

// ---- The remote tier (Backend::remote(); docs/remote.md)

// Whether `value` is over the byte limit of `e` (stored in neither tier).
bool too_large(const Engine& e, std::string_view value) {
  return !e.value_fits(value.size());
}

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
// the same here. Counts remote_hit / remote_miss / remote_error. Returns the entry and whether
// it is fresh now; nullopt for a remote miss or error.
struct RemoteCopy {
  remote::Entry entry;
  bool fresh = false;
  bool stored = false;  // stored locally already (not when deferred, nor when served this once)
};
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
                                      remote::Entry&& entry, remote::StreamId at,
                                      bool defer = false) {
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
// change listener is disconnected (a copy might be older than what another cache wrote).
bool outage_miss(Backend& b) {
  const remote::Tier* t = b.remote();
  return t != nullptr && t->url().outage == remote::RemoteUrl::Outage::miss && !t->listening();
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

// What a call the remote decides (add, incr, touch, compare_and_set,
// get_and_touch) did there.
enum class Decided : std::uint8_t { written, refused, unavailable };

// Runs a call whose outcome must hold across every machine sharing the remote tier: reads the
// record, `decide(current or nullptr when none is fresh, now)` gives the entry to write (nullopt:
// the call is refused, nothing written), which is written only if the record did not change
// meanwhile (another machine's call: read again). The entry written is then stored locally as
// it is: the local tier follows the remote (other machines drop their copies through the change
// stream). unavailable: no remote tier, a read_only URL, or Redis not usable (counted as a
// remote error): the caller runs the call on the local tier alone, as every call does then.
template <class Decide>
Decided remote_decides(Backend& b, std::string_view key, Decide&& decide) {
  remote::Tier* t = b.remote();
  if (t == nullptr || t->url().read_only) return Decided::unavailable;
  // Each lost race means another machine's call went through; each attempt is two round trips
  // bounded by operation_timeout.
  constexpr int kAttempts = 100;
  for (int attempt = 0; attempt < kAttempts; ++attempt) {
    std::optional<std::string> raw;
    std::optional<remote::Entry> current;
    if (t->read_current(key, &raw, &current) == remote::Tier::Outcome::error) {
      b.counters().remote_error++;
      return Decided::unavailable;
    }
    const std::int64_t now = b.now_ns();
    if (current && age_in_ttls(*current, now) >= 1.0) current.reset();  // not fresh
    std::optional<remote::Entry> next = decide(current ? &*current : nullptr, now);
    if (!next) return Decided::refused;
    if (too_large(*b.begin().engine, next->value)) return Decided::refused;  // as set(): neither
    switch (t->put_if_unchanged(key, raw, *next)) {
      case remote::Tier::Cas::conflict:
        continue;
      case remote::Tier::Cas::error:
        b.counters().remote_error++;
        return Decided::unavailable;
      case remote::Tier::Cas::swapped:
        break;
    }
    const remote::Entry& e = *next;
    engine::SetOutcome outcome = engine::SetOutcome::skipped;
    const kv::Status s = run(
        b, "storing an entry the remote decided",
        [&](Engine& en) {
          return en.update(
              key, now,
              [&](const engine::Found*) {
                return std::optional(
                    engine::Rewrite{e.value, e.ttl_ms, e.category, e.metadata, e.created_ns});
              },
              &outcome);
        },
        key);
    drop_if_corrupt(b, s, key);
    return Decided::written;
  }
  b.log().logf(util::Level::warn,
               "'{}': the remote record changed under {} attempts in a row; the call is refused",
               key, kAttempts);
  return Decided::refused;
}

// `defer`: as keep_remote's; the fills already waiting are stored during the round trip.
std::optional<RemoteCopy> from_remote(Backend& b, std::string_view key, bool defer = false) {
  remote::Tier* t = b.remote();
  if (t == nullptr) return std::nullopt;
  remote::Entry e;
  remote::StreamId at{};
  const remote::Tier::Outcome o = t->get(key, &e, &at, [&b] { b.settle_fills(); });
  return keep_remote(b, key, o, std::move(e), at, defer);
}

}  // namespace

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

void drop_local_copies(Backend& b) {
  std::size_t n = 0;
  (void)run(
      b, "dropping local copies", [&](Engine& e) { return e.clear(&n); }, {}, Wrote::everything);
}

bool LocalService::set(const SetRequest& q) {
  return set_impl(q, /*write_remote=*/true, nullptr);
}

std::vector<bool> LocalService::set_many(const std::vector<SetRequest>& requests) {
  std::vector<bool> out(requests.size(), false);
  if (requests.empty() || read_only(*backend_, "set_many")) return out;
  Backend& b = *backend_;
  const CallCount counted(b);
  const std::int64_t now = b.now_ns();
  // The items within the byte limit are stored in one batch (one write for all of them), while
  // Redis takes them in one pipeline; the others go to neither tier. Should the batch find no
  // room (a ttl cache full of live entries, or a batch larger than the limits), the items are
  // set one by one instead, each as set() would.
  std::vector<engine::SetItem> items;
  std::vector<std::string> written;
  std::vector<std::size_t> which;
  const Engine& limits = *b.begin().engine;
  for (std::size_t i = 0; i < requests.size(); ++i) {
    const SetRequest& q = requests[i];
    if (too_large(limits, q.value)) {
      b.log().logf(util::Level::debug, "set of '{}' refused: value larger than max_size_bytes",
                   q.key);
      continue;
    }
    items.push_back({q.key, q.value, q.ttl_ms, q.category, &q.metadata, std::nullopt});
    written.push_back(q.key);
    which.push_back(i);
  }
  if (items.empty()) return out;
  engine::SetOutcome outcome = engine::SetOutcome::full;
  kv::Status s;
  const auto local = [&] {
    b.settle_fills();
    const Backend::Lease lease = b.begin();
    s = lease.engine->set_all(items, now, &outcome);
    b.finish(lease, s, "set_many", std::span<const std::string>(written));
  };
  if (remote::Tier* t = b.remote()) {
    std::vector<std::pair<std::string, remote::Entry>> through;
    through.reserve(which.size());
    for (std::size_t i : which)
      through.emplace_back(requests[i].key, remote_entry(requests[i], now));
    if (!t->put_many(through, local)) b.counters().remote_error++;
  } else {
    local();
  }
  if (!s.ok()) return out;
  if (outcome == engine::SetOutcome::stored) {
    for (std::size_t i : which) out[i] = true;
    b.counters().set += which.size();
    return out;
  }
  for (std::size_t i : which) out[i] = set_impl(requests[i], /*write_remote=*/false, nullptr);
  return out;
}

bool LocalService::set_impl(const SetRequest& q, bool write_remote, std::int64_t* created_ns) {
  if (read_only(*backend_, "set")) return false;
  Backend& b = *backend_;
  const CallCount counted(b);
  engine::SetOutcome outcome = engine::SetOutcome::full;
  const std::int64_t now = b.now_ns();
  if (created_ns != nullptr) *created_ns = now;
  kv::Status s;
  const auto local = [&] {
    s = run(
        b, "set",
        [&](Engine& e) {
          return e.set(q.key, q.value, q.ttl_ms, q.category, q.metadata, now, &outcome);
        },
        q.key);
  };
  // With a remote tier, the local write is made while Redis takes the entry (one round trip
  // overlapping the local write). A value over the byte limit goes to neither tier; one the
  // local tier refuses otherwise (a failing disk, a ttl cache full of live entries) is still
  // on the remote (docs/remote.md).
  if (remote::Tier* t = write_remote ? b.remote() : nullptr;
      t != nullptr && !too_large(*b.begin().engine, q.value)) {
    if (!t->put(q.key, remote_entry(q, now), local)) b.counters().remote_error++;
  } else {
    local();
  }
  if (!s.ok()) return false;
  if (outcome != engine::SetOutcome::stored) {
    b.log().logf(util::Level::debug, "set of '{}' refused: {}", q.key,
                 outcome == engine::SetOutcome::too_large
                     ? "value larger than max_size_bytes"
                     : "cache full of live entries (ttl policy)");
    return false;
  }
  b.counters().set++;
  return true;
}

bool LocalService::add(const SetRequest& q) {
  if (read_only(*backend_, "add")) return false;
  Backend& b = *backend_;
  const CallCount counted(b);
  switch (remote_decides(
      b, q.key,
      [&](const remote::Entry* current, std::int64_t now) -> std::optional<remote::Entry> {
        if (current != nullptr) return std::nullopt;
        return remote_entry(q, now);
      })) {
    case Decided::written:
      b.counters().set++;
      return true;
    case Decided::refused:
      return false;
    case Decided::unavailable:
      break;
  }
  engine::SetOutcome outcome = engine::SetOutcome::skipped;
  const kv::Status s = run(
      b, "add",
      [&](Engine& e) {
        return e.update(
            q.key, b.now_ns(),
            [&](const engine::Found* current) {
              return is_fresh(current) ? std::nullopt : std::optional(rewrite_of(q, q.value));
            },
            &outcome);
      },
      q.key);
  drop_if_corrupt(b, s, q.key);
  if (!s.ok() || !stored(b, outcome, "add", q.key)) return false;
  b.counters().set++;
  push_local(b, q.key);
  return true;
}

bool LocalService::touch(std::string_view key, std::int64_t ttl_ms) {
  if (read_only(*backend_, "touch")) return false;
  Backend& b = *backend_;
  const CallCount counted(b);
  switch (remote_decides(
      b, key, [&](const remote::Entry* current, std::int64_t now) -> std::optional<remote::Entry> {
        if (current == nullptr) return std::nullopt;
        remote::Entry e = *current;  // a lifetime that starts now
        e.created_ns = now;
        e.ttl_ms = ttl_ms;
        return e;
      })) {
    case Decided::written:
      return true;
    case Decided::refused:
      return false;
    case Decided::unavailable:
      break;
  }
  engine::SetOutcome outcome = engine::SetOutcome::skipped;
  const kv::Status s = run(
      b, "touch",
      [&](Engine& e) {
        return e.update(
            key, b.now_ns(),
            [&](const engine::Found* current) {
              std::optional<engine::Rewrite> w;
              // The same value, category and metadata, with a lifetime that starts now.
              if (is_fresh(current))
                w = engine::Rewrite{current->value, ttl_ms, current->header.category,
                                    current->header.metadata, std::nullopt};
              return w;
            },
            &outcome);
      },
      key);
  drop_if_corrupt(b, s, key);
  if (!s.ok() || !stored(b, outcome, "touch", key)) return false;
  push_local(b, key);
  return true;
}

bool LocalService::compare_and_set(const SetRequest& q, std::string_view expected) {
  if (read_only(*backend_, "compare_and_set")) return false;
  Backend& b = *backend_;
  const CallCount counted(b);
  switch (remote_decides(
      b, q.key,
      [&](const remote::Entry* current, std::int64_t now) -> std::optional<remote::Entry> {
        if (current == nullptr || current->value != expected) return std::nullopt;
        return remote_entry(q, now);
      })) {
    case Decided::written:
      b.counters().set++;
      return true;
    case Decided::refused:
      return false;
    case Decided::unavailable:
      break;
  }
  engine::SetOutcome outcome = engine::SetOutcome::skipped;
  const kv::Status s = run(
      b, "compare_and_set",
      [&](Engine& e) {
        return e.update(
            q.key, b.now_ns(),
            [&](const engine::Found* current) {
              return is_fresh(current) && current->value == expected
                         ? std::optional(rewrite_of(q, q.value))
                         : std::nullopt;
            },
            &outcome);
      },
      q.key);
  drop_if_corrupt(b, s, q.key);
  if (!s.ok() || !stored(b, outcome, "compare_and_set", q.key)) return false;
  b.counters().set++;
  push_local(b, q.key);
  return true;
}

std::optional<Entry> LocalService::get_and_touch(std::string_view key, std::int64_t ttl_ms) {
  if (!valid_key(key) || read_only(*backend_, "get_and_touch")) {
    backend_->counters().miss++;
    return std::nullopt;
  }
  Backend& b = *backend_;
  const CallCount counted(b);
  std::optional<remote::Entry> renewed;
  switch (remote_decides(
      b, key, [&](const remote::Entry* current, std::int64_t now) -> std::optional<remote::Entry> {
        renewed.reset();
        if (current == nullptr) return std::nullopt;
        remote::Entry e = *current;  // a lifetime that starts now
        e.created_ns = now;
        e.ttl_ms = ttl_ms;
        renewed = e;
        return e;
      })) {
    case Decided::written:
      b.counters().hit++;
      return remote_as_entry(key, std::move(*renewed), /*fresh=*/true, b.now_ns());
    case Decided::refused:
      b.counters().miss++;
      return std::nullopt;
    case Decided::unavailable:
      break;
  }
  engine::SetOutcome outcome = engine::SetOutcome::skipped;
  const std::int64_t now = b.now_ns();
  engine::Found read;  // the entry as it is now stored: the same value, a lifetime from now
  engine::AccessRecord access;
  const kv::Status s = run(
      b, "get_and_touch",
      [&](Engine& e) {
        kv::Status st = e.update(
            key, now,
            [&](const engine::Found* current) {
              std::optional<engine::Rewrite> w;
              if (is_fresh(current)) {
                read = *current;
                read.header.created_ns = now;
                read.header.ttl_ms = ttl_ms;
                w = engine::Rewrite{current->value, ttl_ms, current->header.category,
                                    current->header.metadata, std::nullopt};
              }
              return w;
            },
            &outcome);
        if (st.ok() && outcome == engine::SetOutcome::stored) {
          if (!b.resolved().read_only) e.record_access(key, now);
          if (!e.access_of(key, &access).ok()) access.last_access_ns = now;
        }
        return st;
      },
      key);
  drop_if_corrupt(b, s, key);
  if (!s.ok() || !stored(b, outcome, "get_and_touch", key)) {
    b.counters().miss++;
    return std::nullopt;
  }
  b.counters().hit++;
  push_local(b, key);
  Entry entry;
  entry.info = make_info(key, read, access, now);
  entry.value = std::move(read.value);
  return entry;
}

std::optional<std::int64_t> LocalService::incr(const SetRequest& q, std::int64_t delta) {
  if (read_only(*backend_, "incr")) return std::nullopt;
  Backend& b = *backend_;
  const CallCount counted(b);
  engine::SetOutcome outcome = engine::SetOutcome::skipped;
  std::optional<std::int64_t> result;
  const char* refused = nullptr;
  switch (remote_decides(
      b, q.key,
      [&](const remote::Entry* current, std::int64_t now) -> std::optional<remote::Entry> {
        result.reset();
        std::int64_t sum = delta;
        if (current == nullptr) {  // a missing counter starts at 0, with the call's options
          remote::Entry e = remote_entry(q, now);
          e.value = std::to_string(sum);
          result = sum;
          return e;
        }
        const auto old = parse_int(current->value);
        if (!old) {
          refused = "the stored value is not a decimal integer";
          return std::nullopt;
        }
        if (__builtin_add_overflow(*old, delta, &sum)) {
          refused = "the sum overflows a 64-bit integer";
          return std::nullopt;
        }
        remote::Entry e = *current;  // a counter keeps its lifetime, category and metadata
        e.value = std::to_string(sum);
        result = sum;
        return e;
      })) {
    case Decided::written:
      b.counters().set++;
      return result;
    case Decided::refused:
      if (refused != nullptr)
        b.log().logf(util::Level::debug, "incr of '{}' refused: {}", q.key, refused);
      return std::nullopt;
    case Decided::unavailable:
      result.reset();
      refused = nullptr;
      break;
  }
  const kv::Status s = run(
      b, "incr",
      [&](Engine& e) {
        return e.update(
            q.key, b.now_ns(),
            [&](const engine::Found* current) {
              std::optional<engine::Rewrite> w;
              std::int64_t sum = delta;
              if (!is_fresh(current)) {  // a missing counter starts at 0, with the call's options
                w = rewrite_of(q, std::to_string(sum));
              } else if (const auto old = parse_int(current->value); !old) {
                refused = "the stored value is not a decimal integer";
              } else if (__builtin_add_overflow(*old, delta, &sum)) {
                refused = "the sum overflows a 64-bit integer";
              } else {
                // A counter keeps its lifetime (created time and TTL), category and metadata.
                w = engine::Rewrite{std::to_string(sum), current->header.ttl_ms,
                                    current->header.category, current->header.metadata,
                                    current->header.created_ns};
              }
              if (w) result = sum;
              return w;
            },
            &outcome);
      },
      q.key);
  drop_if_corrupt(b, s, q.key);
  if (refused != nullptr)
    b.log().logf(util::Level::debug, "incr of '{}' refused: {}", q.key, refused);
  if (!s.ok() || !stored(b, outcome, "incr", q.key)) return std::nullopt;
  b.counters().set++;
  push_local(b, q.key);
  return result;
}

bool LocalService::set_all(const std::vector<SetRequest>& requests) {
  if (read_only(*backend_, "set_all")) return false;
  Backend& b = *backend_;
  const CallCount counted(b);
  std::vector<engine::SetItem> items;
  items.reserve(requests.size());
  for (const SetRequest& q : requests)
    items.push_back({q.key, q.value, q.ttl_ms, q.category, &q.metadata, std::nullopt});
  std::vector<std::string> written;
  written.reserve(requests.size());
  for (const SetRequest& q : requests) written.push_back(q.key);
  engine::SetOutcome outcome = engine::SetOutcome::full;
  const std::int64_t now = b.now_ns();
  b.settle_fills();
  const Backend::Lease lease = b.begin();
  const kv::Status s = lease.engine->set_all(items, now, &outcome);
  b.finish(lease, s, "set_all", std::span<const std::string>(written));
  if (!s.ok() || !stored(b, outcome, "set_all", requests.empty() ? "" : requests[0].key))
    return false;
  std::set<std::string_view> distinct;
  for (const SetRequest& q : requests) distinct.insert(q.key);
  b.counters().set += distinct.size();
  if (remote::Tier* t = b.remote()) {
    // One pipeline; the remote is not transactional: each entry is written on its own there.
    std::vector<std::pair<std::string, remote::Entry>> items_out;
    for (const SetRequest& q : requests) items_out.emplace_back(q.key, remote_entry(q, now));
    if (!t->put_many(items_out)) b.counters().remote_error++;
  }
  return true;
}

std::optional<std::string> LocalService::get(std::string_view key) {
  return get_impl(key, /*ask_remote=*/true, /*count_miss=*/true);
}

std::vector<std::optional<std::string>> LocalService::get_many(
    const std::vector<std::string>& keys) {
  return get_many(keys, std::numeric_limits<std::uint64_t>::max());
}

std::vector<std::optional<std::string>> LocalService::get_many(const std::vector<std::string>& keys,
                                                               std::uint64_t max_value_bytes) {
  std::vector<std::optional<std::string>> out;
  out.reserve(keys.size());
  remote::Tier* t = backend_->remote();
  std::uint64_t bytes = 0;
  for (const auto& k : keys) {
    out.push_back(get_impl(k, /*ask_remote=*/false, t == nullptr));
    if (out.back()) bytes += out.back()->size();
    if (bytes >= max_value_bytes) break;
  }
  if (t == nullptr) return out;
  // The local misses, asked of the remote in one pipeline.
  Backend& b = *backend_;
  std::vector<std::string> missing;
  std::vector<std::size_t> where;
  for (std::size_t i = 0; i < out.size(); ++i)
    if (!out[i]) {
      missing.push_back(keys[i]);
      where.push_back(i);
    }
  if (missing.empty()) return out;
  std::vector<remote::Entry> entries;
  remote::StreamId at{};
  const std::vector<remote::Tier::Outcome> outcomes =
      t->get_many(missing, &entries, &at, [&b] { b.settle_fills(); });
  for (std::size_t j = 0; j < missing.size(); ++j) {
    auto copy = keep_remote(b, missing[j], outcomes[j], std::move(entries[j]), at, /*defer=*/true);
    if (copy && copy->fresh) {
      b.counters().hit++;
      out[where[j]] = std::move(copy->entry.value);
    } else {
      b.counters().miss++;
    }
  }
  return out;
}

std::optional<std::string> LocalService::get_impl(std::string_view key, bool ask_remote,
                                                  bool count_miss) {
  Backend& b = *backend_;
  const CallCount counted(b);
  if (outage_miss(b)) {
    if (count_miss) b.counters().miss++;
    return std::nullopt;
  }
  const std::int64_t now = b.now_ns();
  engine::Found f;
  Engine* used = nullptr;
  const auto read = [&](Engine& e) {
    used = &e;
    return e.read(key, now, engine::Want::value_only, &f);
  };
  // Remote copies waiting to be stored (other keys', as a rule) are left waiting for the round
  // trip below, unless this key's is among them.
  kv::Status s = run_unsettled(b, "get", read);
  if (!(s.ok() && f.status == EntryStatus::fresh) && b.fill_waits(key)) {
    f = engine::Found();
    s = run(b, "get", read);
  }
  if (s.ok() && f.status == EntryStatus::fresh) {
    if (!b.resolved().read_only) used->record_access(key, now);  // a view records nothing
    b.counters().hit++;
    return std::move(f.value);
  }
  drop_if_corrupt(b, s, key);
  if (auto copy = ask_remote ? from_remote(b, key, /*defer=*/true) : std::nullopt;
      copy && copy->fresh) {
    b.counters().hit++;
    return std::move(copy->entry.value);
  }
  if (count_miss) b.counters().miss++;
  return std::nullopt;
}

std::optional<Entry> LocalService::get_entry(std::string_view key, bool include_stale) {
  Backend& b = *backend_;
  const CallCount counted(b);
  return local_get_entry(key, include_stale, /*ask_remote=*/b.remote() != nullptr);
}

std::optional<Entry> LocalService::local_get_entry(std::string_view key, bool include_stale,
                                                   bool ask_remote) {
  Backend& b = *backend_;
  if (outage_miss(b)) {
    b.counters().miss++;
    return std::nullopt;
  }
  const std::int64_t now = b.now_ns();
  engine::Found f;
  engine::AccessRecord a;
  bool hit = false;
  const kv::Status s = run(b, "get_entry", [&](Engine& e) {
    kv::Status st = e.read(key, now, engine::Want::value, &f);
    if (!st.ok() || (f.status != EntryStatus::fresh && !include_stale)) return st;
    if (!b.resolved().read_only) e.record_access(key, now);
    st = e.access_of(key, &a);
    if (st.not_found()) st = kv::Status();  // removed meanwhile: report what was read
    hit = st.ok();
    return st;
  });
  if (!s.ok() || !hit) {
    drop_if_corrupt(b, s, key);
    // A remote copy is stored locally (when no change raced it), then read as a local entry.
    if (auto copy = ask_remote ? from_remote(b, key) : std::nullopt; copy) {
      if (copy->stored) return local_get_entry(key, include_stale, false);
      if (copy->fresh || include_stale) {  // not kept: described from what the remote holds
        b.counters().hit++;
        return remote_as_entry(key, std::move(copy->entry), copy->fresh, now);
      }
    }
    b.counters().miss++;
    return std::nullopt;
  }
  b.counters().hit++;
  Entry entry;
  entry.info = make_info(key, f, a, now);
  entry.value = std::move(f.value);
  return entry;
}

bool LocalService::exists(std::string_view key) {
  Backend& b = *backend_;
  if (outage_miss(b)) return false;
  engine::Found f;
  const std::int64_t now = b.now_ns();
  const kv::Status s =
      run(b, "exists", [&](Engine& e) { return e.read(key, now, engine::Want::header, &f); });
  if (s.ok() && f.status == EntryStatus::fresh) return true;
  const auto copy = from_remote(b, key);
  return copy && copy->fresh;
}

std::optional<std::string> LocalService::peek(std::string_view key) {
  Backend& b = *backend_;
  engine::Found f;
  const std::int64_t now = b.now_ns();
  const kv::Status s =
      run(b, "peek", [&](Engine& e) { return e.read(key, now, engine::Want::value_only, &f); });
  if (s.ok() && f.status == EntryStatus::fresh) return std::move(f.value);
  return std::nullopt;
}

std::optional<EntryInfo> LocalService::metadata(std::string_view key) {
  Backend& b = *backend_;
  engine::Found f;
  engine::AccessRecord a;
  const std::int64_t now = b.now_ns();
  const kv::Status s = run(b, "metadata", [&](Engine& e) {
    kv::Status st = e.read(key, now, engine::Want::header, &f);
    if (st.ok()) st = e.access_of(key, &a);
    return st;
  });
  if (!s.ok()) return std::nullopt;
  return make_info(key, f, a, now);
}

bool LocalService::remove(std::string_view key) {
  if (read_only(*backend_, "remove")) return false;
  Backend& b = *backend_;
  const CallCount counted(b);
  bool removed = false;
  const kv::Status s = run(
      b, "remove", [&](Engine& e) { return e.remove(key, &removed); }, key);
  if (s.ok() && removed) b.counters().del++;
  if (remote::Tier* t = b.remote(); t != nullptr && !t->remove(key)) b.counters().remote_error++;
  return s.ok() && removed;
}

namespace {

// The stored keys of `scope` (any status), in key order.
kv::Status scope_keys(Engine& e, std::string_view scope, std::vector<std::string>* out) {
  kv::Status s = e.keys(scope, out);
  if (s.ok() && scope.size() <= 1)
    std::erase_if(*out, [&](const std::string& k) { return !in_scope(k, scope); });
  return s;
}

kv::Status category_keys(Engine& e, std::string_view category, std::string_view scope,
                         std::vector<std::string>* out) {
  kv::Status s = e.keys_in_category(category, out);
  if (s.ok()) std::erase_if(*out, [&](const std::string& k) { return !in_scope(k, scope); });
  return s;
}

}  // namespace

std::size_t LocalService::clear(std::string_view scope) {
  if (read_only(*backend_, "clear")) return 0;
  Backend& b = *backend_;
  const CallCount counted(b);
  std::size_t n = 0;
  const kv::Status s = run(
      b, "clear",
      [&](Engine& e) {
        // The whole store at once while no stored key starts with NUL (no named namespace, no
        // escaped key); else key by key. One look suffices: the scan stops at the first key.
        bool any_nul = false;
        kv::Status st =
            scope.empty() ? e.has_keys(std::string_view("\0", 1), &any_nul) : kv::Status();
        if (st.ok() && scope.empty() && !any_nul) return e.clear(&n);
        std::vector<std::string> keys;
        if (st.ok()) st = scope_keys(e, scope, &keys);
        return st.ok() ? e.remove_keys(keys, &n) : st;
      },
      {}, Wrote::everything);
  if (remote::Tier* t = b.remote(); t != nullptr && !t->remove_all(scope))
    b.counters().remote_error++;
  if (!s.ok()) return 0;
  b.counters().del += n;
  return n;
}

std::size_t LocalService::clear_category(std::string_view category, std::string_view scope) {
  if (read_only(*backend_, "clear_category")) return 0;
  Backend& b = *backend_;
  const CallCount counted(b);
  std::size_t n = 0;  // on failure: what was removed before it
  (void)run(
      b, "clear_category",
      [&](Engine& e) {
        std::vector<std::string> keys;
        kv::Status st = category_keys(e, category, scope, &keys);
        return st.ok() ? e.remove_keys(keys, &n) : st;
      },
      {}, Wrote::everything);
  b.counters().del += n;
  if (remote::Tier* t = b.remote(); t != nullptr && !t->remove_category(category, scope))
    b.counters().remote_error++;
  return n;
}

bool LocalService::invalidate(std::string_view key) {
  if (read_only(*backend_, "invalidate")) return false;
  Backend& b = *backend_;
  const CallCount counted(b);
  std::size_t n = 0;
  const kv::Status s = run(
      b, "invalidate", [&](Engine& e) { return e.invalidate_keys({std::string(key)}, &n); }, key);
  if (remote::Tier* t = b.remote(); t != nullptr && !t->remove(key)) b.counters().remote_error++;
  return s.ok() && n == 1;
}

std::size_t LocalService::invalidate_category(std::string_view category, std::string_view scope) {
  if (read_only(*backend_, "invalidate_category")) return 0;
  Backend& b = *backend_;
  const CallCount counted(b);
  std::size_t n = 0;
  (void)run(
      b, "invalidate_category",
      [&](Engine& e) {
        std::vector<std::string> keys;
        kv::Status st = category_keys(e, category, scope, &keys);
        return st.ok() ? e.invalidate_keys(keys, &n) : st;
      },
      {}, Wrote::everything);
  if (remote::Tier* t = b.remote(); t != nullptr && !t->remove_category(category, scope))
    b.counters().remote_error++;
  return n;
}

std::size_t LocalService::invalidate_pattern(std::string_view glob, std::string_view scope) {
  if (read_only(*backend_, "invalidate_pattern")) return 0;
  Backend& b = *backend_;
  const CallCount counted(b);
  std::size_t n = 0;
  // The pattern applies to keys as the namespace's user knows them (without the prefix).
  const std::string prefix = stored_key(scope, util::glob_literal_prefix(glob));
  (void)run(
      b, "invalidate_pattern",
      [&](Engine& e) {
        std::vector<std::string> keys;
        kv::Status st = e.keys(prefix, &keys);
        if (!st.ok()) return st;
        std::erase_if(keys, [&](const std::string& k) {
          return !in_scope(k, scope) || !util::glob_match(glob, user_key(scope, k));
        });
        return e.invalidate_keys(keys, &n);
      },
      {}, Wrote::everything);
  if (remote::Tier* t = b.remote(); t != nullptr && !t->remove_matching(glob, scope))
    b.counters().remote_error++;
  return n;
}

std::vector<std::string> LocalService::keys(std::string_view scope) {
  std::vector<std::string> out;
  (void)run(*backend_, "keys", [&](Engine& e) { return scope_keys(e, scope, &out); });
  return out;
}

std::vector<std::string> LocalService::keys_in_category(std::string_view category,
                                                        std::string_view scope) {
  std::vector<std::string> out;
  (void)run(*backend_, "keys_in_category",
            [&](Engine& e) { return category_keys(e, category, scope, &out); });
  return out;
}

std::size_t LocalService::cleanup() {
  if (read_only(*backend_, "cleanup")) return 0;
  Backend& b = *backend_;
  std::size_t n = 0;
  const kv::Status s = run(b, "cleanup", [&](Engine& e) { return e.cleanup(b.now_ns(), &n); });
  if (s.ok()) b.counters().cleanup++;
  (void)b.save_stats();  // counted and logged
  return n;
}

Stats LocalService::stats() {
  Backend& b = *backend_;
  Stats st;
  b.counter_totals(&st);
  engine::StatusCounts counts;
  (void)run(b, "stats", [&](Engine& e) {
    st.total_entries = e.entries();
    st.total_size_bytes = e.bytes();
    st.categories = e.categories();
    return e.status_counts(b.now_ns(), &counts);
  });
  st.fresh_entries = counts.fresh;
  st.stale_entries = counts.stale;
  st.expired_entries = counts.expired;
  st.invalid_entries = counts.invalid;
  return st;
}

void LocalService::flush() {
  Backend& b = *backend_;
  (void)run(b, "flush", [&](Engine& e) { return e.flush_access(); });
  (void)b.save_stats();  // counted and logged
}

void LocalService::count_error(std::string_view what) {
  Backend& b = *backend_;
  b.counters().error++;
  if (!what.empty()) b.log().log(util::Level::warn, what);
}

std::vector<std::optional<Entry>> LocalService::inspect(const std::vector<std::string>& keys,
                                                        bool with_values) {
  Backend& b = *backend_;
  std::vector<std::optional<Entry>> out(keys.size());
  const std::int64_t now = b.now_ns();
  (void)run(b, "inspect", [&](Engine& e) {
    for (std::size_t i = 0; i < keys.size(); ++i) {
      engine::Found f;
      engine::AccessRecord a;
      kv::Status st =
          e.read(keys[i], now, with_values ? engine::Want::value : engine::Want::header, &f);
      if (st.ok()) st = e.access_of(keys[i], &a);
      if (st.not_found()) continue;  // not stored (or removed meanwhile)
      if (!st.ok()) return st;
      out[i] = Entry{std::move(f.value), make_info(keys[i], f, a, now)};
    }
    return kv::Status();
  });
  return out;
}

AdminResult LocalService::admin(AdminCommand command, std::int64_t arg) {
  Backend& b = *backend_;
  AdminResult res;
  // Maintenance works on the store itself, never on the memory stand-in of a degraded cache.
  auto on_store = [&](std::string_view what, auto&& f) {
    b.settle_fills();
    const Backend::Lease lease = b.begin();
    if (!lease.primary || b.degraded()) {
      b.finish(lease, kv::Status(), what);
      res.error = fmt::format("the store is not in use: {}", b.last_error());
      return;
    }
    const kv::Status s = f(*lease.engine);
    b.finish(lease, s, what, {}, Wrote::everything);
    res.ok = s.ok();
    if (!s.ok()) res.error = s.message;
  };
  auto verify_into = [&](Engine& e) {
    engine::VerifyReport report;
    const kv::Status s = e.verify(&report);
    res.lines = std::move(report.problems);
    res.count = res.lines.size();
    res.fields["entries"] = std::to_string(report.entries);
    res.fields["bytes"] = std::to_string(report.bytes);
    return s;
  };
  switch (command) {
    case AdminCommand::settings: {
      const engine::Options o = b.engine_options();
      const Config& c = b.resolved().config;
      res.ok = true;
      res.fields = {
          {"policy", to_string(o.policy)},
          {"max_entries", std::to_string(o.max_entries)},
          {"max_size_bytes", std::to_string(o.max_bytes)},
          {"limits_set_by", b.primary().admin_limits() ? "cachectl" : "config"},
          {"default_ttl_ms", std::to_string(o.default_ttl_ms)},
          {"stale_factor", fmt::format("{}", o.stale_factor)},
          {"cleanup_interval_s", std::to_string(c.cleanup_interval.count())},
          {"strategy", to_string(c.strategy)},
          {"directory", b.resolved().dir.string()},
          {"pid", std::to_string(::getpid())},
          {"read_only", b.resolved().read_only ? "true" : "false"},
          {"degraded", b.degraded() ? "true" : "false"},
          {"last_error", b.last_error()},
      };
      if (remote::Tier* t = b.remote()) {
        const bool up = t->check();
        res.fields["remote"] = t->url().display();
        res.fields["remote_reachable"] = up ? "true" : "false";
        res.fields["remote_error"] = up ? "" : t->last_error();
      } else if (b.resolved().remote) {
        res.fields["remote"] = b.resolved().remote->display();
        res.fields["remote_reachable"] = "false";
        res.fields["remote_error"] = b.last_error();  // e.g. built without Redis support
      }
      break;
    }
    case AdminCommand::verify:
      on_store("verify", verify_into);
      break;
    case AdminCommand::repair:
      on_store("repair", [&](Engine& e) {
        kv::Status s = e.rebuild();
        return s.ok() ? verify_into(e) : s;
      });
      break;
    case AdminCommand::compact:
      on_store("compact", [&](Engine& e) { return e.compact(); });
      break;
    case AdminCommand::evict_older_than:
      if (arg < 0) {
        res.error = "the age must not be negative";
        break;
      }
      on_store("evict_older_than", [&](Engine& e) {
        const std::int64_t cutoff = b.now_ns() - arg * 1'000'000'000;
        std::vector<std::string> keys, old;
        kv::Status s = e.keys({}, &keys);
        for (std::size_t i = 0; s.ok() && i < keys.size(); ++i) {
          engine::Found f;
          s = e.read(keys[i], b.now_ns(), engine::Want::header, &f);
          if (s.not_found()) {
            s = kv::Status();
          } else if (s.ok() && f.header.created_ns < cutoff) {
            old.push_back(keys[i]);
          }
        }
        std::size_t n = 0;
        if (s.ok()) s = e.remove_keys(old, &n);
        res.count = n;
        b.counters().eviction += n;
        return s;
      });
      break;
    case AdminCommand::set_max_entries:
    case AdminCommand::set_max_bytes:
    case AdminCommand::reset_limits: {
      if (arg < 0) {
        res.error = "a limit must not be negative";
        break;
      }
      const auto limit = static_cast<std::uint64_t>(arg);
      on_store("limits", [&](Engine& e) {
        std::size_t n = 0;
        kv::Status s;
        if (command == AdminCommand::reset_limits)
          s = e.reset_limits(b.now_ns(), &n);
        else if (command == AdminCommand::set_max_entries)
          s = e.set_limits(limit, std::nullopt, b.now_ns(), &n);
        else
          s = e.set_limits(std::nullopt, limit, b.now_ns(), &n);
        res.count = n;
        return s;
      });
      break;
    }
    case AdminCommand::zero_stats:
      if (auto zeroed = b.save_stats(stats::FoldMode::zero); !zeroed) {
        res.ok = false;
        res.error = zeroed.error();
      } else {
        res.ok = true;
      }
      break;
  }
  return res;
}

namespace {

// True when process `pid` is gone (a lease it held is void): no such process, or a zombie
// (killed, not yet reaped by its parent).
bool process_gone(std::int64_t pid) {
  if (pid <= 0) return false;
  if (::kill(static_cast<pid_t>(pid), 0) != 0) return errno == ESRCH;
  std::ifstream stat(fmt::format("/proc/{}/stat", pid));
  std::string line;
  if (!std::getline(stat, line)) return false;
  // "pid (comm) S ...": the state follows the last ')' (comm may hold spaces and parentheses).
  const auto close = line.rfind(')');
  return close != std::string::npos && close + 2 < line.size() &&
         (line[close + 2] == 'Z' || line[close + 2] == 'X');
}

constexpr std::size_t kMaxLeases = 100'000;
constexpr std::int64_t kMaxLeaseMs = 24LL * 3600 * 1000;

}  // namespace

bool LocalService::acquire_lease(std::string_view key, std::int64_t holder, std::int64_t timeout_ms,
                                 std::int64_t* wait_ms) {
  const auto now = std::chrono::steady_clock::now();
  std::lock_guard lock(leases_mu_);
  if (leases_.size() >= kMaxLeases)
    std::erase_if(leases_, [&](const auto& kv) { return kv.second.expires <= now; });
  auto [it, fresh] = leases_.try_emplace(std::string(key));
  Lease& l = it->second;
  if (!fresh && l.holder != holder && l.expires > now && !process_gone(l.holder)) {
    *wait_ms = std::chrono::duration_cast<std::chrono::milliseconds>(l.expires - now).count();
    return false;
  }
  if (fresh && leases_.size() > kMaxLeases) {  // every lease live: refuse rather than grow
    leases_.erase(it);
    *wait_ms = 10;
    return false;
  }
  l.holder = holder;
  // At most a day: a peer's number must not overflow the clock.
  l.expires = now + std::chrono::milliseconds(std::clamp<std::int64_t>(timeout_ms, 1, kMaxLeaseMs));
  *wait_ms = 0;
  return true;
}

void LocalService::release_lease(std::string_view key, std::int64_t holder) {
  std::lock_guard lock(leases_mu_);
  if (auto it = leases_.find(std::string(key)); it != leases_.end() && it->second.holder == holder)
    leases_.erase(it);
}

EventBatch LocalService::events_since(std::uint64_t from, std::size_t max) {
  return backend_->events().read(from, max);
}

bool LocalService::degraded() const {
  return backend_->degraded();
}
std::string LocalService::last_error() const {
  return backend_->last_error();
}
std::filesystem::path LocalService::directory() const {
  return backend_->resolved().dir;
}
const Config& LocalService::config() const {
  return backend_->resolved().config;
}
bool LocalService::inherited() const {
  return backend_->inherited();
}

}  // namespace larder::core
