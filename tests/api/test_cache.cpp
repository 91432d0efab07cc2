// The public Cache API, one body run against both stores (RocksDB and memory).
#include <doctest/doctest.h>

#include <fstream>

#include <algorithm>
#include <atomic>
#include <thread>

#include <cereal/types/string.hpp>
#include <cereal/types/vector.hpp>

#include "larder/object.hpp"
#include "support.hpp"

using namespace larder;
using namespace larder::test;
using namespace std::chrono_literals;

#define STORES RocksStore, MemoryStore

TEST_CASE_TEMPLATE("set, get, exists, metadata, remove, keys", S, STORES) {
  Fixture<S> f;
  Cache c = f.open();
  CHECK(c.set("alpha", "1"));
  CHECK(c.set("beta", "22", ttl(0, "nums")));
  CHECK(c.get("alpha") == "1");
  CHECK(c.get("beta") == "22");
  CHECK_FALSE(c.get("gamma").has_value());
  CHECK(c.get_or("gamma", "fallback") == "fallback");
  CHECK(c.get_or("alpha", "fallback") == "1");
  CHECK(c.exists("alpha"));
  CHECK_FALSE(c.exists("gamma"));
  CHECK(c.keys() == std::vector<std::string>{"alpha", "beta"});
  CHECK(c.keys_in_category("nums") == std::vector<std::string>{"beta"});
  CHECK(c.keys_in_category("default") == std::vector<std::string>{"alpha"});

  auto info = c.metadata("beta");
  REQUIRE(info);
  CHECK(info->key == "beta");
  CHECK(info->category == "nums");
  CHECK(info->size_bytes == 2);
  CHECK(info->status == EntryStatus::fresh);
  CHECK_FALSE(info->expires_at.has_value());
  CHECK(info->access_count == 2);  // insert + one hit

  CHECK(c.remove("alpha"));
  CHECK_FALSE(c.remove("alpha"));
  CHECK_FALSE(c.get("alpha"));
  CHECK(c.keys() == std::vector<std::string>{"beta"});
  const Stats s = c.stats();
  CHECK(s.total_entries == 1);
  CHECK(s.total_size_bytes == 2);
  CHECK(s.delete_count == 1);
  CHECK(s.set_count == 2);
  CHECK(s.categories == std::map<std::string, std::uint64_t>{{"nums", 1}});
  CHECK(store_problems(c).empty());
}

TEST_CASE_TEMPLATE("overwrite replaces value, category and metadata; totals follow", S, STORES) {
  Fixture<S> f;
  Cache c = f.open();
  SetOptions o = ttl(60, "a");
  o.metadata = {{"source", "x"}};
  CHECK(c.set("k", "12345", o));
  CHECK(c.set("k", "12", ttl(0, "b")));
  CHECK(c.get("k") == "12");
  auto info = c.metadata("k");
  REQUIRE(info);
  CHECK(info->category == "b");
  CHECK(info->metadata.empty());
  CHECK_FALSE(info->expires_at);
  const Stats s = c.stats();
  CHECK(s.total_entries == 1);
  CHECK(s.total_size_bytes == 2);
  CHECK(s.categories == std::map<std::string, std::uint64_t>{{"b", 1}});
  CHECK(store_problems(c).empty());
}

TEST_CASE_TEMPLATE("metadata and exists record no access and count nothing", S, STORES) {
  Fixture<S> f;
  Cache c = f.open();
  SetOptions o;
  o.metadata = {{"command", "users"}, {"world", "w-1"}};
  REQUIRE(c.set("k", "v", o));
  for (int i = 0; i < 3; ++i) {
    CHECK(c.exists("k"));
    REQUIRE(c.metadata("k"));
  }
  auto info = c.metadata("k");
  CHECK(info->access_count == 1);
  CHECK(info->metadata == o.metadata);
  CHECK(c.stats().hit_count == 0);
  CHECK(c.stats().miss_count == 0);
  f.clock.advance(5s);
  REQUIRE(c.get("k"));
  info = c.metadata("k");
  CHECK(info->access_count == 2);
  CHECK(info->last_accessed == f.clock.now());
  CHECK(info->age_seconds() == doctest::Approx(5.0));
  CHECK(c.stats().hit_count == 1);
}

TEST_CASE_TEMPLATE("TTL: fresh, stale, expired, never", S, STORES) {
  Fixture<S> f;
  f.config.default_ttl = 100s;
  Cache c = f.open();
  REQUIRE(c.set("t", "v", ttl(10)));
  REQUIRE(c.set("forever", "v", ttl(0)));
  REQUIRE(c.set("dflt", "v"));
  CHECK(c.metadata("dflt")->remaining_ttl_seconds() == doctest::Approx(100.0));

  f.clock.advance(9s);
  CHECK(c.get("t") == "v");
  CHECK(c.metadata("t")->remaining_ttl_seconds() == doctest::Approx(1.0));
  f.clock.advance(1s);  // age 10 = ttl: stale
  CHECK_FALSE(c.get("t"));
  CHECK_FALSE(c.exists("t"));
  auto e = c.get_entry("t", true);
  REQUIRE(e);
  CHECK(e->value == "v");
  CHECK(e->info.status == EntryStatus::stale);
  CHECK_FALSE(c.get_entry("t", false));
  f.clock.advance(9s);  // age 19 < 2 x ttl: still stale
  CHECK(c.metadata("t")->status == EntryStatus::stale);
  f.clock.advance(1s);  // age 20: expired
  CHECK(c.metadata("t")->status == EntryStatus::expired);
  CHECK(c.get_entry("t", true)->info.status == EntryStatus::expired);
  CHECK(c.metadata("t")->remaining_ttl_seconds() == doctest::Approx(-10.0));

  f.clock.advance(std::chrono::hours(24 * 365));
  CHECK(c.get("forever") == "v");
  CHECK_FALSE(c.metadata("forever")->expires_at);
  CHECK(c.metadata("dflt")->status == EntryStatus::expired);

  // Setting again restarts the age.
  REQUIRE(c.set("t", "v2", ttl(10)));
  CHECK(c.get("t") == "v2");
  CHECK_THROWS_AS(c.set("bad", "v", ttl(-1)), std::invalid_argument);
  CHECK(store_problems(c).empty());
}

TEST_CASE_TEMPLATE("TTL: exact to the millisecond (set, default, touch, namespaces)", S, STORES) {
  // TTLs were whole seconds: Python's expire=0.5 became 0 ("never expires").
  Fixture<S> f;
  f.config.default_ttl = 1500ms;
  Cache c = f.open();
  SetOptions quarter;
  quarter.ttl = 250ms;
  REQUIRE(c.set("q", "v", quarter));
  REQUIRE(c.set("dflt", "v"));
  SetOptions one;
  one.ttl = 1ms;
  REQUIRE(c.set("one", "v", one));
  const auto q = c.metadata("q");
  REQUIRE(q);
  REQUIRE(q->expires_at);
  CHECK(*q->expires_at - q->created_at == 250ms);
  CHECK(*c.metadata("dflt")->expires_at - c.metadata("dflt")->created_at == 1500ms);
  CHECK(c.get("one") == "v");
  f.clock.advance(1ms);
  CHECK_FALSE(c.get("one"));  // stale after 1 ms
  f.clock.advance(248ms);     // 249 ms
  CHECK(c.get("q") == "v");
  CHECK(c.metadata("q")->remaining_ttl_seconds() == doctest::Approx(0.001));
  f.clock.advance(1ms);  // 250 ms: stale
  CHECK_FALSE(c.get("q"));
  CHECK(c.metadata("q")->status == EntryStatus::stale);
  f.clock.advance(249ms);  // 499 ms: still stale (stale_factor 2)
  CHECK(c.metadata("q")->status == EntryStatus::stale);
  f.clock.advance(1ms);
  CHECK(c.metadata("q")->status == EntryStatus::expired);
  f.clock.advance(999ms);  // dflt at 1499 ms
  CHECK(c.get("dflt") == "v");
  REQUIRE(c.touch("dflt", 10ms));
  f.clock.advance(9ms);
  CHECK(c.get("dflt") == "v");
  f.clock.advance(1ms);
  CHECK_FALSE(c.get("dflt"));
  Cache n = c.ns("n", 750ms);
  REQUIRE(n.set("k", "v"));
  CHECK(*n.metadata("k")->expires_at - n.metadata("k")->created_at == 750ms);
  SetOptions seconds;
  seconds.ttl = std::chrono::seconds(2);  // coarser units still convert
  REQUIRE(c.set("s", "v", seconds));
  CHECK(*c.metadata("s")->expires_at - c.metadata("s")->created_at == 2000ms);
  CHECK(store_problems(c).empty());
}

TEST_CASE_TEMPLATE("stale_factor moves the stale/expired boundary", S, STORES) {
  Fixture<S> f;
  f.config.stale_factor = 3.0;
  Cache c = f.open();
  REQUIRE(c.set("t", "v", ttl(10)));
  f.clock.advance(29s);
  CHECK(c.metadata("t")->status == EntryStatus::stale);
  f.clock.advance(1s);
  CHECK(c.metadata("t")->status == EntryStatus::expired);
}

TEST_CASE_TEMPLATE("invalidate by key, category and glob", S, STORES) {
  Fixture<S> f;
  Cache c = f.open();
  for (const char* k : {"user:1:name", "user:1:mail", "user:2:name", "world:1", "w?rld"})
    REQUIRE(c.set(k, "v", ttl(0, std::string(k).starts_with("user") ? "users" : "worlds")));
  CHECK(c.invalidate("world:1"));
  CHECK_FALSE(c.invalidate("world:1"));  // already invalid
  CHECK_FALSE(c.invalidate("nope"));
  CHECK_FALSE(c.get("world:1"));
  CHECK(c.get_entry("world:1", true)->info.status == EntryStatus::invalid);
  CHECK(c.invalidate_pattern("user:*:name") == 2);
  CHECK(c.get("user:1:mail") == "v");
  CHECK(c.invalidate_pattern("w\\?rld") == 1);
  CHECK(c.invalidate_pattern("user:[12]:*") == 1);  // only user:1:mail was still valid
  CHECK_THROWS_AS(c.invalidate_pattern(""), std::invalid_argument);
  CHECK(c.set("world:1", "again", ttl(0, "worlds")));
  CHECK(c.get("world:1") == "again");
  CHECK(c.invalidate_category("worlds") == 1);
  CHECK(c.invalidate_category("worlds") == 0);
  const Stats s = c.stats();
  CHECK(s.invalidation_count == 6);
  CHECK(s.invalid_entries == 5);
  CHECK(s.total_entries == 5);
  // Invalid entries stay listed until cleanup removes them.
  CHECK(c.keys().size() == 5);
  CHECK(c.cleanup() == 5);
  CHECK(c.keys().empty());
  CHECK(c.stats().total_entries == 0);
  CHECK(store_problems(c).empty());
}

TEST_CASE_TEMPLATE("clear and clear_category return counts", S, STORES) {
  Fixture<S> f;
  Cache c = f.open();
  for (int i = 0; i < 30; ++i)
    REQUIRE(c.set("k" + std::to_string(i), "v", ttl(0, i % 3 == 0 ? "a" : "b")));
  CHECK(c.clear_category("a") == 10);
  CHECK(c.clear_category("a") == 0);
  CHECK(c.keys_in_category("a").empty());
  CHECK(c.stats().total_entries == 20);
  CHECK(c.clear() == 20);
  CHECK(c.keys().empty());
  const Stats s = c.stats();
  CHECK(s.total_entries == 0);
  CHECK(s.total_size_bytes == 0);
  CHECK(s.categories.empty());
  CHECK(s.delete_count == 30);
  CHECK(c.set("after", "clear"));
  CHECK(c.get("after") == "clear");
  CHECK(store_problems(c).empty());
}

TEST_CASE_TEMPLATE("cleanup removes expired and invalid entries only", S, STORES) {
  Fixture<S> f;
  Cache c = f.open();
  REQUIRE(c.set("short", "v", ttl(10)));
  REQUIRE(c.set("long", "v", ttl(1000)));
  REQUIRE(c.set("none", "v", ttl(0)));
  REQUIRE(c.set("inv", "v", ttl(0)));
  REQUIRE(c.invalidate("inv"));
  f.clock.advance(15s);     // short is stale, not expired
  CHECK(c.cleanup() == 1);  // only the invalid one
  f.clock.advance(5s);      // short expired
  const Stats before = c.stats();
  CHECK(before.expired_entries == 1);
  CHECK(before.fresh_entries == 2);
  CHECK(c.cleanup() == 1);
  CHECK(c.keys() == std::vector<std::string>{"long", "none"});
  const Stats s = c.stats();
  CHECK(s.expiration_count == 1);
  CHECK(s.cleanup_count == 2);
  CHECK(s.total_entries == 2);
  CHECK(store_problems(c).empty());
}

TEST_CASE_TEMPLATE("hits and misses are counted by every reading call", S, STORES) {
  Fixture<S> f;
  Cache c = f.open();
  REQUIRE(c.set("k", "v"));
  c.get("k");
  c.get("missing");
  c.get_or("k", "x");
  c.get_or("missing", "x");
  c.get_entry("k");
  c.get_entry("missing");
  c.get_object<std::string>("missing");
  c.get_or_compute("k", [] { return std::string("never"); });
  const Stats s = c.stats();
  CHECK(s.hit_count == 4);
  CHECK(s.miss_count == 4);
  CHECK(s.hit_rate() == doctest::Approx(50.0));
  CHECK(s.miss_rate() == doctest::Approx(50.0));
  CHECK(Stats{}.hit_rate() == 0.0);
}

TEST_CASE_TEMPLATE("bad keys and categories are refused, values over the limit too", S, STORES) {
  Fixture<S> f;
  f.config.max_size_bytes = 100;
  Cache c = f.open();
  CHECK_FALSE(c.set("", "v"));
  CHECK_FALSE(c.get(""));
  CHECK_FALSE(c.remove(""));
  const std::string long_key(kMaxKeyBytes + 1, 'k');
  CHECK_FALSE(c.set(long_key, "v"));
  CHECK_FALSE(c.get(long_key));
  CHECK(c.set(std::string(kMaxKeyBytes, 'k'), "v"));
  SetOptions bad_cat;
  bad_cat.category = std::string("a\0b", 3);
  CHECK_FALSE(c.set("k", "v", bad_cat));
  bad_cat.category = std::string(kMaxCategoryBytes + 1, 'c');
  CHECK_FALSE(c.set("k", "v", bad_cat));
  REQUIRE(c.set("small", std::string(60, 'x')));
  CHECK_FALSE(c.set("huge", std::string(101, 'x')));  // refused, evicts nothing
  CHECK(c.get("small"));
  CHECK(c.stats().eviction_count == 0);
  // Binary keys and values round-trip.
  const std::string bin("\0\xff\x01", 3);
  CHECK(c.set(bin, bin));
  CHECK(c.get(bin) == bin);
}

TEST_CASE_TEMPLATE("LRU evicts the least recently set or read", S, STORES) {
  Fixture<S> f;
  f.config.max_entries = 3;
  Cache c = f.open();
  REQUIRE(c.set("a", "1"));
  REQUIRE(c.set("b", "1"));
  REQUIRE(c.set("c", "1"));
  REQUIRE(c.get("a"));  // b is now the oldest
  REQUIRE(c.set("d", "1"));
  CHECK(c.keys() == std::vector<std::string>{"a", "c", "d"});
  REQUIRE(c.set("c", "2"));  // overwrite refreshes c; a is oldest
  REQUIRE(c.set("e", "1"));
  CHECK(c.keys() == std::vector<std::string>{"c", "d", "e"});
  CHECK(c.stats().eviction_count == 2);
  CHECK(store_problems(c).empty());
}

TEST_CASE_TEMPLATE("LFU evicts the lowest count, ties to the least recent", S, STORES) {
  Fixture<S> f;
  f.config.max_entries = 3;
  f.config.eviction_policy = EvictionPolicy::lfu;
  Cache c = f.open();
  REQUIRE(c.set("a", "1"));
  REQUIRE(c.set("b", "1"));
  REQUIRE(c.set("c", "1"));
  for (int i = 0; i < 3; ++i) REQUIRE(c.get("a"));
  REQUIRE(c.get("b"));
  REQUIRE(c.set("d", "1"));  // c has count 1
  CHECK(c.keys() == std::vector<std::string>{"a", "b", "d"});
  REQUIRE(c.get("d"));  // b and d both count 2; b less recent
  REQUIRE(c.set("e", "1"));
  CHECK(c.keys() == std::vector<std::string>{"a", "d", "e"});
  // The count is forgotten on eviction: a re-inserted key starts at 1.
  REQUIRE(c.set("f", "1"));  // evicts e (count 1)
  REQUIRE(c.set("e", "1"));  // evicts f (count 1, older)
  CHECK(c.metadata("e")->access_count == 1);
  CHECK(store_problems(c).empty());
}

TEST_CASE_TEMPLATE("FIFO evicts the oldest insertion; hits do not reorder", S, STORES) {
  Fixture<S> f;
  f.config.max_entries = 3;
  f.config.eviction_policy = EvictionPolicy::fifo;
  Cache c = f.open();
  REQUIRE(c.set("a", "1"));
  REQUIRE(c.set("b", "1"));
  REQUIRE(c.set("c", "1"));
  for (int i = 0; i < 5; ++i) REQUIRE(c.get("a"));
  REQUIRE(c.set("d", "1"));
  CHECK(c.keys() == std::vector<std::string>{"b", "c", "d"});
  CHECK(store_problems(c).empty());
  // An overwrite keeps the entry's place: the oldest insertion (b), the middle one (c) and the
  // newest (d) are overwritten, and b is still the next to go, then c.
  REQUIRE(c.set("b", "2"));
  REQUIRE(c.set("c", "2"));
  REQUIRE(c.set("d", "2"));
  CHECK(store_problems(c).empty());
  REQUIRE(c.set("e", "1"));
  CHECK(c.keys() == std::vector<std::string>{"c", "d", "e"});
  REQUIRE(c.set("f", "1"));
  CHECK(c.keys() == std::vector<std::string>{"d", "e", "f"});
  CHECK(c.get("d") == "2");
  CHECK(store_problems(c).empty());
}

TEST_CASE_TEMPLATE("TTL policy removes only expired and invalid entries, else refuses", S, STORES) {
  Fixture<S> f;
  f.config.max_entries = 2;
  f.config.eviction_policy = EvictionPolicy::ttl;
  Cache c = f.open();
  REQUIRE(c.set("a", "1", ttl(10)));
  REQUIRE(c.set("b", "1", ttl(0)));
  CHECK_FALSE(c.set("c", "1"));  // full of live entries
  CHECK(c.keys() == std::vector<std::string>{"a", "b"});
  f.clock.advance(15s);  // a is stale: still live
  CHECK_FALSE(c.set("c", "1"));
  f.clock.advance(5s);  // a expired
  CHECK(c.set("c", "1"));
  CHECK(c.keys() == std::vector<std::string>{"b", "c"});
  REQUIRE(c.invalidate("b"));
  CHECK(c.set("d", "1"));
  CHECK(c.keys() == std::vector<std::string>{"c", "d"});
  const Stats s = c.stats();
  CHECK(s.eviction_count == 0);
  CHECK(s.expiration_count == 1);
  CHECK(store_problems(c).empty());
}

TEST_CASE_TEMPLATE("expired and invalid entries go before live victims", S, STORES) {
  Fixture<S> f;
  f.config.max_entries = 3;
  Cache c = f.open();
  REQUIRE(c.set("old", "1", ttl(0)));
  REQUIRE(c.set("exp", "1", ttl(1)));
  REQUIRE(c.set("live", "1", ttl(0)));
  f.clock.advance(3s);
  REQUIRE(c.set("new", "1"));
  CHECK(c.keys() == std::vector<std::string>{"live", "new", "old"});
  const Stats s = c.stats();
  CHECK(s.expiration_count == 1);
  CHECK(s.eviction_count == 0);
  CHECK(store_problems(c).empty());
}

TEST_CASE_TEMPLATE("invalid entries, and entries expired at the same time, go in key order", S,
                   STORES) {
  // The expiry order is (expired-at time, key): ties (every invalid entry is at 0) are broken by
  // the key, not by the order of the sets.
  Fixture<S> f;
  f.config.max_entries = 5;
  Cache c = f.open();
  for (const char* k : {"d", "b", "e", "a", "c"}) REQUIRE(c.set(k, "1"));
  for (const char* k : {"c", "e", "a", "d", "b"}) REQUIRE(c.invalidate(k));
  REQUIRE(c.set("n1", "1"));
  CHECK(c.keys() == std::vector<std::string>{"b", "c", "d", "e", "n1"});
  REQUIRE(c.set("n2", "1"));
  REQUIRE(c.set("n3", "1"));
  CHECK(c.keys() == std::vector<std::string>{"d", "e", "n1", "n2", "n3"});
  for (const char* k : {"d", "e", "n1"}) REQUIRE(c.remove(k));
  // Three entries expiring at the same time, set out of key order.
  for (const char* k : {"z", "x", "y"}) REQUIRE(c.set(k, "1", ttl(1)));
  f.clock.advance(2s);
  REQUIRE(c.set("n4", "1"));
  CHECK(c.keys() == std::vector<std::string>{"n2", "n3", "n4", "y", "z"});
  REQUIRE(c.set("n5", "1"));
  CHECK(c.keys() == std::vector<std::string>{"n2", "n3", "n4", "n5", "z"});
  CHECK(c.stats().expiration_count == 2);
  CHECK(store_problems(c).empty());
}

TEST_CASE_TEMPLATE("byte limit evicts until the new value fits", S, STORES) {
  Fixture<S> f;
  f.config.max_size_bytes = 100;
  f.config.max_entries = 0;
  Cache c = f.open();
  REQUIRE(c.set("a", std::string(40, 'a')));
  REQUIRE(c.set("b", std::string(40, 'b')));
  REQUIRE(c.set("c", std::string(20, 'c')));
  REQUIRE(c.set("d", std::string(70, 'd')));  // needs 70: a and b go (LRU), c stays
  CHECK(c.keys() == std::vector<std::string>{"c", "d"});
  CHECK(c.stats().total_size_bytes == 90);
  REQUIRE(c.set("d", std::string(81, 'd')));  // growing in place evicts c, never d itself
  CHECK(c.keys() == std::vector<std::string>{"d"});
  CHECK(c.stats().total_size_bytes == 81);
  CHECK(store_problems(c).empty());
}

namespace {

struct Point {
  int x = 0, y = 0;
  std::string label;
  std::vector<int> tags;
  template <class Archive>
  void serialize(Archive& ar) {
    ar(x, y, label, tags);
  }
  bool operator==(const Point&) const = default;
};

}  // namespace

TEST_CASE_TEMPLATE("set_object and get_object round-trip through cereal", S, STORES) {
  Fixture<S> f;
  Cache c = f.open();
  const Point p{3, -4, "corner", {1, 2, 3}};
  REQUIRE(c.set_object("p", p));
  CHECK(c.get_object<Point>("p") == p);
  REQUIRE(c.set("junk", "x"));
  CHECK_FALSE(c.get_object<Point>("junk"));  // too short to decode
  CHECK(c.stats().error_count == 1);
}

// A value is not trusted: a size tag declaring more elements than the bytes hold is a decode
// failure before anything is allocated for it (cereal's own archive resized first: a 12-byte
// value declaring 1.5 G ints reached a 6 GB peak).
TEST_CASE_TEMPLATE("get_object refuses size tags larger than the value, allocating nothing", S,
                   STORES) {
  Fixture<S> f;
  Cache c = f.open();
  std::uint64_t errors = 0;
  for (const std::uint64_t declared :
       {std::uint64_t{1} << 32, std::uint64_t{1} << 40, std::uint64_t{1} << 63}) {
    CAPTURE(declared);
    std::string bytes(reinterpret_cast<const char*>(&declared), sizeof declared);
    bytes += "abcd";  // 12 bytes in all
    REQUIRE(c.set("huge", bytes));
    const std::uint64_t grew = peak_growth_bytes([&] {
      CHECK_FALSE(c.get_object<std::vector<int>>("huge"));
      CHECK_FALSE(c.get_object<std::string>("huge"));
      CHECK_FALSE(c.get_object<std::vector<std::string>>("huge"));
    });
    CHECK(grew < (std::uint64_t{64} << 20));
    errors += 3;
    CHECK(c.stats().error_count == errors);
  }
  // What fits is still read: a size tag equal to what is left.
  REQUIRE(c.set_object("s", std::string("exactly")));
  CHECK(c.get_object<std::string>("s") == "exactly");
  REQUIRE(c.set_object("v", std::vector<int>{1, 2, 3}));
  CHECK(c.get_object<std::vector<int>>("v") == std::vector<int>{1, 2, 3});
}

TEST_CASE_TEMPLATE("get_many and set_many behave as repeated get and set", S, STORES) {
  Fixture<S> f;
  f.config.max_entries = 3;
  Cache c = f.open();
  const std::string too_long(kMaxKeyBytes + 1, 'k');
  const auto stored =
      c.set_many({{"a", "1"}, {"", "empty key"}, {"b", "2"}, {too_long, "x"}}, ttl(60, "batch"));
  CHECK(stored == std::vector<bool>{true, false, true, false});
  CHECK(c.keys_in_category("batch") == std::vector<std::string>{"a", "b"});
  const auto values = c.get_many({"a", "missing", "b", ""});
  REQUIRE(values.size() == 4);
  CHECK(values[0] == "1");
  CHECK_FALSE(values[1]);
  CHECK(values[2] == "2");
  CHECK_FALSE(values[3]);
  const Stats st = c.stats();
  CHECK(st.set_count == 2);
  CHECK(st.hit_count == 2);
  CHECK(st.miss_count == 2);
  // Limits apply item by item: "a" was read before "b", so the fourth key evicts "a".
  CHECK(c.set_many({{"c", "3"}, {"d", "4"}}) == std::vector<bool>{true, true});
  CHECK(c.keys() == std::vector<std::string>{"b", "c", "d"});
  CHECK_THROWS_AS(c.set_many({{"x", "y"}}, ttl(-1, "batch")), std::invalid_argument);
}

TEST_CASE_TEMPLATE("get_or_compute computes once and caches nothing on exception", S, STORES) {
  Fixture<S> f;
  Cache c = f.open();
  int calls = 0;
  auto compute = [&] {
    ++calls;
    return std::string("value");
  };
  CHECK(c.get_or_compute("k", compute, ttl(60, "computed")) == "value");
  CHECK(c.get_or_compute("k", compute) == "value");
  CHECK(calls == 1);
  CHECK(c.metadata("k")->category == "computed");
  CHECK_THROWS_WITH_AS(
      c.get_or_compute("bad", [&]() -> std::string { throw std::runtime_error("boom"); }), "boom",
      std::runtime_error);
  CHECK_FALSE(c.exists("bad"));
}

TEST_CASE_TEMPLATE("get_or_compute: concurrent callers share one computation", S, STORES) {
  Fixture<S> f;
  Cache c = f.open();
  auto service = Cache::Access::service(c);
  // Holds a flight open until the other n - 1 callers joined it (bounded wait).
  const auto hold_until_joined = [&](std::string_view key, std::size_t n) {
    CHECK(service->await_followers(key, n - 1, 30s));
  };
  std::atomic<int> calls{0};
  std::vector<std::thread> threads;
  std::vector<std::string> results(8);
  for (int i = 0; i < 8; ++i) {
    threads.emplace_back([&, i] {
      results[static_cast<std::size_t>(i)] = c.get_or_compute("slow", [&] {
        calls++;
        hold_until_joined("slow", 8);
        return std::string("result");
      });
    });
  }
  for (auto& t : threads) t.join();
  CHECK(calls.load() == 1);
  for (const auto& r : results) CHECK(r == "result");

  // An exception reaches every waiter.
  std::atomic<int> failures{0};
  threads.clear();
  for (int i = 0; i < 4; ++i) {
    threads.emplace_back([&] {
      try {
        c.get_or_compute("fails", [&]() -> std::string {
          hold_until_joined("fails", 4);
          throw std::runtime_error("compute failed");
        });
      } catch (const std::runtime_error&) {
        failures++;
      }
    });
  }
  for (auto& t : threads) t.join();
  CHECK(failures.load() == 4);
  CHECK_FALSE(c.exists("fails"));
}

TEST_CASE_TEMPLATE("8 threads: mixed operations keep totals exact", S, STORES) {
  Fixture<S> f;
  f.config.max_entries = 500;
  Cache c = f.open();
  std::vector<std::thread> threads;
  for (int t = 0; t < 8; ++t) {
    threads.emplace_back([&c, t] {
      std::uint64_t x = static_cast<std::uint64_t>(t) * 7919 + 1;
      for (int i = 0; i < 3000; ++i) {
        x = x * 6364136223846793005ULL + 1442695040888963407ULL;
        const std::string key = "k" + std::to_string((x >> 33) % 800);
        switch ((x >> 20) % 10) {
          case 0:
            c.remove(key);
            break;
          case 1:
            c.invalidate(key);
            break;
          case 2:
          case 3:
          case 4:
            c.set(key, std::string((x >> 40) % 64 + 1, 'v'), ttl(0, (x & 1) ? "odd" : "even"));
            break;
          default:
            c.get(key);
            break;
        }
      }
    });
  }
  for (auto& t : threads) t.join();
  c.flush();
  const ScannedTotals scanned = scan_totals(c);
  const Stats s = c.stats();
  CHECK(scanned.entries <= 500);
  CHECK(s.total_entries == scanned.entries);
  CHECK(s.total_size_bytes == scanned.bytes);
  CHECK(s.categories == scanned.categories);
  CHECK(s.error_count == 0);
  CHECK(store_problems(c).empty());
}

TEST_CASE_TEMPLATE(
    "8 threads: every operation interleaved, with expiry, keeps the store consistent", S, STORES) {
  Fixture<S> f;
  f.config.max_entries = 300;
  f.config.max_size_bytes = 12'000;
  Cache c = f.open();
  std::atomic<bool> stop{false};
  std::thread ticker([&] {
    while (!stop) {
      f.clock.advance(std::chrono::milliseconds(200));
      std::this_thread::sleep_for(std::chrono::microseconds(200));
    }
  });
  std::vector<std::thread> threads;
  for (int t = 0; t < 8; ++t) {
    threads.emplace_back([&c, t] {
      std::uint64_t x = static_cast<std::uint64_t>(t) * 104729 + 7;
      for (int i = 0; i < 1500; ++i) {
        x = x * 6364136223846793005ULL + 1442695040888963407ULL;
        const std::string key = "k" + std::to_string((x >> 33) % 600);
        const std::string cat = (x & 2) ? "red" : "blue";
        switch ((x >> 20) % 20) {
          case 0:
            c.remove(key);
            break;
          case 1:
            c.invalidate(key);
            break;
          case 2:
            c.cleanup();
            break;
          case 3:
            c.invalidate_pattern("k1*");
            break;
          case 4:
            c.clear_category("red");
            break;
          case 5:
            c.invalidate_category("blue");
            break;
          case 6:
            c.get_entry(key, true);
            break;
          case 7:
            c.metadata(key);
            break;
          case 8:
            c.keys_in_category(cat);
            break;
          case 9:
            c.stats();
            break;
          case 10:
          case 11:
          case 12:
          case 13:
            c.set(key, std::string((x >> 40) % 80 + 1, 'v'),
                  ttl(static_cast<std::int64_t>((x >> 8) % 3), cat));
            break;
          default:
            c.get(key);
            break;
        }
      }
    });
  }
  for (auto& t : threads) t.join();
  stop = true;
  ticker.join();
  const ScannedTotals scanned = scan_totals(c);
  const Stats s = c.stats();
  CHECK(s.total_entries == scanned.entries);
  CHECK(s.total_size_bytes == scanned.bytes);
  CHECK(s.categories == scanned.categories);
  CHECK(s.total_entries <= 300);
  CHECK(s.total_size_bytes <= 12'000);
  CHECK(s.error_count == 0);
  CHECK(store_problems(c).empty());
}

TEST_CASE("a cache root carries a CACHEDIR.TAG, for every strategy that writes to disk") {
  for (Strategy strategy : {Strategy::process_isolated, Strategy::shared}) {
    Fixture<RocksStore> f;
    f.config.strategy = strategy;
    f.config.cache_root = f.dir / "root";
    {
      Cache c = f.open();
      REQUIRE(c.set("k", "v"));
    }
    std::ifstream in(f.dir / "root" / "CACHEDIR.TAG");
    std::string first;
    std::getline(in, first);
    CHECK(first == "Signature: 8a477f597d28d172789f06886806bc55");
    Cache again = f.open();  // a root with a tag (and its other files) opens as before
    CHECK(again.get("k") == std::optional<std::string>("v"));
  }
  Fixture<MemoryStore> memory;
  { Cache c = memory.open(); }
  CHECK_FALSE(std::filesystem::exists(memory.dir / "CACHEDIR.TAG"));  // disabled: nothing on disk
}
