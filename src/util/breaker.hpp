// A circuit breaker with backoff, shared by the store (core::Backend: memory serves while a
// failing store is bypassed), the remote tier (remote::RedisTier: the local tier alone while
// Redis is unreachable) and the shared-cache client (shared::Node: fail fast after an owner did
// not answer in time).
//
// Closed, it lets calls through and counts consecutive failures; `threshold` of them open it.
// Open, it refuses calls until its retry time; then one caller may probe (refusing() is false
// again). A success closes it; a failure while open (a failed probe) opens it again for a wait
// that doubles each time, from `first_wait` up to `max_wait` (equal: a fixed wait). Times are
// nanoseconds on the caller's monotonic clock (util::MonotonicClock::now_ns).
//
// Thread-safety: every member may be called from any thread. The checks on the hot path
// (open(), a success while closed) are single atomic loads.
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <mutex>

namespace larder::util {

class Breaker {
 public:
  struct Settings {
    int threshold = 1;  // consecutive failures that open the breaker (>= 1)
    std::chrono::nanoseconds first_wait{0};
    std::chrono::nanoseconds max_wait{0};  // < first_wait: first_wait
  };
  explicit Breaker(Settings settings) : settings_(settings) {}

  // A failed call at `now_ns`. Returns true when this failure opened the breaker (it was closed),
  // false when it only counted, or re-armed an open breaker with a longer wait.
  bool failure(std::int64_t now_ns);
  // Opens the breaker at once (e.g. a store that could not be opened at all). Returns true when
  // it was closed.
  bool trip(std::int64_t now_ns);
  // A successful call: forgets the failures and closes the breaker. Returns true when it was open.
  bool success();
  // A successful call that must not close an open breaker (its owner closes it after its own
  // recovery steps): forgets the failures counted while closed.
  void clear_failures() {
    if (failures_.load(std::memory_order_relaxed) != 0)
      failures_.store(0, std::memory_order_relaxed);
  }

  // Lets the next call through as a probe although the retry time is not reached (an explicit
  // check, or a sign that the remote side is back).
  void probe_now() { retry_at_ns_.store(0, std::memory_order_release); }
  // True while the breaker is open (from the failure that opened it until a success), also past
  // its retry time.
  bool open() const { return open_.load(std::memory_order_acquire); }
  // True while calls are to be refused: open and the retry time not reached.
  bool refusing(std::int64_t now_ns) const {
    return open() && now_ns < retry_at_ns_.load(std::memory_order_acquire);
  }
  // The wait the breaker was last opened for (0 when it never was since the last success).
  std::chrono::nanoseconds wait() const;

 private:
  void arm_locked(std::int64_t now_ns);

  const Settings settings_;
  std::atomic<bool> open_{false};
  std::atomic<int> failures_{0};
  std::atomic<std::int64_t> retry_at_ns_{0};
  mutable std::mutex mu_;             // transitions
  std::chrono::nanoseconds wait_{0};  // under mu_
};

}  // namespace larder::util
