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

}  // namespace

TEST_CASE("dispatch: every opcode round-trips the codec and is answered with its own id") {
  core::LocalService service = memory_service();
  const auto first = static_cast<unsigned>(Opcode::set);
  const auto last = static_cast<unsigned>(kLastOpcode);
  for (unsigned code = first; code <= last; ++code) {
    const auto opcode = static_cast<Opcode>(code);
    CAPTURE(to_string(opcode));
    CHECK(std::string(to_string(opcode)) != "unknown");
    Request q;
    q.id = 1000 + code;
    q.opcode = opcode;
    q.text = "k";
    q.keys = {"k"};
    q.sets = {item("k", "v")};
    if (opcode == Opcode::invalidate_pattern) q.text = "k*";
    if (opcode == Opcode::admin) q.code = static_cast<std::uint8_t>(core::AdminCommand::settings);
    q.holder = 4242;  // lease_acquire / lease_release: the caller's pid
    Request decoded;
    std::string error;
    REQUIRE_MESSAGE(decode(encode(q), &decoded, &error), error);
    CHECK(decoded.opcode == opcode);
    const Reply r = dispatch(service, decoded);
    CHECK(r.id == q.id);
    CHECK_MESSAGE(r.status == ReplyStatus::ok, r.error);
  }
  // One past the last opcode is refused by the decoder, naming it.
  Request unknown;
  unknown.opcode = static_cast<Opcode>(last + 1);
  Request decoded;
  std::string error;
  CHECK_FALSE(decode(encode(unknown), &decoded, &error));
  CHECK(error.find("unknown operation") != std::string::npos);
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
  Request q;
  q.opcode = Opcode::set_many;
  core::SetRequest negative = item("n", "v");
  negative.ttl_ms = -1;
  core::SetRequest nul_category = item("c", "v");
  nul_category.category = std::string("a\0b", 3);
  q.sets = {item("ok", "v"), item("", "empty key"), item(std::string(kMaxKeyBytes + 1, 'k'), "v"),
            negative, nul_category};
  const Reply r = dispatch(service, q);
  REQUIRE(r.status == ReplyStatus::ok);
  CHECK(r.flags == std::vector<bool>{true, false, false, false, false});
  CHECK(service.get("ok") == std::optional<std::string>("v"));

  Request two;
  two.opcode = Opcode::set;
  two.sets = {item("a", "1"), item("b", "2")};
  const Reply bad = dispatch(service, two);
  CHECK(bad.status == ReplyStatus::bad_request);
  CHECK(bad.error.find("one item") != std::string::npos);

  // set_all is all or nothing: one invalid item refuses the batch.
  Request all;
  all.opcode = Opcode::set_all;
  all.sets = {item("x", "1"), negative};
  const Reply none = dispatch(service, all);
  CHECK(none.status == ReplyStatus::ok);
  CHECK_FALSE(none.flag);
  CHECK_FALSE(service.exists("x"));
  for (Opcode op : {Opcode::add, Opcode::incr}) {
    Request wrong;
    wrong.opcode = op;
    wrong.sets = {item("a", "1"), item("b", "2")};
    CHECK(dispatch(service, wrong).status == ReplyStatus::bad_request);
  }
  Request touch;
  touch.opcode = Opcode::touch;
  touch.text = "ok";
  touch.number = -1;
  CHECK(dispatch(service, touch).status == ReplyStatus::bad_request);
  // incr's value travels in count (two's complement), flag saying there is one.
  Request incr;
  incr.opcode = Opcode::incr;
  incr.sets = {item("n", "")};
  incr.number = -5;
  const Reply sum = dispatch(service, incr);
  CHECK(sum.flag);
  CHECK(static_cast<std::int64_t>(sum.count) == -5);

  // A lease needs a holder; the owner's table grants one lease per key.
  Request lease;
  lease.opcode = Opcode::lease_acquire;
  lease.text = "leased";
  lease.number = 60'000;
  CHECK(dispatch(service, lease).status == ReplyStatus::bad_request);
  lease.holder = ::getpid();
  CHECK(dispatch(service, lease).flag);
  lease.number = std::numeric_limits<std::int64_t>::max();  // clamped, not overflowing the clock
  CHECK(dispatch(service, lease).flag);                     // (renewed: the holder's own)
  lease.holder = ::getppid();  // another live process: refused, told how long to wait
  const Reply busy = dispatch(service, lease);
  CHECK_FALSE(busy.flag);
  CHECK(busy.count > 50'000);
  CHECK(busy.count <= 24ull * 3600 * 1000);

  // A scope that is not a namespace's prefix is refused, naming it.
  Request scoped;
  scoped.opcode = Opcode::keys;
  scoped.scope = "no-prefix";
  const Reply refused_scope = dispatch(service, scoped);
  CHECK(refused_scope.status == ReplyStatus::bad_request);
  CHECK(refused_scope.error.find("scope") != std::string::npos);

  Request pattern;
  pattern.opcode = Opcode::invalidate_pattern;
  CHECK(dispatch(service, pattern).status == ReplyStatus::bad_request);

  Request admin;
  admin.opcode = Opcode::admin;
  admin.code = core::kLastAdminCommand + 1;
  const Reply refused = dispatch(service, admin);
  CHECK(refused.status == ReplyStatus::bad_request);
  CHECK(refused.error.find("unknown maintenance") != std::string::npos);
}
