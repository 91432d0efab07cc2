// The operation table: every call a shared-cache client can send to the owner, one type each.
// A type names its opcode (explicit, never reused: it travels), its wire name, whether a request
// whose reply was lost may be sent again, its arguments (args(), in wire order) and its Result,
// and its `run` on the owner's LocalService. Both paths use `run`: the owner's own call
// (Node::call while it owns the store) and a client's request (dispatch), so the owner and its
// clients behave the same by construction. `refuse`, when an operation has one, rejects what
// only a peer can send (the public API cannot express it); dispatch answers bad_request then.
//
// Adding an operation: its type here (and in Operation), its LocalService code, its Service
// method (one line in Node) and its public method. The codec (codec.hpp) and dispatch follow.
//
// Thread-safety: stateless; `run` is as thread-safe as LocalService.
#pragma once

#include <algorithm>
#include <cstdint>
#include <string>
#include <string_view>
#include <tuple>
#include <variant>
#include <vector>

#include "core/service.hpp"
#include "shared/codec.hpp"

namespace larder::shared {

// Persisted on the wire: explicit values, never reused.
enum class Opcode : std::uint8_t {
  set = 1,
  get = 2,
  get_entry = 3,
  exists = 4,
  metadata = 5,
  remove = 6,
  clear = 7,
  clear_category = 8,
  invalidate = 9,
  invalidate_category = 10,
  invalidate_pattern = 11,
  keys = 12,
  keys_in_category = 13,
  cleanup = 14,
  stats = 15,
  flush = 16,
  get_many = 17,
  set_many = 18,
  peek = 19,
  inspect = 20,
  admin = 21,
  add = 22,
  touch = 23,
  incr = 24,
  set_all = 25,
  lease_acquire = 26,
  lease_release = 27,
  events = 28,
  compare_and_set = 29,
  get_and_touch = 30,
};

// Whether a request whose reply was lost may be sent again (the owner may have run it).
enum class Resend : std::uint8_t { never, when_lost };

// The owner answers get_many with at most about this many value bytes per reply (a reply must
// fit in a frame); the client asks again for the keys left.
inline constexpr std::uint64_t kMaxGetManyReplyBytes = 64u << 20;
// An events reply carries at most this many events (each key at most about 4.3 KB: well
// within a frame).
inline constexpr std::uint64_t kMaxEventsPerReply = 4096;

namespace op {

using core::LocalService;
using core::SetRequest;
using std::string_view;

#define LARDER_OP_ARGS(...)       \
  auto args() {                   \
    return std::tie(__VA_ARGS__); \
  }                               \
  auto args() const {             \
    return std::tie(__VA_ARGS__); \
  }

struct Set {
  static constexpr Opcode code = Opcode::set;
  static constexpr const char* name = "set";
  static constexpr Resend resend = Resend::when_lost;
  using Result = bool;
  SetRequest item;
  LARDER_OP_ARGS(item)
  static bool run(LocalService& l, const SetRequest& q) { return core::valid_set(q) && l.set(q); }
  // This process's own call from the caller's bytes (shared::Node while it owns the store).
  static bool run(LocalService& l, const core::SetView& v) {
    return core::valid_set(v) && l.set(v.request());
  }
};

struct SetMany {
  static constexpr Opcode code = Opcode::set_many;
  static constexpr const char* name = "set_many";
  static constexpr Resend resend = Resend::when_lost;
  using Result = std::vector<bool>;
  std::vector<SetRequest> items;
  LARDER_OP_ARGS(items)
  static Result run(LocalService& l, const std::vector<SetRequest>& items) {
    // One batch of the valid items (an invalid one is refused alone, as set() refuses it).
    if (std::all_of(items.begin(), items.end(), core::valid_set<SetRequest>))
      return l.set_many(items);
    std::vector<SetRequest> valid;
    std::vector<std::size_t> where;
    for (std::size_t i = 0; i < items.size(); ++i)
      if (core::valid_set(items[i])) valid.push_back(items[i]), where.push_back(i);
    Result out(items.size(), false);
    const Result stored = l.set_many(valid);
    for (std::size_t j = 0; j < where.size() && j < stored.size(); ++j) out[where[j]] = stored[j];
    return out;
  }
};

struct Add {
  static constexpr Opcode code = Opcode::add;
  static constexpr const char* name = "add";
  static constexpr Resend resend = Resend::never;  // a resent add would report false
  using Result = bool;
  SetRequest item;
  LARDER_OP_ARGS(item)
  static bool run(LocalService& l, const SetRequest& q) { return core::valid_set(q) && l.add(q); }
};

struct Touch {
  static constexpr Opcode code = Opcode::touch;
  static constexpr const char* name = "touch";
  static constexpr Resend resend = Resend::when_lost;
  using Result = bool;
  std::string key;
  std::int64_t ttl_ms = 0;
  LARDER_OP_ARGS(key, ttl_ms)
  static const char* refuse(string_view, std::int64_t ttl_ms) {
    return ttl_ms < 0 ? "touch: negative ttl" : nullptr;
  }
  static bool run(LocalService& l, string_view key, std::int64_t ttl_ms) {
    return core::valid_key(key) && l.touch(key, ttl_ms);
  }
};

struct Incr {
  static constexpr Opcode code = Opcode::incr;
  static constexpr const char* name = "incr";
  static constexpr Resend resend = Resend::never;  // a resent incr would add twice
  using Result = std::optional<std::int64_t>;
  SetRequest item;
  std::int64_t delta = 0;
  LARDER_OP_ARGS(item, delta)
  static Result run(LocalService& l, const SetRequest& q, std::int64_t delta) {
    return core::valid_set(q) ? l.incr(q, delta) : std::nullopt;
  }
};

struct SetAll {
  static constexpr Opcode code = Opcode::set_all;
  static constexpr const char* name = "set_all";
  static constexpr Resend resend = Resend::when_lost;
  using Result = bool;
  std::vector<SetRequest> items;
  LARDER_OP_ARGS(items)
  // All or nothing: one invalid item refuses the batch.
  static bool run(LocalService& l, const std::vector<SetRequest>& items) {
    return std::all_of(items.begin(), items.end(), core::valid_set<SetRequest>) && l.set_all(items);
  }
};

struct CompareAndSet {
  static constexpr Opcode code = Opcode::compare_and_set;
  static constexpr const char* name = "compare_and_set";
  static constexpr Resend resend = Resend::never;  // a resent swap would find its own value
  using Result = bool;
  SetRequest item;
  std::string expected;
  LARDER_OP_ARGS(item, expected)
  static bool run(LocalService& l, const SetRequest& q, string_view expected) {
    return core::valid_set(q) && l.compare_and_set(q, expected);
  }
};

struct GetAndTouch {
  static constexpr Opcode code = Opcode::get_and_touch;
  static constexpr const char* name = "get_and_touch";
  static constexpr Resend resend = Resend::when_lost;  // renewing again from now is the same
  using Result = std::optional<Entry>;
  std::string key;
  std::int64_t ttl_ms = 0;
  LARDER_OP_ARGS(key, ttl_ms)
  static const char* refuse(string_view, std::int64_t ttl_ms) {
    return ttl_ms < 0 ? "negative ttl" : nullptr;
  }
  static Result run(LocalService& l, string_view key, std::int64_t ttl_ms) {
    return l.get_and_touch(key, ttl_ms);  // an invalid key is a miss, counted there
  }
};

struct LeaseAcquire {
  static constexpr Opcode code = Opcode::lease_acquire;
  static constexpr const char* name = "lease_acquire";
  static constexpr Resend resend = Resend::when_lost;
  using Result = LeaseGrant;
  std::string key;
  std::int64_t holder = 0;
  std::int64_t timeout_ms = 0;
  LARDER_OP_ARGS(key, holder, timeout_ms)
  static const char* refuse(string_view key, std::int64_t holder, std::int64_t) {
    return !core::valid_key(key) || holder <= 0 ? "lease_acquire needs a key and a holder pid"
                                                : nullptr;
  }
  static LeaseGrant run(LocalService& l, string_view key, std::int64_t holder,
                        std::int64_t timeout_ms) {
    LeaseGrant g{false, 0};
    g.granted = l.acquire_lease(key, holder, timeout_ms, &g.wait_ms);
    return g;
  }
};

struct LeaseRelease {
  static constexpr Opcode code = Opcode::lease_release;
  static constexpr const char* name = "lease_release";
  static constexpr Resend resend = Resend::when_lost;
  using Result = std::monostate;
  std::string key;
  std::int64_t holder = 0;
  LARDER_OP_ARGS(key, holder)
  static Result run(LocalService& l, string_view key, std::int64_t holder) {
    if (core::valid_key(key)) l.release_lease(key, holder);
    return {};
  }
};

struct Events {
  static constexpr Opcode code = Opcode::events;
  static constexpr const char* name = "events";
  static constexpr Resend resend = Resend::when_lost;
  using Result = core::EventBatch;
  std::uint64_t from = 0;
  std::uint64_t max = 0;
  LARDER_OP_ARGS(from, max)
  static Result run(LocalService& l, std::uint64_t from, std::uint64_t max) {
    return l.events_since(from, std::clamp<std::uint64_t>(max, 1, kMaxEventsPerReply));
  }
};

struct Get {
  static constexpr Opcode code = Opcode::get;
  static constexpr const char* name = "get";
  static constexpr Resend resend = Resend::when_lost;
  using Result = std::optional<std::string>;
  std::string key;
  LARDER_OP_ARGS(key)
  static Result run(LocalService& l, string_view key) { return l.get(key); }
};

struct GetMany {
  static constexpr Opcode code = Opcode::get_many;
  static constexpr const char* name = "get_many";
  static constexpr Resend resend = Resend::when_lost;
  // A prefix of the keys' values: the reply must fit one frame, so it ends once its values reach
  // kMaxGetManyReplyBytes (every key answered is counted once, no key left out is counted) and
  // the caller asks again for the rest.
  using Result = std::vector<std::optional<std::string>>;
  std::vector<std::string> keys;
  LARDER_OP_ARGS(keys)
  static Result run(LocalService& l, const std::vector<std::string>& keys) {
    return l.get_many(keys, kMaxGetManyReplyBytes);
  }
};

struct Peek {
  static constexpr Opcode code = Opcode::peek;
  static constexpr const char* name = "peek";
  static constexpr Resend resend = Resend::when_lost;
  using Result = std::optional<std::string>;
  std::string key;
  LARDER_OP_ARGS(key)
  static Result run(LocalService& l, string_view key) {
    return core::valid_key(key) ? l.peek(key) : std::nullopt;
  }
};

struct GetEntry {
  static constexpr Opcode code = Opcode::get_entry;
  static constexpr const char* name = "get_entry";
  static constexpr Resend resend = Resend::when_lost;
  using Result = std::optional<Entry>;
  std::string key;
  bool include_stale = false;
  LARDER_OP_ARGS(key, include_stale)
  static Result run(LocalService& l, string_view key, bool include_stale) {
    return l.get_entry(key, include_stale);
  }
};

struct Exists {
  static constexpr Opcode code = Opcode::exists;
  static constexpr const char* name = "exists";
  static constexpr Resend resend = Resend::when_lost;
  using Result = bool;
  std::string key;
  LARDER_OP_ARGS(key)
  static bool run(LocalService& l, string_view key) {
    return core::valid_key(key) && l.exists(key);
  }
};

struct Metadata {
  static constexpr Opcode code = Opcode::metadata;
  static constexpr const char* name = "metadata";
  static constexpr Resend resend = Resend::when_lost;
  using Result = std::optional<EntryInfo>;
  std::string key;
  LARDER_OP_ARGS(key)
  static Result run(LocalService& l, string_view key) {
    return core::valid_key(key) ? l.metadata(key) : std::nullopt;
  }
};

struct Remove {
  static constexpr Opcode code = Opcode::remove;
  static constexpr const char* name = "remove";
  static constexpr Resend resend = Resend::never;
  using Result = bool;
  std::string key;
  LARDER_OP_ARGS(key)
  static bool run(LocalService& l, string_view key) {
    return core::valid_key(key) && l.remove(key);
  }
};

struct Invalidate {
  static constexpr Opcode code = Opcode::invalidate;
  static constexpr const char* name = "invalidate";
  static constexpr Resend resend = Resend::never;
  using Result = bool;
  std::string key;
  LARDER_OP_ARGS(key)
  static bool run(LocalService& l, string_view key) {
    return core::valid_key(key) && l.invalidate(key);
  }
};

// The enumerating calls stay in a scope (core::in_scope): "" the unnamed namespace.
inline const char* refuse_scope(string_view scope) {
  return core::valid_scope(scope) ? nullptr : "scope is not a namespace's prefix";
}

struct Clear {
  static constexpr Opcode code = Opcode::clear;
  static constexpr const char* name = "clear";
  static constexpr Resend resend = Resend::never;
  using Result = std::uint64_t;
  std::string scope;
  LARDER_OP_ARGS(scope)
  static const char* refuse(string_view scope) { return refuse_scope(scope); }
  static Result run(LocalService& l, string_view scope) { return l.clear(scope); }
};

struct ClearCategory {
  static constexpr Opcode code = Opcode::clear_category;
  static constexpr const char* name = "clear_category";
  static constexpr Resend resend = Resend::never;
  using Result = std::uint64_t;
  std::string category;
  std::string scope;
  LARDER_OP_ARGS(category, scope)
  static const char* refuse(string_view, string_view scope) { return refuse_scope(scope); }
  static Result run(LocalService& l, string_view category, string_view scope) {
    return l.clear_category(category, scope);
  }
};

struct InvalidateCategory {
  static constexpr Opcode code = Opcode::invalidate_category;
  static constexpr const char* name = "invalidate_category";
  static constexpr Resend resend = Resend::never;
  using Result = std::uint64_t;
  std::string category;
  std::string scope;
  LARDER_OP_ARGS(category, scope)
  static const char* refuse(string_view, string_view scope) { return refuse_scope(scope); }
  static Result run(LocalService& l, string_view category, string_view scope) {
    return l.invalidate_category(category, scope);
  }
};

struct InvalidatePattern {
  static constexpr Opcode code = Opcode::invalidate_pattern;
  static constexpr const char* name = "invalidate_pattern";
  static constexpr Resend resend = Resend::never;
  using Result = std::uint64_t;
  std::string glob;
  std::string scope;
  LARDER_OP_ARGS(glob, scope)
  static const char* refuse(string_view glob, string_view scope) {
    return glob.empty() ? "empty pattern" : refuse_scope(scope);
  }
  static Result run(LocalService& l, string_view glob, string_view scope) {
    return l.invalidate_pattern(glob, scope);
  }
};

struct Keys {
  static constexpr Opcode code = Opcode::keys;
  static constexpr const char* name = "keys";
  static constexpr Resend resend = Resend::when_lost;
  using Result = std::vector<std::string>;
  std::string scope;
  LARDER_OP_ARGS(scope)
  static const char* refuse(string_view scope) { return refuse_scope(scope); }
  static Result run(LocalService& l, string_view scope) { return l.keys(scope); }
};

struct KeysInCategory {
  static constexpr Opcode code = Opcode::keys_in_category;
  static constexpr const char* name = "keys_in_category";
  static constexpr Resend resend = Resend::when_lost;
  using Result = std::vector<std::string>;
  std::string category;
  std::string scope;
  LARDER_OP_ARGS(category, scope)
  static const char* refuse(string_view, string_view scope) { return refuse_scope(scope); }
  static Result run(LocalService& l, string_view category, string_view scope) {
    return l.keys_in_category(category, scope);
  }
};

struct Cleanup {
  static constexpr Opcode code = Opcode::cleanup;
  static constexpr const char* name = "cleanup";
  static constexpr Resend resend = Resend::never;
  using Result = std::uint64_t;
  LARDER_OP_ARGS()
  static Result run(LocalService& l) { return l.cleanup(); }
};

struct GetStats {
  static constexpr Opcode code = Opcode::stats;
  static constexpr const char* name = "stats";
  static constexpr Resend resend = Resend::when_lost;
  using Result = Stats;
  LARDER_OP_ARGS()
  static Result run(LocalService& l) { return l.stats(); }
};

struct Flush {
  static constexpr Opcode code = Opcode::flush;
  static constexpr const char* name = "flush";
  static constexpr Resend resend = Resend::when_lost;
  using Result = std::monostate;
  LARDER_OP_ARGS()
  static Result run(LocalService& l) {
    l.flush();
    return {};
  }
};

struct Inspect {
  static constexpr Opcode code = Opcode::inspect;
  static constexpr const char* name = "inspect";
  static constexpr Resend resend = Resend::when_lost;
  using Result = std::vector<std::optional<Entry>>;
  std::vector<std::string> keys;
  bool with_values = false;
  LARDER_OP_ARGS(keys, with_values)
  static Result run(LocalService& l, const std::vector<std::string>& keys, bool with_values) {
    return l.inspect(keys, with_values);
  }
};

struct Admin {
  static constexpr Opcode code = Opcode::admin;
  static constexpr const char* name = "admin";
  static constexpr Resend resend = Resend::never;
  using Result = core::AdminResult;
  std::uint8_t command = 0;  // a core::AdminCommand
  std::int64_t arg = 0;
  LARDER_OP_ARGS(command, arg)
  // Only reads are worth repeating after a lost reply; the others change the store.
  static Resend resend_for(std::uint8_t command, std::int64_t) {
    const auto c = static_cast<core::AdminCommand>(command);
    return c == core::AdminCommand::settings || c == core::AdminCommand::verify ? Resend::when_lost
                                                                                : Resend::never;
  }
  static const char* refuse(std::uint8_t command, std::int64_t) {
    return command < 1 || command > core::kLastAdminCommand ? "unknown maintenance operation"
                                                            : nullptr;
  }
  static Result run(LocalService& l, std::uint8_t command, std::int64_t arg) {
    return l.admin(static_cast<core::AdminCommand>(command), arg);
  }
};

#undef LARDER_OP_ARGS

}  // namespace op

// Every operation, by type. A request carries one.
using Operation =
    std::variant<op::Set, op::Get, op::GetEntry, op::Exists, op::Metadata, op::Remove, op::Clear,
                 op::ClearCategory, op::Invalidate, op::InvalidateCategory, op::InvalidatePattern,
                 op::Keys, op::KeysInCategory, op::Cleanup, op::GetStats, op::Flush, op::GetMany,
                 op::SetMany, op::Peek, op::Inspect, op::Admin, op::Add, op::Touch, op::Incr,
                 op::SetAll, op::LeaseAcquire, op::LeaseRelease, op::Events, op::CompareAndSet,
                 op::GetAndTouch>;

// Why the owner refuses `o` from a peer, or nullptr.
template <class Op>
const char* refusal(const Op& o) {
  if constexpr (requires { &Op::refuse; })
    return std::apply([](const auto&... a) { return Op::refuse(a...); }, o.args());
  else
    return nullptr;
}

// Whether a lost reply to Op with these arguments may be sent again.
template <class Op, class... A>
Resend resend_of(const A&... args) {
  if constexpr (requires { &Op::resend_for; })
    return Op::resend_for(args...);
  else
    return Op::resend;
}

// Calls f.template operator()<Op>() with the operation whose opcode is `code`; false when none
// has it.
template <class F>
bool with_opcode(std::uint8_t code, F&& f) {
  return [&]<std::size_t... I>(std::index_sequence<I...>) {
    return ((static_cast<std::uint8_t>(std::variant_alternative_t<I, Operation>::code) == code
                 ? (f.template operator()<std::variant_alternative_t<I, Operation>>(), true)
                 : false) ||
            ...);
  }
  (std::make_index_sequence<std::variant_size_v<Operation>>());
}

const char* to_string(Opcode opcode);

}  // namespace larder::shared
