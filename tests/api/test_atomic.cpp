// The atomic primitives (add, touch, incr, set_all) through the public Cache, on both stores,
// from many threads, and from several processes on one shared cache.
#include <doctest/doctest.h>

#include <atomic>
#include <limits>
#include <thread>
#include <vector>

#include "child.hpp"
#include "shared_support.hpp"
#include "support.hpp"

using namespace larder;
using namespace larder::test;
using namespace std::chrono_literals;

#define STORES RocksStore, MemoryStore

TEST_CASE_TEMPLATE("add stores only where no fresh entry is stored", S, STORES) {
  Fixture<S> f;
  Cache c = f.open();
  CHECK(c.add("k", "first", ttl(10, "cat")));
  CHECK_FALSE(c.add("k", "second"));
  CHECK(c.get("k") == "first");
  CHECK(c.metadata("k")->category == "cat");
  f.clock.advance(10s);  // stale: add replaces it
  CHECK(c.add("k", "third"));
  CHECK(c.get("k") == "third");
  REQUIRE(c.invalidate("k"));  // invalid: add replaces it
  CHECK(c.add("k", "fourth"));
  CHECK(c.get("k") == "fourth");
  CHECK_FALSE(c.add("", "empty key"));
  CHECK_THROWS_AS(c.add("x", "v", ttl(-1)), std::invalid_argument);
  CHECK(c.stats().set_count == 3);  // the refused add counts nothing
  CHECK(store_problems(c).empty());
}

TEST_CASE_TEMPLATE("touch gives a fresh entry a new TTL from now and keeps its value", S, STORES) {
  Fixture<S> f;
  Cache c = f.open();
  SetOptions o = ttl(10, "cat");
  o.metadata = {{"m", "1"}};
  REQUIRE(c.set("k", "value", o));
  f.clock.advance(8s);
  CHECK(c.touch("k", 100s));
  CHECK(c.metadata("k")->remaining_ttl_seconds() == doctest::Approx(100.0));
  f.clock.advance(50s);  // 58 s after the set: fresh only because of the touch
  auto e = c.get_entry("k");
  REQUIRE(e);
  CHECK(e->value == "value");
  CHECK(e->info.category == "cat");
  CHECK(e->info.metadata == std::map<std::string, std::string>{{"m", "1"}});
  CHECK(c.touch("k", 0s));  // never expires
  f.clock.advance(std::chrono::hours(24 * 365));
  CHECK(c.get("k") == "value");
  CHECK_FALSE(c.metadata("k")->expires_at);

  REQUIRE(c.set("s", "v", ttl(1)));
  f.clock.advance(1s);  // stale: nothing to touch
  CHECK_FALSE(c.touch("s", 100s));
  CHECK(c.metadata("s")->status == EntryStatus::stale);
  CHECK_FALSE(c.touch("missing", 10s));
  CHECK_THROWS_AS(c.touch("k", -1s), std::invalid_argument);
  CHECK(store_problems(c).empty());
}

TEST_CASE_TEMPLATE("incr adds to a decimal counter and refuses other values", S, STORES) {
  Fixture<S> f;
  Cache c = f.open();
  CHECK(c.incr("n") == 1);  // a missing key counts as 0
  CHECK(c.incr("n", 41) == 42);
  CHECK(c.incr("n", -50) == -8);
  CHECK(c.get("n") == "-8");

  // An existing counter keeps its lifetime, category and metadata; options apply on creation.
  REQUIRE(c.incr("t", 5, ttl(10, "counters")) == 5);
  f.clock.advance(6s);
  CHECK(c.incr("t", 1, ttl(1000, "other")) == 6);
  CHECK(c.metadata("t")->category == "counters");
  CHECK(c.metadata("t")->remaining_ttl_seconds() == doctest::Approx(4.0));
  f.clock.advance(4s);  // stale: it starts again at 0 with the new options
  CHECK(c.incr("t", 2, ttl(1000, "other")) == 2);
  CHECK(c.metadata("t")->category == "other");

  REQUIRE(c.set("text", "12 apples"));
  CHECK_FALSE(c.incr("text"));
  CHECK(c.get("text") == "12 apples");
  for (const char* bad : {"", " 1", "+1", "1.5", "0x10", "99999999999999999999"}) {
    REQUIRE(c.set("bad", bad));
    CHECK_FALSE(c.incr("bad"));
    CHECK(c.get("bad") == bad);
  }
  REQUIRE(c.set("big", std::to_string(std::numeric_limits<std::int64_t>::max())));
  CHECK_FALSE(c.incr("big"));  // the sum would overflow
  CHECK(c.incr("big", -1) == std::numeric_limits<std::int64_t>::max() - 1);
  CHECK_FALSE(c.incr(""));
  CHECK(store_problems(c).empty());
}

TEST_CASE_TEMPLATE("set_all stores every item or none", S, STORES) {
  Fixture<S> f;
  f.config.max_entries = 4;
  Cache c = f.open();
  REQUIRE(c.set("a", "old value"));
  REQUIRE(c.set("old1", "x"));
  REQUIRE(c.set("old2", "x"));
  // One bad item refuses the batch.
  CHECK_FALSE(c.set_all({{"a", "1"}, {"", "empty key"}}));
  CHECK(c.exists("a"));
  // Room is made by evicting other keys, never the batch's own: "a" is the least recent, so
  // old1 goes.
  CHECK(c.set_all({{"b", "2"}, {"c", "3"}, {"a", "1"}}, ttl(60, "batch")));
  CHECK(c.keys() == std::vector<std::string>{"a", "b", "c", "old2"});
  CHECK(c.keys_in_category("batch") == std::vector<std::string>{"a", "b", "c"});
  // A key twice: its last value, counted once (old2 goes).
  CHECK(c.set_all({{"d", "first"}, {"d", "last"}}));
  CHECK(c.get("d") == "last");
  // More items than the limit can hold: nothing is stored, nothing is evicted.
  CHECK_FALSE(c.set_all({{"e", "1"}, {"f", "2"}, {"g", "3"}, {"h", "4"}, {"i", "5"}}));
  CHECK(c.keys() == std::vector<std::string>{"a", "b", "c", "d"});
  CHECK(c.set_all({}));
  CHECK_THROWS_AS(c.set_all({{"x", "y"}}, ttl(-1)), std::invalid_argument);
  const Stats s = c.stats();
  CHECK(s.set_count == 3 + 3 + 1);
  CHECK(s.eviction_count == 2);
  CHECK(s.total_entries == 4);
  CHECK(store_problems(c).empty());
}

TEST_CASE_TEMPLATE("set_all under a byte limit and under the ttl policy", S, STORES) {
  Fixture<S> f;
  f.config.max_entries = 0;
  f.config.max_size_bytes = 10;
  f.config.eviction_policy = EvictionPolicy::ttl;
  Cache c = f.open();
  REQUIRE(c.set("live", "12345"));
  CHECK_FALSE(c.set_all({{"a", "123"}, {"b", "123"}}));  // 11 bytes of live entries: full
  CHECK_FALSE(c.exists("a"));
  CHECK_FALSE(c.set_all({{"a", std::string(11, 'x')}}));  // larger than the limit
  CHECK(c.set_all({{"a", "123"}, {"live", "1"}}));        // the overwrite frees 4 bytes
  CHECK(c.stats().total_size_bytes == 4);
  CHECK(store_problems(c).empty());
}

TEST_CASE_TEMPLATE("s3fifo: set_all re-admits several ghosts in one batch", S, STORES) {
  Fixture<S> f;
  f.config.max_entries = 10;
  f.config.eviction_policy = EvictionPolicy::s3fifo;
  Cache c = f.open();
  for (int i = 0; i < 12; ++i) REQUIRE(c.set("k" + std::to_string(i), "v"));  // k0, k1 -> G
  CHECK_FALSE(c.exists("k0"));
  CHECK_FALSE(c.exists("k1"));
  CHECK(c.set_all({{"k0", "v"}, {"k1", "v"}}));
  CHECK(c.exists("k0"));
  CHECK(c.exists("k1"));
  CHECK(c.stats().total_entries == 10);
  CHECK(store_problems(c).empty());  // verify checks ghosts, queue sizes and fields
}

TEST_CASE_TEMPLATE("8 threads: incr and add are atomic", S, STORES) {
  Fixture<S> f;
  Cache c = f.open();
  std::atomic<int> add_wins{0}, incr_ok{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < 8; ++t)
    threads.emplace_back([&, t] {
      if (c.add("winner", std::to_string(t))) ++add_wins;
      for (int i = 0; i < 250; ++i)
        if (c.incr("counter")) ++incr_ok;
    });
  for (auto& th : threads) th.join();
  CHECK(add_wins == 1);
  CHECK(incr_ok == 2000);
  CHECK(c.get("counter") == "2000");
  CHECK(store_problems(c).empty());
}

TEST_CASE_TEMPLATE("compare_and_set stores only over the expected fresh value", S, STORES) {
  Fixture<S> f;
  Cache c = f.open();
  CHECK_FALSE(c.compare_and_set("k", "", "v"));  // nothing stored: nothing to compare with
  CHECK_FALSE(c.exists("k"));
  REQUIRE(c.set("k", "one", ttl(10)));
  CHECK_FALSE(c.compare_and_set("k", "two", "three"));
  CHECK(c.get("k") == "one");
  SetOptions o = ttl(100, "cat");
  o.metadata = {{"m", "1"}};
  CHECK(c.compare_and_set("k", "one", "two", o));  // stored with the call's options, as set()
  auto e = c.get_entry("k");
  REQUIRE(e);
  CHECK(e->value == "two");
  CHECK(e->info.category == "cat");
  CHECK(e->info.metadata == o.metadata);
  CHECK(e->info.remaining_ttl_seconds() == doctest::Approx(100.0));
  f.clock.advance(100s);  // stale: its value no longer counts
  CHECK_FALSE(c.compare_and_set("k", "two", "three"));
  CHECK(c.get_entry("k", true)->value == "two");
  REQUIRE(c.set("b", std::string("\0\xff", 2)));
  CHECK(c.compare_and_set("b", std::string("\0\xff", 2), ""));  // binary and empty values
  CHECK(c.get("b") == "");
  CHECK_FALSE(c.compare_and_set("", "", "v"));
  CHECK_THROWS_AS(c.compare_and_set("b", "", "v", ttl(-1)), std::invalid_argument);
  CHECK(c.stats().set_count == 4);  // two sets, two swaps; the refused ones count nothing
  CHECK(store_problems(c).empty());
}

TEST_CASE_TEMPLATE("get_and_touch returns the fresh value and renews its TTL in one step", S,
                   STORES) {
  Fixture<S> f;
  Cache c = f.open();
  SetOptions o = ttl(10, "cat");
  o.metadata = {{"m", "1"}};
  REQUIRE(c.set("k", "value", o));
  f.clock.advance(8s);
  CHECK(c.get_and_touch("k", 100s) == "value");
  CHECK(c.metadata("k")->remaining_ttl_seconds() == doctest::Approx(100.0));
  f.clock.advance(50s);  // 58 s after the set: fresh only because of the renewal
  const auto e = c.get_entry_and_touch("k", 5s);
  REQUIRE(e);
  CHECK(e->value == "value");
  CHECK(e->info.key == "k");
  CHECK(e->info.category == "cat");
  CHECK(e->info.metadata == o.metadata);
  CHECK(e->info.status == EntryStatus::fresh);
  CHECK(e->info.remaining_ttl_seconds() == doctest::Approx(5.0));
  f.clock.advance(5s);  // expired by the last renewal: a miss, and nothing renewed
  CHECK_FALSE(c.get_and_touch("k", 100s));
  CHECK(c.metadata("k")->status == EntryStatus::stale);
  REQUIRE(c.set("forever", "v", ttl(1)));
  CHECK(c.get_and_touch("forever", 0ms) == "v");  // 0: never expires
  f.clock.advance(std::chrono::hours(24 * 365));
  CHECK(c.get("forever") == "v");
  CHECK_FALSE(c.get_and_touch("missing", 10s));
  CHECK_FALSE(c.get_and_touch("", 10s));
  CHECK_THROWS_AS(c.get_and_touch("forever", -1ms), std::invalid_argument);
  const Stats st = c.stats();
  CHECK(st.hit_count == 4);   // three renewals and the get
  CHECK(st.miss_count == 3);  // the expired, missing and empty keys
  CHECK(store_problems(c).empty());
}

TEST_CASE_TEMPLATE("8 threads: compare_and_set increments lose nothing", S, STORES) {
  Fixture<S> f;
  Cache c = f.open();
  REQUIRE(c.set("n", "0"));
  std::atomic<long> swaps{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < 8; ++t)
    threads.emplace_back([&] {
      for (int done = 0; done < 100;) {
        const auto v = c.get("n");
        if (v && c.compare_and_set("n", *v, std::to_string(std::stol(*v) + 1))) ++done, ++swaps;
      }
    });
  for (auto& th : threads) th.join();
  CHECK(swaps == 800);
  CHECK(c.get("n") == "800");
  CHECK(store_problems(c).empty());
}

TEST_CASE("shared: a client's compare_and_set and get_and_touch run on the owner") {
  TempDir tmp;
  const auto root = tmp / "cache";
  Child owner({"hold", root.string(), "shared"});
  REQUIRE(owner.wait_for_lines(1));
  Cache c = Cache::open(shared_config(root));
  REQUIRE(backend_of(c) == nullptr);  // a client: every call crosses the socket
  REQUIRE(c.set("k", "one", ttl(10)));
  CHECK_FALSE(c.compare_and_set("k", "other", "two"));
  CHECK_MESSAGE(c.compare_and_set("k", "one", "two", ttl(3600)), c.last_error());
  CHECK(c.get_and_touch("k", 7200s) == "two");
  CHECK(c.metadata("k")->remaining_ttl_seconds() > 3600);
  CHECK_FALSE(c.get_and_touch("missing", 1s));
  CHECK_FALSE(c.degraded());
}

TEST_CASE("shared: add and incr are atomic across processes, through the owner") {
  TempDir tmp;
  const auto root = tmp / "cache";
  // This process owns the store (no takeover mid-run); three clients in other processes.
  Cache c = Cache::open(shared_config(root));
  REQUIRE(backend_of(c) != nullptr);
  std::vector<std::unique_ptr<Child>> children;
  for (int id = 0; id < 3; ++id) {
    children.push_back(std::make_unique<Child>(
        std::vector<std::string>{"atomic", root.string(), std::to_string(id), "200"}));
    REQUIRE(children.back()->wait_for_lines(1));
  }
  for (auto& child : children) child->close_stdin();  // go
  int adds = 0;
  for (int i = 0; i < 200; ++i) REQUIRE(c.incr("counter"));
  for (auto& child : children) {
    REQUIRE(child->wait_at_most(60s) == 0);
    const auto lines = child->lines();
    REQUIRE(lines.size() == 4);
    adds += lines[1] == "add 1" ? 1 : 0;
    CHECK(lines[2] == "incr 200");
    CHECK(lines[3] == "cas 200");
  }
  CHECK(adds == 1);
  CHECK(c.get("counter") == "800");
  CHECK(c.get("cas") == "600");  // no compare_and_set of one process overwrote another's
  CHECK(c.set_all({{"x", "1"}, {"y", "2"}}));
  CHECK(c.get_many({"x", "y"}) == std::vector<std::optional<std::string>>{"1", "2"});
}

// The owner exits gracefully while clients send: what it did not run it says so (a `closing`
// reply, also to connections still queued on its listener), and the clients send again to the
// next owner. Before that, an incr in flight at a handover failed (4 runs of 4 here).
TEST_CASE("shared: no incr is lost while owners hand over among the processes") {
  TempDir tmp;
  const auto root = tmp / "cache";
  std::vector<std::unique_ptr<Child>> children;
  for (int id = 0; id < 3; ++id) {
    children.push_back(std::make_unique<Child>(
        std::vector<std::string>{"atomic", root.string(), std::to_string(id), "300"}));
    children.back()->close_stdin();  // go at once: they elect owners among themselves
  }
  int adds = 0;
  for (auto& child : children) {
    REQUIRE(child->wait_at_most(60s) == 0);
    const auto lines = child->lines();
    REQUIRE(lines.size() == 4);
    adds += lines[1] == "add 1" ? 1 : 0;
    CHECK(lines[2] == "incr 300");
    CHECK(lines[3] == "cas 300");
  }
  CHECK(adds == 1);
  Cache c = Cache::open(shared_config(root));
  CHECK(c.get("counter") == "900");
  CHECK(c.get("cas") == "900");
}
