// util::Breaker: opening after the threshold, the retry time, the doubling wait, probes, closing.
#include <doctest/doctest.h>

#include <chrono>

#include "util/breaker.hpp"

using larder::util::Breaker;
using namespace std::chrono_literals;

namespace {
constexpr std::int64_t ns(std::chrono::nanoseconds d) {
  return d.count();
}
}  // namespace

TEST_CASE("breaker: opens after `threshold` consecutive failures, refuses until its retry time") {
  Breaker b({3, 100ms, 100ms});
  CHECK_FALSE(b.failure(0));
  CHECK_FALSE(b.failure(0));
  CHECK_FALSE(b.open());
  CHECK(b.failure(ns(10ms)));  // the third opens it
  CHECK(b.open());
  CHECK(b.refusing(ns(10ms)));
  CHECK(b.refusing(ns(109ms)));
  CHECK_FALSE(b.refusing(ns(110ms)));  // a probe may go
  CHECK(b.open());                     // still open until a success
  CHECK(b.success());
  CHECK_FALSE(b.open());
  CHECK_FALSE(b.refusing(ns(111ms)));
}

TEST_CASE("breaker: a success between failures starts the count again; clear_failures too") {
  Breaker b({2, 1s, 1s});
  CHECK_FALSE(b.failure(0));
  CHECK_FALSE(b.success());  // it was not open
  CHECK_FALSE(b.failure(0));
  b.clear_failures();
  CHECK_FALSE(b.failure(0));
  CHECK_FALSE(b.open());
  CHECK(b.failure(0));
  b.clear_failures();  // does not close an open breaker
  CHECK(b.open());
}

TEST_CASE("breaker: each failed probe doubles the wait, up to the maximum; a success resets it") {
  Breaker b({1, 500ms, 5s});
  CHECK(b.failure(0));
  CHECK(b.wait() == 500ms);
  std::int64_t now = ns(500ms);
  CHECK_FALSE(b.refusing(now));
  CHECK_FALSE(b.failure(now));  // a failed probe re-arms it
  CHECK(b.wait() == 1s);
  CHECK(b.refusing(now + ns(999ms)));
  CHECK_FALSE(b.refusing(now + ns(1s)));
  for (int i = 0; i < 5; ++i) b.failure(now);
  CHECK(b.wait() == 5s);  // capped
  CHECK(b.success());
  CHECK(b.wait() == 0s);
  CHECK(b.failure(now));
  CHECK(b.wait() == 500ms);  // from the first wait again
}

TEST_CASE("breaker: trip opens it at once; probe_now lets the next call through") {
  Breaker b({5, 30s, 30s});
  CHECK(b.trip(0));
  CHECK(b.refusing(ns(1s)));
  b.probe_now();
  CHECK_FALSE(b.refusing(ns(1s)));
  CHECK(b.open());
  CHECK_FALSE(b.trip(ns(2s)));  // already open: re-armed
  CHECK(b.refusing(ns(3s)));
}
