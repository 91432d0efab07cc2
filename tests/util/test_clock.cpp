// util::MonotonicClock: the injected function, and how long a waiter may block until a time.
#include <doctest/doctest.h>

#include <chrono>

#include "util/clock.hpp"

using larder::util::MonotonicClock;
using namespace std::chrono_literals;

TEST_CASE("monotonic clock: until() is what is left, capped, and short when injected") {
  const MonotonicClock::time_point t0{std::chrono::seconds(1000)};
  MonotonicClock::time_point now = t0;
  const MonotonicClock injected([&] { return now; });
  CHECK(injected.injected());
  CHECK(injected.now() == t0);
  CHECK(injected.until(t0 - 1s, 1h) == 0ns);  // past: no wait
  CHECK(injected.until(MonotonicClock::time_point::min(), 1h) == 0ns);
  CHECK(injected.until(t0 + 1s, 1h) == MonotonicClock::kInjectedPoll);  // looks again soon
  CHECK(injected.until(t0 + 1ms, 1h) == 1ms);
  now = t0 + 2s;  // moving the clock makes the time due
  CHECK(injected.until(t0 + 1s, 1h) == 0ns);

  const MonotonicClock steady;
  CHECK_FALSE(steady.injected());
  CHECK(steady.until(MonotonicClock::time_point::max(), 1h) == 1h);  // never due: the cap
  const auto left = steady.until(steady.now() + 10min, 1h);
  CHECK(left > 9min);
  CHECK(left <= 10min);
  CHECK(steady.until(steady.now() + 10min, 1s) == 1s);
}
