// The steps every LocalService operation shares (local_service.cpp, local_admin.cpp,
// local_leases.cpp, near_cache.cpp): the operation's scope (OpScope: refused on a read-only
// view, counted when it ends), running a step on the
// engine of the moment and reporting its outcome to the Backend, dropping an entry found corrupt,
// refusing writes on a read-only view, and describing what the engine found as an EntryInfo.
//
// Thread-safety: as Backend; the helpers keep no state of their own.
#pragma once

#include <algorithm>
#include <charconv>
#include <limits>
#include <optional>
#include <string>
#include <string_view>

#include <fmt/format.h>

#include "core/backend.hpp"
#include "core/service.hpp"

namespace larder::core::detail {

using engine::Engine;

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
inline void drop_if_corrupt(Backend& b, const kv::Status& s, std::string_view key) {
  if (s.code != kv::Code::corruption) return;
  const Backend::Lease lease = b.begin();
  b.finish(lease, lease.engine->drop_corrupt(key), "dropping a corrupt entry", key);
}

// A read-only view (Config::read_only) refuses every write: false or 0, logged, not counted as
// an error (nothing failed).
inline bool read_only(Backend& b, std::string_view what) {
  if (!b.resolved().read_only) return false;
  b.log().logf(util::Level::debug, "{} refused: the cache is open read-only", what);
  return true;
}

// One public operation of LocalService, from its start to its end: a write on a read-only view
// is refused (refused(): logged, not counted); any other call is counted when the scope ends, so
// that a statistics write it triggers includes it. run() runs a step on the engine of the
// moment (as run() above, under the operation's name).
class OpScope {
 public:
  enum class Kind : std::uint8_t { read, write };
  OpScope(Backend& b, std::string_view what, Kind kind = Kind::read)
      : b_(b), what_(what), refused_(kind == Kind::write && read_only(b, what)) {}
  ~OpScope() {
    if (!refused_) b_.note_call();
  }
  OpScope(const OpScope&) = delete;
  OpScope& operator=(const OpScope&) = delete;

  bool refused() const { return refused_; }
  template <class F>
  kv::Status run(F&& f, std::string_view written = {}, Wrote scope = Wrote::listed) const {
    return detail::run(b_, what_, std::forward<F>(f), written, scope);
  }

 private:
  Backend& b_;
  std::string_view what_;
  bool refused_;
};

inline EntryInfo make_info(std::string_view key, const engine::Found& f,
                           const engine::AccessRecord& a, std::int64_t now_ns) {
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

// Logs why a write was not stored; true when it was.
inline bool stored(Backend& b, engine::SetOutcome outcome, std::string_view what,
                   std::string_view key) {
  if (outcome == engine::SetOutcome::stored) return true;
  if (outcome != engine::SetOutcome::skipped)
    b.log().logf(util::Level::debug, "{} of '{}' refused: {}", what, key,
                 outcome == engine::SetOutcome::too_large
                     ? "value larger than max_size_bytes"
                     : "cache full of live entries (ttl policy)");
  return false;
}

inline engine::Rewrite rewrite_of(const SetRequest& q, std::string value) {
  return engine::Rewrite{std::move(value), q.ttl_ms, q.category, q.metadata, std::nullopt};
}

inline bool is_fresh(const engine::Found* current) {
  return current != nullptr && current->status == EntryStatus::fresh;
}

// A decimal int64 and nothing else ("-12", not " 12", "+12" or "1e3").
inline std::optional<std::int64_t> parse_int(std::string_view text) {
  std::int64_t v = 0;
  const char* end = text.data() + text.size();
  const auto [ptr, ec] = std::from_chars(text.data(), end, v);
  if (ec != std::errc() || ptr != end || text.empty()) return std::nullopt;
  return v;
}

// Whether `value` is over the byte limit of `e` (stored in neither tier).
inline bool too_large(const Engine& e, std::string_view value) {
  return !e.value_fits(value.size());
}

}  // namespace larder::core::detail
