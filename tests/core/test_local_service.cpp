// core::LocalService on its own (no Cache in front): leases timed by the injected monotonic
// clock, the conditional set, and get_many's byte budget.
#include <doctest/doctest.h>

#include <atomic>
#include <chrono>
#include <memory>
#include <string>
#include <vector>

#include "api/config.hpp"
#include "core/backend.hpp"
#include "core/service.hpp"

using namespace larder;
using namespace std::chrono_literals;

namespace {

// A memory cache's service whose monotonic clock moves only when the test says.
struct Service {
  std::shared_ptr<std::atomic<std::int64_t>> ns = std::make_shared<std::atomic<std::int64_t>>(0);
  core::LocalService service = open(ns);

  static core::LocalService open(const std::shared_ptr<std::atomic<std::int64_t>>& ns) {
    Config cfg;
    cfg.strategy = Strategy::disabled;
    cfg.monotonic_clock = [ns] {
      return std::chrono::steady_clock::time_point(std::chrono::nanoseconds(ns->load()));
    };
    return core::LocalService(core::Backend::open(api::resolve(cfg)));
  }
  void advance(std::chrono::nanoseconds d) { ns->fetch_add(d.count()); }
};

core::SetRequest item(std::string key, std::string value) {
  core::SetRequest s;
  s.key = std::move(key);
  s.value = std::move(value);
  return s;
}

}  // namespace

TEST_CASE("local service: a lease is exclusive until its holder releases it or it expires") {
  Service s;
  std::int64_t wait_ms = -1;
  REQUIRE(s.service.acquire_lease("k", 1, 1000, &wait_ms));
  CHECK(wait_ms == 0);
  CHECK(s.service.acquire_lease("k", 1, 1000, &wait_ms));  // its holder may renew it
  CHECK_FALSE(s.service.acquire_lease("k", 2, 1000, &wait_ms));
  CHECK(wait_ms == 1000);  // how long until it expires, by the injected clock
  s.advance(400ms);
  CHECK_FALSE(s.service.acquire_lease("k", 2, 1000, &wait_ms));
  CHECK(wait_ms == 600);
  s.advance(600ms);  // expired: no sleeping needed
  CHECK(s.service.acquire_lease("k", 2, 1000, &wait_ms));
  s.service.release_lease("k", 1);  // not the holder: nothing
  CHECK_FALSE(s.service.acquire_lease("k", 1, 1000, &wait_ms));
  s.service.release_lease("k", 2);
  CHECK(s.service.acquire_lease("k", 1, 1000, &wait_ms));
}

TEST_CASE("local service: compare_and_set stores only over the expected fresh value") {
  Service s;
  CHECK_FALSE(s.service.compare_and_set(item("k", "b"), "a"));  // nothing stored
  REQUIRE(s.service.set(item("k", "a")));
  CHECK_FALSE(s.service.compare_and_set(item("k", "c"), "x"));
  CHECK(s.service.get("k") == "a");
  CHECK(s.service.compare_and_set(item("k", "c"), "a"));
  CHECK(s.service.get("k") == "c");
}

TEST_CASE("local service: get_many answers the prefix of keys that fits the byte budget") {
  Service s;
  for (const char* k : {"a", "b", "c", "d"}) REQUIRE(s.service.set(item(k, std::string(100, 'v'))));
  const std::vector<std::string> keys{"a", "b", "missing", "c", "d"};
  CHECK(s.service.get_many(keys, 1'000'000).size() == 5);
  // The answer ends at the key whose value reaches the budget: a, b (200 bytes).
  const auto some = s.service.get_many(keys, 150);
  REQUIRE(some.size() == 2);
  CHECK(some[0].has_value());
  CHECK(some[1].has_value());
}
