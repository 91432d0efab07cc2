#include <doctest/doctest.h>

#include "engine/records.hpp"

using namespace larder;
using namespace larder::engine;

TEST_CASE("entry records round-trip and reject truncation") {
  EntryHeader h;
  h.flags = kFlagInvalid;
  h.created_ns = -5;
  h.ttl_ms = 3600;
  h.category = "api";
  h.metadata = {{"a", "1"}, {"b", std::string("\0x", 2)}};
  const std::string value("binary\0value", 12);
  const std::string rec = encode_entry(h, value);
  EntryHeader back;
  std::size_t offset = 0;
  REQUIRE(decode_entry(rec, &back, &offset));
  CHECK(back.invalid());
  CHECK(back.created_ns == -5);
  CHECK(back.ttl_ms == 3600);
  CHECK(back.category == "api");
  CHECK(back.metadata == h.metadata);
  CHECK(rec.substr(offset) == value);
  CHECK(static_cast<std::uint8_t>(rec[kEntryFlagsOffset]) == kFlagInvalid);
  for (std::size_t cut = 0; cut < offset; ++cut)
    CHECK_FALSE(decode_entry(rec.substr(0, cut), &back, &offset));
  std::string wrong = rec;
  wrong[0] = 9;
  CHECK_FALSE(decode_entry(wrong, &back, &offset));
}

TEST_CASE("access records round-trip") {
  AccessRecord a;
  a.last_access_ns = 123;
  a.last_tick = 7;
  a.access_count = 9;
  a.insert_tick = 2;
  a.size = 1000;
  a.has_expiry = true;
  a.expiry_t = 55;
  a.stale_t = 44;
  a.category = "cat";
  AccessRecord b;
  REQUIRE(decode_access(encode_access(a), &b));
  CHECK(b.last_access_ns == 123);
  CHECK(b.last_tick == 7);
  CHECK(b.access_count == 9);
  CHECK(b.insert_tick == 2);
  CHECK(b.size == 1000);
  CHECK(b.has_expiry);
  CHECK(b.expiry_t == 55);
  CHECK(b.stale_t == 44);
  CHECK(b.category == "cat");
  CHECK(b.queue == 0);
  CHECK(b.queue_tick == 0);
  CHECK_FALSE(decode_access("short", &b));
  // The S3-FIFO fields (format 2).
  a.queue = static_cast<std::uint8_t>(S3Queue::main);
  a.freq = 3;
  a.queue_tick = 77;
  const std::string v2 = encode_access(a);
  REQUIRE(decode_access(v2, &b));
  CHECK(b.queue == 1);
  CHECK(b.freq == 3);
  CHECK(b.queue_tick == 77);
  CHECK_FALSE(decode_access(v2.substr(0, v2.size() - 1), &b));  // truncated
  std::string bad = v2;
  bad[v2.size() - 9] = 4;  // f above 3
  CHECK_FALSE(decode_access(bad, &b));
  // A format-1 record (written before S3-FIFO: no such fields) still decodes, without them.
  std::string v1 = v2.substr(0, v2.size() - 10);
  v1[0] = 1;
  REQUIRE(decode_access(v1, &b));
  CHECK(b.category == "cat");
  CHECK(b.queue == 0);
  CHECK(b.freq == 0);
  CHECK(b.queue_tick == 0);
  CHECK_FALSE(decode_access(v1 + "x", &b));  // trailing bytes
}

TEST_CASE("ghost records round-trip and reject damage") {
  GhostRecord g{12, 345}, out;
  const std::string v = encode_ghost(g);
  REQUIRE(decode_ghost(v, &out));
  CHECK(out.tick == 12);
  CHECK(out.size == 345);
  CHECK_FALSE(decode_ghost(v.substr(1), &out));
  CHECK_FALSE(decode_ghost(v + "x", &out));
}

TEST_CASE("index keys sort numerically and give back the user key") {
  CHECK(expiry_key(2, "z") < expiry_key(10, "a"));
  CHECK(expiry_key(0, "k") < expiry_key(1, "a"));
  CHECK(user_key_of_expiry(expiry_key(77, "key")) == "key");
  CHECK(time_of_expiry(expiry_key(77, "key")) == 77);
  AccessRecord a, b;
  a.access_count = 2;
  a.last_tick = 100;
  b.access_count = 10;
  b.last_tick = 1;
  CHECK(order_key(EvictionPolicy::lfu, a, "x") < order_key(EvictionPolicy::lfu, b, "x"));
  CHECK(order_key(EvictionPolicy::lru, b, "x") < order_key(EvictionPolicy::lru, a, "x"));
  CHECK(user_key_of_order(EvictionPolicy::lfu, order_key(EvictionPolicy::lfu, a, "key")) == "key");
  CHECK(user_key_of_order(EvictionPolicy::fifo, order_key(EvictionPolicy::fifo, a, "key")) ==
        "key");
  CHECK(order_key(EvictionPolicy::ttl, a, "x").empty());
  CHECK(category_key("a", "k") < category_key("ab", "k"));
}

TEST_CASE("status follows the deadlines") {
  const std::int64_t s = 1'000'000'000;
  CHECK(status_at(0, 0, 0, 2.0, 1'000'000 * s) == EntryStatus::fresh);
  const std::int64_t ms = 1'000'000;
  CHECK(status_at(0, 0, 10'000, 2.0, 10 * s - 1) == EntryStatus::fresh);
  CHECK(status_at(0, 0, 10'000, 2.0, 10 * s) == EntryStatus::stale);
  CHECK(status_at(0, 0, 10'000, 2.0, 20 * s - 1) == EntryStatus::stale);
  CHECK(status_at(0, 0, 10'000, 2.0, 20 * s) == EntryStatus::expired);
  CHECK(status_at(kFlagInvalid, 0, 10'000, 2.0, 0) == EntryStatus::invalid);
  CHECK(status_at(0, 0, 10'000, 1.0, 10 * s) == EntryStatus::expired);
  // Milliseconds count: a 250 ms ttl is stale from 250 ms, expired from 500 ms.
  CHECK(status_at(0, 0, 250, 2.0, 250 * ms - 1) == EntryStatus::fresh);
  CHECK(status_at(0, 0, 250, 2.0, 250 * ms) == EntryStatus::stale);
  CHECK(status_at(0, 0, 250, 2.0, 500 * ms) == EntryStatus::expired);
  const Deadlines d = deadlines(0, std::int64_t{1} << 40, 2.0);  // does not overflow
  CHECK(d.expired_at >= d.stale_at);
}
