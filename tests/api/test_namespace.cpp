// Namespaces (Cache::ns): separate keyspaces of one store, on both stores and through a shared
// owner in another process.
#include <doctest/doctest.h>

#include <map>
#include <string>
#include <vector>

#include "child.hpp"
#include "shared_support.hpp"
#include "support.hpp"

using namespace larder;
using namespace larder::test;
using namespace std::chrono_literals;

#define STORES RocksStore, MemoryStore

namespace {

using Keys = std::vector<std::string>;

// The same keys in the unnamed namespace and two named ones; every enumerating call of each
// handle sees its own only.
void check_separate(Cache& c) {
  Cache one = c.ns("one");
  Cache two = c.ns("two");
  REQUIRE(c.set("k", "unnamed"));
  REQUIRE(one.set("k", "one", ttl(0, "cat")));
  REQUIRE(two.set("k", "two", ttl(0, "cat")));
  REQUIRE(one.set("x:1", "1", ttl(0, "cat")));
  REQUIRE(one.set("x:2", "2"));
  REQUIRE(c.set("x:1", "1", ttl(0, "cat")));
  CHECK(c.get("k") == "unnamed");
  CHECK(one.get("k") == "one");
  CHECK(two.get("k") == "two");
  CHECK(c.keys() == Keys{"k", "x:1"});
  CHECK(one.keys() == Keys{"k", "x:1", "x:2"});
  CHECK(two.keys() == Keys{"k"});
  CHECK(one.keys_in_category("cat") == Keys{"k", "x:1"});
  CHECK(c.keys_in_category("cat") == Keys{"x:1"});
  CHECK(one.metadata("k")->key == "k");
  CHECK(one.get_entry("k")->info.key == "k");
  CHECK(one.get_many({"k", "x:2", "nope"}) ==
        std::vector<std::optional<std::string>>{"one", "2", std::nullopt});

  CHECK(one.invalidate_pattern("x:*") == 2);
  CHECK(c.get("x:1") == "1");                  // the unnamed one is untouched
  CHECK(one.invalidate_category("cat") == 1);  // "k" (x:1 was already invalid)
  CHECK(two.get("k") == "two");
  CHECK(c.invalidate_pattern("*") == 2);  // the unnamed keys only
  CHECK(two.get("k") == "two");
  CHECK(two.clear_category("cat") == 1);
  CHECK(two.keys().empty());
  CHECK(one.keys().size() == 3);
  CHECK(c.clear() == 2);  // the unnamed keys only
  CHECK(one.keys().size() == 3);
  CHECK(one.remove("x:2"));
  CHECK_FALSE(c.remove("x:2"));
  CHECK(one.clear() == 2);
  CHECK(c.stats().total_entries == 0);
}

}  // namespace

TEST_CASE_TEMPLATE("namespaces: the same key in three namespaces is three entries", S, STORES) {
  Fixture<S> f;
  Cache c = f.open();
  check_separate(c);
  CHECK(store_problems(c).empty());
}

TEST_CASE_TEMPLATE("namespaces: a default TTL, stats and atomic calls of their own", S, STORES) {
  Fixture<S> f;
  f.config.default_ttl = 100s;
  Cache c = f.open();
  Cache brief = c.ns("brief", 10s);
  Cache plain = c.ns("plain");
  REQUIRE(brief.set("a", "1"));
  REQUIRE(plain.set("a", "1"));
  CHECK(brief.metadata("a")->remaining_ttl_seconds() == doctest::Approx(10.0));
  CHECK(plain.metadata("a")->remaining_ttl_seconds() == doctest::Approx(100.0));
  f.clock.advance(10s);
  CHECK_FALSE(brief.get("a"));  // stale
  CHECK(plain.get("a") == "1");

  CHECK(plain.add("b", "x", ttl(0, "adds")));
  CHECK_FALSE(plain.add("b", "y"));
  CHECK(c.add("b", "unnamed"));  // another namespace: no entry there yet
  CHECK(plain.incr("n", 5) == 5);
  CHECK(brief.incr("n") == 1);
  CHECK(plain.touch("b", 0s));
  CHECK(plain.set_all({{"c", "1"}, {"d", "2"}}));
  CHECK(plain.get_or_compute("e", [] { return std::string("computed"); }) == "computed");
  CHECK_FALSE(c.exists("e"));

  const Stats s = plain.stats();
  CHECK(s.total_entries == 6);  // a, b, n, c, d, e
  CHECK(s.total_size_bytes == 1 + 1 + 1 + 1 + 1 + 8);
  CHECK(s.fresh_entries == 6);
  CHECK(s.categories == std::map<std::string, std::uint64_t>{{"adds", 1}, {"default", 5}});
  CHECK(s.hit_count == 1);                  // plain.get("a")
  CHECK(s.miss_count == 1);                 // get_or_compute's first look
  CHECK(s.set_count == 1 + 1 + 1 + 2 + 1);  // a, add b, incr n, set_all, e
  const Stats b = brief.stats();
  CHECK(b.total_entries == 2);
  CHECK(b.stale_entries == 1);
  CHECK(b.miss_count == 1);
  // A second handle on a namespace shares its counts; the unnamed handle counts the store.
  CHECK(c.ns("plain").stats().set_count == s.set_count);
  CHECK(c.stats().total_entries == 6 + 2 + 1);
  CHECK(store_problems(c).empty());
}

TEST_CASE_TEMPLATE("namespaces: one store's limits; names and NUL keys are checked", S, STORES) {
  Fixture<S> f;
  f.config.max_entries = 3;
  Cache c = f.open();
  Cache other = c.ns("other");
  REQUIRE(c.set("a", "1"));
  REQUIRE(other.set("b", "1"));
  REQUIRE(c.set("c", "1"));
  REQUIRE(other.set("d", "1"));  // the least recent entry of the store goes: "a"
  CHECK_FALSE(c.exists("a"));
  CHECK(other.keys() == Keys{"b", "d"});
  CHECK(c.stats().eviction_count == 1);

  CHECK_THROWS_AS(c.ns(""), std::invalid_argument);
  CHECK_THROWS_AS(c.ns(std::string("a\0b", 3)), std::invalid_argument);
  CHECK_THROWS_AS(c.ns(std::string(kMaxNamespaceBytes + 1, 'n')), std::invalid_argument);
  CHECK_THROWS_AS(c.ns("x", -1s), std::invalid_argument);
  CHECK_NOTHROW(c.ns(std::string(kMaxNamespaceBytes, 'n')));
  // Namespaces do not nest: ns() of a namespace handle names a namespace of the store.
  CHECK(other.ns("other").get("d") == "1");
  CHECK(store_problems(c).empty());
}

TEST_CASE_TEMPLATE("namespaces: an unnamed key that looks like a stored named one is its own", S,
                   STORES) {
  Fixture<S> f;
  Cache c = f.open();
  Cache other = c.ns("other");
  REQUIRE(other.set("b", "1"));
  const std::string lookalike = std::string("\0other\0b", 8);
  CHECK_FALSE(c.get(lookalike));
  CHECK(c.set(lookalike, "unnamed"));
  CHECK(c.get(lookalike) == "unnamed");
  CHECK(other.get("b") == "1");
  CHECK(other.keys() == Keys{"b"});
  CHECK(c.keys() == Keys{lookalike});
  CHECK(c.invalidate_pattern(std::string("\0other*", 7)) == 1);
  CHECK(other.get("b") == "1");
  CHECK(c.clear() == 1);
  CHECK(other.get("b") == "1");
  CHECK(store_problems(c).empty());
}

TEST_CASE("namespaces: a client's calls stay in its namespace through the owner") {
  TempDir tmp;
  const auto root = tmp / "cache";
  Child owner({"hold", root.string(), "shared"});  // it sets the unnamed "held"
  REQUIRE(owner.wait_for_lines(1));
  Cache c = Cache::open(shared_config(root));
  REQUIRE(backend_of(c) == nullptr);  // a client
  REQUIRE(c.remove("held"));          // check_separate starts from an empty store
  check_separate(c);
  REQUIRE(c.set("held", "yes"));
  Cache one = c.ns("one");
  REQUIRE(one.set("held", "in one"));
  CHECK(c.get("held") == "yes");
  CHECK(one.get("held") == "in one");
  CHECK(one.stats().total_entries == 1);
}
