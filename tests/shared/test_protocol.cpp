// The shared strategy's wire protocol: round trips of every field, versioning, malformed input,
// and framing limits over a socket pair.
#include <doctest/doctest.h>

#include <sys/socket.h>
#include <unistd.h>

#include "shared/protocol.hpp"
#include "shared/socket.hpp"

using namespace larder;
using namespace larder::shared;

TEST_CASE("protocol: requests and replies round-trip") {
  Request q;
  q.id = 42;
  q.opcode = Opcode::set_many;
  q.text = "pattern:*";
  q.flag = true;
  q.keys = {"a", std::string("b\0c", 3)};
  core::SetRequest item;
  item.key = "k";
  item.value = std::string(1000, '\xff');
  item.ttl_ms = 3600;
  item.category = "cat";
  item.metadata = {{"m", "v"}};
  q.sets = {item, item};
  Request back;
  std::string error;
  REQUIRE(decode(encode(q), &back, &error));
  CHECK(back.id == 42);
  CHECK(back.opcode == Opcode::set_many);
  CHECK(back.text == q.text);
  CHECK(back.flag);
  CHECK(back.keys == q.keys);
  REQUIRE(back.sets.size() == 2);
  CHECK(back.sets[1].value == item.value);
  CHECK(back.sets[1].ttl_ms == 3600);
  CHECK(back.sets[1].metadata == item.metadata);

  Reply r;
  r.id = 42;
  r.flag = true;
  r.count = 7;
  r.value = "v";
  r.values = {std::nullopt, std::string("x")};
  r.flags = {true, false, true};
  r.strings = {"s1", "s2"};
  Entry e;
  e.value = "ev";
  e.info.key = "ek";
  e.info.status = EntryStatus::stale;
  e.info.created_at = std::chrono::system_clock::time_point(std::chrono::seconds(1'800'000'000));
  e.info.expires_at = e.info.created_at + std::chrono::hours(1);
  e.info.metadata = {{"a", "b"}};
  r.entry = e;
  Stats st;
  st.hit_count = 3;
  st.categories = {{"c", 2}};
  r.stats = st;
  Reply rb;
  REQUIRE(decode(encode(r), &rb, &error));
  CHECK(rb.id == 42);
  CHECK(rb.count == 7);
  CHECK(rb.value == "v");
  CHECK(rb.values == r.values);
  CHECK(rb.flags == r.flags);
  CHECK(rb.strings == r.strings);
  REQUIRE(rb.entry);
  CHECK(rb.entry->info.status == EntryStatus::stale);
  CHECK(rb.entry->info.created_at == e.info.created_at);
  CHECK(rb.entry->info.expires_at == e.info.expires_at);
  CHECK(rb.entry->info.metadata == e.info.metadata);
  CHECK_FALSE(rb.info);
  REQUIRE(rb.stats);
  CHECK(rb.stats->hit_count == 3);
  CHECK(rb.stats->categories == st.categories);
}

TEST_CASE("protocol: malformed, truncated, foreign-version and unknown-operation payloads") {
  Request q;
  q.opcode = Opcode::get;
  q.text = "key";
  const std::string good = encode(q);
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
  q.opcode = static_cast<Opcode>(200);
  CHECK_FALSE(decode(encode(q), &out, &error));
  CHECK(error.find("unknown operation 200") != std::string::npos);
  CHECK_FALSE(decode(std::string("\x01\x01\x00", 3), &out, &error));
}

TEST_CASE("framing: frames cross a socket intact; oversized lengths and early close are reported") {
  int sv[2];
  REQUIRE(::socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK, 0, sv) == 0);  // as larder uses them
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(5);
  const std::string payload(100'000, 'p');
  std::string got;
  CHECK(send_frame(sv[0], payload, deadline) == IoResult::ok);
  CHECK(recv_frame(sv[1], &got, deadline) == IoResult::ok);
  CHECK(got == payload);
  // A length above the limit is refused before anything is allocated for it.
  const char huge[4] = {'\xff', '\xff', '\xff', '\x7f'};
  REQUIRE(::write(sv[0], huge, 4) == 4);
  CHECK(recv_frame(sv[1], &got, deadline) == IoResult::too_large);
  // Nothing arrives: the deadline bounds the wait.
  const auto soon = std::chrono::steady_clock::now() + std::chrono::milliseconds(50);
  CHECK(recv_frame(sv[1], &got, soon) == IoResult::timeout);
  ::close(sv[0]);
  CHECK(recv_frame(sv[1], &got, deadline) == IoResult::closed);
  ::close(sv[1]);
}
