// Cache::subscribe: change events in commit order, filtered by glob and namespace, bounded with
// counted drops, stopped by the Subscription; and through a shared owner from other processes.
#include <doctest/doctest.h>

#include <atomic>
#include <condition_variable>
#include <mutex>
#include <thread>

#include "child.hpp"
#include "helper_values.hpp"
#include "shared_support.hpp"
#include "support.hpp"

using namespace larder;
using namespace larder::test;
using namespace std::chrono_literals;

#define STORES RocksStore, MemoryStore

namespace {

using K = Event::Kind;

// Collects events; waits (bounded) for a number of them.
struct Collector {
  std::mutex mu;
  std::condition_variable cv;
  std::vector<std::pair<K, std::string>> seen;

  std::function<void(const Event&)> callback() {
    return [this](const Event& e) {
      std::lock_guard lock(mu);
      seen.emplace_back(e.kind, e.key);
      cv.notify_all();
    };
  }
  std::vector<std::pair<K, std::string>> wait_for(std::size_t n, std::chrono::seconds limit = 20s) {
    std::unique_lock lock(mu);
    cv.wait_for(lock, limit, [&] { return seen.size() >= n; });
    return seen;
  }
};

// "set a, remove b": readable in a failed check.
std::string text(const std::vector<std::pair<K, std::string>>& events) {
  static const char* const names[] = {"set", "remove", "invalidate", "evict", "expire"};
  std::string out;
  for (const auto& [kind, key] : events)
    out += (out.empty() ? "" : ", ") + std::string(names[static_cast<int>(kind)]) + " " + key;
  return out;
}

}  // namespace

TEST_CASE_TEMPLATE("subscribe: every kind of change, in commit order", S, STORES) {
  Fixture<S> f;
  f.config.max_entries = 2;
  Cache c = f.open();
  REQUIRE(c.set("before", "not seen"));  // before the subscription
  Collector col;
  Subscription sub = c.subscribe(col.callback());
  REQUIRE(c.set("a", "1", ttl(10)));
  REQUIRE(c.invalidate("a"));
  REQUIRE(c.incr("n"));              // over the limit: the invalid "a" goes first
  REQUIRE(c.set("t", "1", ttl(1)));  // then the least recent live entry: "before"
  f.clock.advance(2s);
  CHECK(c.cleanup() == 1);   // "t" expired
  REQUIRE(c.set("b", "1"));  // "t" is gone: "n" and "b" fit
  CHECK(c.remove("b"));
  const std::vector<std::pair<K, std::string>> want = {
      {K::set, "a"}, {K::invalidate, "a"}, {K::remove, "a"}, {K::set, "n"},   {K::evict, "before"},
      {K::set, "t"}, {K::expire, "t"},     {K::set, "b"},    {K::remove, "b"}};
  CHECK(text(col.wait_for(want.size())) == text(want));
  CHECK(sub.dropped() == 0);
}

TEST_CASE_TEMPLATE("subscribe: a glob and a namespace choose the keys; destroying stops it", S,
                   STORES) {
  Fixture<S> f;
  Cache c = f.open();
  Cache ns = c.ns("jobs");
  Collector col;
  auto sub = std::make_unique<Subscription>(ns.subscribe(col.callback(), "x:*"));
  REQUIRE(c.set("x:1", "unnamed"));  // another namespace
  REQUIRE(ns.set("y:1", "1"));       // does not match
  REQUIRE(ns.set("x:1", "1"));
  CHECK(ns.clear() == 2);
  const std::vector<std::pair<K, std::string>> want = {{K::set, "x:1"}, {K::remove, "x:1"}};
  CHECK(col.wait_for(want.size()) == want);
  sub.reset();  // unsubscribed: nothing more arrives
  // A second subscriber is the witness: once it has the next event, the first would have too.
  Collector witness;
  Subscription second = ns.subscribe(witness.callback(), "x:*");
  REQUIRE(ns.set("x:2", "1"));
  REQUIRE(witness.wait_for(1).size() == 1);
  CHECK(col.wait_for(0).size() == want.size());
  CHECK_THROWS_AS(c.subscribe(col.callback(), ""), std::invalid_argument);
}

TEST_CASE("subscribe: a slow subscriber loses the oldest events, counted; writers do not wait") {
  TempDir tmp;
  TestClock clock;
  Cache c = Cache::open(MemoryStore::config(tmp, clock));
  std::mutex gate_mu;
  std::condition_variable gate_cv;
  bool open_gate = false;
  std::atomic<std::size_t> delivered{0};
  Subscription sub = c.subscribe([&](const Event&) {
    std::unique_lock lock(gate_mu);
    gate_cv.wait(lock, [&] { return open_gate; });  // stuck until the writer is done
    ++delivered;
  });
  constexpr int kSets = 70'000;  // more than the log holds
  for (int i = 0; i < kSets; ++i) REQUIRE(c.set("k" + std::to_string(i % 1000), "v"));
  {
    std::lock_guard lock(gate_mu);
    open_gate = true;
  }
  gate_cv.notify_all();
  for (int i = 0; i < 2000 && delivered + sub.dropped() < kSets; ++i)
    std::this_thread::sleep_for(10ms);
  CHECK(sub.dropped() > 0);
  CHECK(delivered + sub.dropped() == kSets);  // each event delivered or counted as lost
}

TEST_CASE("subscribe: a client sees the changes of other processes through the owner") {
  TempDir tmp;
  const auto root = tmp / "cache";
  Child owner({"hold", root.string(), "shared"});
  REQUIRE(owner.wait_for_lines(1));
  Cache c = Cache::open(shared_config(root));
  REQUIRE(backend_of(c) == nullptr);  // a client
  Collector col;
  Subscription sub = c.subscribe(col.callback(), "key-*");  // from the log's end, at once
  Child writer({"write", root.string(), "0", "20"});        // another client: key-0 .. key-19
  REQUIRE(writer.wait_at_most(60s) == 0);
  REQUIRE(c.invalidate(helper_key(3)));
  const auto seen = col.wait_for(21);
  REQUIRE(seen.size() == 21);
  for (int i = 0; i < 20; ++i)
    CHECK(seen[static_cast<std::size_t>(i)] == std::pair(K::set, helper_key(i)));
  CHECK(seen[20] == std::pair(K::invalidate, helper_key(3)));
}

TEST_CASE("subscribe: a client process sees the owner's and other clients' changes in order") {
  TempDir tmp;
  const auto root = tmp / "cache";
  Cache owner = Cache::open(shared_config(root));  // this process owns the store
  REQUIRE(backend_of(owner) != nullptr);
  Child listener({"events", root.string(), "key-*", "6"});
  REQUIRE(listener.wait_for_lines(1));               // subscribed
  Child writer({"write", root.string(), "0", "3"});  // another client: key-0 .. key-2
  REQUIRE(writer.wait_at_most(60s) == 0);
  REQUIRE(owner.invalidate(helper_key(1)));  // the owner's own changes
  REQUIRE(owner.remove(helper_key(0)));
  REQUIRE(owner.set("other", "not matched"));
  REQUIRE(owner.set(helper_key(0), "again"));
  REQUIRE(listener.wait_at_most(60s) == 0);
  const std::vector<std::string> want = {"ready",
                                         "set " + helper_key(0),
                                         "set " + helper_key(1),
                                         "set " + helper_key(2),
                                         "invalidate " + helper_key(1),
                                         "remove " + helper_key(0),
                                         "set " + helper_key(0)};
  CHECK(listener.lines() == want);
}
