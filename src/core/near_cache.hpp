// The near cache: how the local tier keeps copies of the remote tier's entries (docs/remote.md).
// A local miss asks the remote (from_remote / keep_remote), a write goes through to it
// (remote_entry, push_local), a call whose outcome must hold across machines is decided there
// (remote_decides), and changes other caches made are applied here (apply_remote_change, in
// service.hpp).
//
// Thread-safety: as Backend and remote::Tier.
#pragma once

#include <cstdint>
#include <optional>
#include <string_view>

#include "core/op_scope.hpp"
#include "remote/tier.hpp"

namespace larder::core::detail {

remote::Entry remote_entry(const SetRequest& q, std::int64_t created_ns);
// Sends the local entry of `key` (after add, touch, incr...) to the remote tier, or its
// removal when there is none.
void push_local(Backend& b, std::string_view key);

// A remote entry as a local miss found it: the entry, whether it is fresh now, whether it was
// stored locally already (not when deferred, nor when served this once).
struct RemoteCopy {
  remote::Entry entry;
  bool fresh = false;
  bool stored = false;
};
// How old a remote entry is at `now`, in TTLs: below 1 fresh, from 1 to stale_factor stale, then
// expired. 0 for an entry without a TTL.
double age_in_ttls(const remote::Entry& e, std::int64_t now);
// What the remote answered for `key`, read at stream position `at`: stored locally (or deferred,
// Backend::defer_fill) unless a change raced it. Counts remote_hit / remote_miss / remote_error;
// nullopt for a remote miss, error or expired entry.
std::optional<RemoteCopy> keep_remote(Backend& b, std::string_view key, remote::Tier::Outcome o,
                                      remote::Entry&& entry, remote::StreamId at,
                                      bool defer = false);
// A local miss of `key` asked of the remote (nullopt without a remote tier); `defer` as above.
std::optional<RemoteCopy> from_remote(Backend& b, std::string_view key, bool defer = false);
// True when reads must not serve local copies now: outage=miss and the change listener is
// disconnected, or the listener is dropping them after a gap (Backend::dropping_copies).
bool outage_miss(Backend& b);
// An entry as the remote holds it, described as a local one (accessed now).
Entry remote_as_entry(std::string_view key, remote::Entry e, bool fresh, std::int64_t now);

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

}  // namespace larder::core::detail
