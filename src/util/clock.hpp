// The monotonic clock that timeouts, breakers, leases and the housekeeper's decisions read: the
// steady clock, or the one a test injects (Config::monotonic_clock) to move time without
// sleeping. Waits on sockets, condition variables and locks still take real time: the clock
// decides when something is due, not how long a thread blocks.
//
// Thread-safety: now() may be called from any thread; the injected function must be thread-safe.
#pragma once

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <functional>
#include <utility>

namespace larder::util {

class MonotonicClock {
 public:
  using time_point = std::chrono::steady_clock::time_point;
  using Fn = std::function<time_point()>;

  MonotonicClock() = default;                             // the steady clock
  explicit MonotonicClock(Fn fn) : fn_(std::move(fn)) {}  // empty: the steady clock

  // The current time: the injected function's, else std::chrono::steady_clock's.
  time_point now() const { return fn_ ? fn_() : std::chrono::steady_clock::now(); }
  // True when a test injected the clock: a thread that waits for a time on it must look again
  // at least every kInjectedPoll, since moving the clock wakes nobody.
  bool injected() const { return static_cast<bool>(fn_); }
  static constexpr std::chrono::milliseconds kInjectedPoll{5};
  // How long a thread may block until `due` on this clock (0 when due is past; at most
  // kInjectedPoll for an injected clock; `cap` when due is time_point::max()).
  std::chrono::nanoseconds until(time_point due, std::chrono::nanoseconds cap) const {
    const time_point t = now();
    if (due <= t) return std::chrono::nanoseconds(0);
    const std::chrono::nanoseconds left =
        due == time_point::max() ? cap : std::min<std::chrono::nanoseconds>(due - t, cap);
    return injected() ? std::min<std::chrono::nanoseconds>(left, kInjectedPoll) : left;
  }
  // now() in nanoseconds since the clock's epoch (for atomics).
  std::int64_t now_ns() const {
    return std::chrono::duration_cast<std::chrono::nanoseconds>(now().time_since_epoch()).count();
  }

 private:
  Fn fn_;
};

}  // namespace larder::util
