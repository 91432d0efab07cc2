// The shared strategy's wire protocol: round trips of every field and result, versioning,
// malformed input (framing over sockets: test_socket.cpp).
#include <doctest/doctest.h>

#include "shared/protocol.hpp"

using namespace larder;
using namespace larder::shared;

namespace {

core::SetRequest item(std::string key, std::string value) {
  core::SetRequest s;
  s.key = std::move(key);
  s.value = std::move(value);
  s.ttl_ms = 3600;
  s.category = "cat";
  s.metadata = {{"m", "v"}};
  return s;
}

template <class R>
R round_trip(const R& value) {
  R back{};
  std::string error;
  REQUIRE_MESSAGE(decode_result(encode_result(value), &back, &error), error);
  return back;
}

}  // namespace

TEST_CASE("protocol: every operation of the table round-trips with its arguments") {
  // Each alternative, default-constructed, encodes and decodes to the same bytes and type.
  [&]<std::size_t... I>(std::index_sequence<I...>) {
    (
        [&] {
          using Op = std::variant_alternative_t<I, Operation>;
          CAPTURE(Op::name);
          const Request q{77, Op{}};
          Request back;
          std::string error;
          REQUIRE_MESSAGE(decode(encode(q), &back, &error), error);
          CHECK(back.id == 77);
          CHECK(back.opcode() == Op::code);
          CHECK(std::holds_alternative<Op>(back.op));
          CHECK(encode(back) == encode(q));
          CHECK(std::string(to_string(Op::code)) == Op::name);
        }(),
        ...);
  }
  (std::make_index_sequence<std::variant_size_v<Operation>>());

  // Fields survive, binary bytes included; encode_request (a client's call) and encode (a
  // Request value) give the same bytes.
  const op::SetMany many{{item("k", std::string(1000, '\xff')), item(std::string("b\0c", 3), "")}};
  const std::string payload = encode_request<op::SetMany>(42, many.items);
  CHECK(payload == encode(Request{42, many}));
  Request back;
  std::string error;
  REQUIRE(decode(payload, &back, &error));
  const auto& got = std::get<op::SetMany>(back.op);
  REQUIRE(got.items.size() == 2);
  CHECK(got.items[0].value == many.items[0].value);
  CHECK(got.items[1].key == many.items[1].key);
  CHECK(got.items[0].ttl_ms == 3600);
  CHECK(got.items[0].metadata == many.items[0].metadata);
  std::string with_id = payload;
  set_request_id(&with_id, 0x0102030405060708);
  REQUIRE(decode(with_id, &back, &error));
  CHECK(back.id == 0x0102030405060708);

  // Arguments as a Service call has them (string_view for std::string fields).
  const std::string swap =
      encode_request<op::CompareAndSet>(3, many.items[0], std::string_view("x"));
  REQUIRE_MESSAGE(decode(swap, &back, &error), error);
  CHECK(std::get<op::CompareAndSet>(back.op).expected == "x");

  const op::Touch touch{"key", -7};
  REQUIRE(decode(encode(Request{1, touch}), &back, &error));
  CHECK(std::get<op::Touch>(back.op).key == "key");
  CHECK(std::get<op::Touch>(back.op).ttl_ms == -7);
}

TEST_CASE("protocol: replies and results round-trip") {
  Reply r;
  r.id = 42;
  r.status = ReplyStatus::bad_request;
  r.error = "why";
  r.result = encode_result(std::optional<std::string>("v"));
  Reply rb;
  std::string error;
  REQUIRE(decode(encode(r), &rb, &error));
  CHECK(rb.id == 42);
  CHECK(rb.status == ReplyStatus::bad_request);
  CHECK(rb.error == "why");
  CHECK(rb.result == r.result);

  CHECK(round_trip(std::vector<std::optional<std::string>>{std::nullopt, std::string("x")}) ==
        std::vector<std::optional<std::string>>{std::nullopt, std::string("x")});
  CHECK(round_trip(std::vector<bool>{true, false, true}) == std::vector<bool>{true, false, true});
  CHECK(round_trip(std::optional<std::int64_t>(-5)) == std::optional<std::int64_t>(-5));
  CHECK(round_trip(std::uint64_t{7}) == 7);
  Entry e;
  e.value = "ev";
  e.info.key = "ek";
  e.info.status = EntryStatus::stale;
  e.info.created_at = std::chrono::system_clock::time_point(std::chrono::seconds(1'800'000'000));
  e.info.expires_at = e.info.created_at + std::chrono::hours(1);
  e.info.metadata = {{"a", "b"}};
  const auto eb = round_trip(std::optional<Entry>(e));
  REQUIRE(eb);
  CHECK(eb->info.status == EntryStatus::stale);
  CHECK(eb->info.created_at == e.info.created_at);
  CHECK(eb->info.expires_at == e.info.expires_at);
  CHECK(eb->info.metadata == e.info.metadata);
  Stats st;
  st.hit_count = 3;
  st.categories = {{"c", 2}};
  const Stats sb = round_trip(st);
  CHECK(sb.hit_count == 3);
  CHECK(sb.categories == st.categories);
  core::AdminResult a;
  a.ok = true;
  a.count = 9;
  a.lines = {"l1"};
  a.fields = {{"f", "v"}};
  const auto ab = round_trip(a);
  CHECK(ab.ok);
  CHECK(ab.count == 9);
  CHECK(ab.lines == a.lines);
  CHECK(ab.fields == a.fields);
  core::EventBatch batch;
  batch.events = {{Event::Kind::evict, "k"}};
  batch.next = 5;
  batch.dropped = 2;
  const auto bb = round_trip(batch);
  REQUIRE(bb.events.size() == 1);
  CHECK(bb.events[0].kind == Event::Kind::evict);
  CHECK(bb.next == 5);
  CHECK(bb.dropped == 2);
  // A result of the wrong type, or with bytes left over, does not decode.
  std::optional<std::string> wrong;
  CHECK_FALSE(decode_result(encode_result(std::vector<std::string>{"a", "b"}), &wrong, &error));
  bool flag = false;
  CHECK_FALSE(decode_result(std::string("\x01\x00", 2), &flag, &error));
  CHECK(error.find("trailing") != std::string::npos);
  CHECK_FALSE(decode_result(std::string("\x02", 1), &flag, &error));
  CHECK(error.find("bad boolean") != std::string::npos);
}

TEST_CASE("protocol: malformed, truncated, foreign-version and unknown-operation payloads") {
  const std::string good = encode(Request{0, op::Get{"key"}});
  Request out;
  std::string error;
  CHECK_FALSE(decode(good.substr(0, good.size() - 1), &out, &error));
  CHECK(error.find("malformed") != std::string::npos);
  CHECK_FALSE(decode(good + "x", &out, &error));
  CHECK(error.find("trailing") != std::string::npos);
  std::string other_version = good;
  other_version[0] = static_cast<char>(other_version[0] + 1);  // the version's low byte
  CHECK_FALSE(decode(other_version, &out, &error));
  CHECK(error.find("protocol version") != std::string::npos);
  std::string unknown = good;
  unknown[10] = static_cast<char>(200);  // the opcode, after version (2) and id (8)
  CHECK_FALSE(decode(unknown, &out, &error));
  CHECK(error.find("unknown operation 200") != std::string::npos);
  unknown[10] = 0;  // no operation has 0
  CHECK_FALSE(decode(unknown, &out, &error));
  CHECK_FALSE(decode(std::string("\x01\x01\x00", 3), &out, &error));
}
