// The owner's side of the protocol (src/shared/dispatch.cpp): every opcode is answered, after the
// same validation the public Cache applies, and malformed requests get bad_request with a reason.
#include <doctest/doctest.h>

#include <unistd.h>

#include <limits>
#include <string>

#include "api/config.hpp"
#include "core/backend.hpp"
#include "core/service.hpp"
#include "shared/dispatch.hpp"
#include "shared/protocol.hpp"

using namespace larder;
using namespace larder::shared;

namespace {

core::LocalService memory_service() {
  Config cfg;
  cfg.strategy = Strategy::disabled;
  return core::LocalService(core::Backend::open(api::resolve(cfg)));
}

core::SetRequest item(std::string key, std::string value) {
  core::SetRequest s;
  s.key = std::move(key);
  s.value = std::move(value);
  s.ttl_ms = 60;
  s.category = "c";
  return s;
}

// Runs `o` as a peer would send it: encoded, decoded and dispatched.
template <class Op>
Reply ask(core::LocalService& service, const Op& o, std::uint64_t id = 5) {
  Request decoded;
  std::string error;
  REQUIRE_MESSAGE(decode(encode(Request{id, o}), &decoded, &error), error);
  return dispatch(service, decoded);
}

template <class R>
R result_of(const Reply& r) {
  REQUIRE_MESSAGE(r.status == ReplyStatus::ok, r.error);
  R out{};
  std::string error;
  REQUIRE_MESSAGE(decode_result(r.result, &out, &error), error);
  return out;
}

}  // namespace

TEST_CASE("dispatch: every operation of the table is answered with its own id and result type") {
  core::LocalService service = memory_service();
  [&]<std::size_t... I>(std::index_sequence<I...>) {
    (
        [&] {
          using Op = std::variant_alternative_t<I, Operation>;
          CAPTURE(Op::name);
          Op o{};
          // Arguments every operation accepts: a key "k", an item, a holder, a known command.
          std::apply(
              [&](auto&... field) {
                (
                    [&](auto& f) {
                      using F = std::decay_t<decltype(f)>;
                      if constexpr (std::is_same_v<F, std::string>) f = "k";
                      if constexpr (std::is_same_v<F, core::SetRequest>) f = item("k", "1");
                      if constexpr (std::is_same_v<F, std::vector<core::SetRequest>>)
                        f = {item("k", "1")};
                      if constexpr (std::is_same_v<F, std::vector<std::string>>) f = {"k"};
                      if constexpr (std::is_same_v<F, std::int64_t>) f = 4242;
                      if constexpr (std::is_same_v<F, std::uint8_t>)
                        f = static_cast<std::uint8_t>(core::AdminCommand::settings);
                    }(field),
                    ...);
              },
              o.args());
          if constexpr (std::is_same_v<Op, op::Clear> || std::is_same_v<Op, op::Keys>)
            o = Op{};  // the unnamed namespace's scope is ""
          if constexpr (std::is_same_v<Op, op::ClearCategory> ||
                        std::is_same_v<Op, op::InvalidateCategory> ||
                        std::is_same_v<Op, op::KeysInCategory> ||
                        std::is_same_v<Op, op::InvalidatePattern>)
            std::get<1>(o.args()) = "";
          const Reply r = ask(service, o, 1000 + static_cast<unsigned>(Op::code));
          CHECK(r.id == 1000 + static_cast<unsigned>(Op::code));
          CHECK_MESSAGE(r.status == ReplyStatus::ok, r.error);
          typename Op::Result out{};
          std::string error;
          CHECK_MESSAGE(decode_result(r.result, &out, &error), error);
        }(),
        ...);
  }
  (std::make_index_sequence<std::variant_size_v<Operation>>());
}

TEST_CASE("one key rule: 1 to kMaxKeyBytes bytes of user key, in every namespace") {
  // The owner accepted a peer's unnamed key of up to kMaxKeyBytes + kMaxNamespaceBytes + 2
  // bytes (4 353), which the public Cache refuses (4 096): two limits for one rule.
  const std::string longest(kMaxKeyBytes, 'k');
  const std::string too_long(kMaxKeyBytes + 1, 'k');
  const std::string ns = core::ns_prefix("team");
  CHECK(core::valid_user_key(longest));
  CHECK_FALSE(core::valid_user_key(too_long));
  CHECK_FALSE(core::valid_user_key(""));
  CHECK(core::valid_key(longest));
  CHECK_FALSE(core::valid_key(too_long));
  CHECK(core::valid_key(core::stored_key(ns, longest)));
  CHECK_FALSE(core::valid_key(core::stored_key(ns, too_long)));
  CHECK_FALSE(core::valid_key(ns));  // a namespace's empty key
  const std::string nul_key = std::string(1, '\0') + std::string(kMaxKeyBytes - 1, 'k');
  CHECK(core::valid_key(core::stored_key("", nul_key)));  // escaped: one byte longer stored
  CHECK_FALSE(core::valid_key(core::stored_key("", nul_key + "k")));
  CHECK_FALSE(core::valid_key(std::string("\0name-without-end", 17)));
  CHECK_FALSE(core::valid_key(core::ns_prefix(std::string(kMaxNamespaceBytes + 1, 'n')) + "k"));
}

TEST_CASE("dispatch: a peer's invalid sets are refused as the public Cache refuses them") {
  core::LocalService service = memory_service();
  core::SetRequest negative = item("n", "v");
  negative.ttl_ms = -1;
  core::SetRequest nul_category = item("c", "v");
  nul_category.category = std::string("a\0b", 3);
  const auto flags = result_of<std::vector<bool>>(
      ask(service,
          op::SetMany{{item("ok", "v"), item("", "empty key"),
                       item(std::string(kMaxKeyBytes + 1, 'k'), "v"), negative, nul_category}}));
  CHECK(flags == std::vector<bool>{true, false, false, false, false});
  CHECK(service.get("ok") == std::optional<std::string>("v"));

  // set_all is all or nothing: one invalid item refuses the batch.
  CHECK_FALSE(result_of<bool>(ask(service, op::SetAll{{item("x", "1"), negative}})));
  CHECK_FALSE(service.exists("x"));
  CHECK_FALSE(result_of<bool>(ask(service, op::Add{negative})));
  CHECK_FALSE(result_of<std::optional<std::int64_t>>(ask(service, op::Incr{negative, 1})));
  const Reply touch = ask(service, op::Touch{"ok", -1});
  CHECK(touch.status == ReplyStatus::bad_request);
  CHECK(touch.error.find("negative ttl") != std::string::npos);
  CHECK(result_of<std::optional<std::int64_t>>(ask(service, op::Incr{item("n", ""), -5})) == -5);

  // A lease needs a holder; the owner's table grants one lease per key.
  CHECK(ask(service, op::LeaseAcquire{"leased", 0, 60'000}).status == ReplyStatus::bad_request);
  CHECK(
      result_of<LeaseGrant>(ask(service, op::LeaseAcquire{"leased", ::getpid(), 60'000})).granted);
  // Clamped, not overflowing the clock (renewed: the holder's own).
  CHECK(result_of<LeaseGrant>(
            ask(service,
                op::LeaseAcquire{"leased", ::getpid(), std::numeric_limits<std::int64_t>::max()}))
            .granted);
  // Another live process: refused, told how long to wait.
  const auto busy = result_of<LeaseGrant>(ask(service, op::LeaseAcquire{"leased", ::getppid(), 1}));
  CHECK_FALSE(busy.granted);
  CHECK(busy.wait_ms > 50'000);
  CHECK(busy.wait_ms <= 24ll * 3600 * 1000);

  // A scope that is not a namespace's prefix is refused, naming it.
  const Reply refused_scope = ask(service, op::Keys{"no-prefix"});
  CHECK(refused_scope.status == ReplyStatus::bad_request);
  CHECK(refused_scope.error.find("scope") != std::string::npos);
  CHECK(ask(service, op::InvalidatePattern{"", ""}).status == ReplyStatus::bad_request);

  const Reply refused = ask(service, op::Admin{core::kLastAdminCommand + 1, 0});
  CHECK(refused.status == ReplyStatus::bad_request);
  CHECK(refused.error.find("unknown maintenance") != std::string::npos);
}
