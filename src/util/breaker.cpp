// util::Breaker (breaker.hpp).
#include "util/breaker.hpp"

#include <algorithm>

namespace larder::util {

void Breaker::arm_locked(std::int64_t now_ns) {
  const auto max_wait = std::max(settings_.max_wait, settings_.first_wait);
  wait_ = wait_.count() == 0 ? settings_.first_wait : std::min(wait_ * 2, max_wait);
  retry_at_ns_.store(now_ns + wait_.count(), std::memory_order_release);
}

bool Breaker::failure(std::int64_t now_ns) {
  std::lock_guard lock(mu_);
  if (open_.load(std::memory_order_relaxed)) {
    arm_locked(now_ns);  // a failed probe
    return false;
  }
  if (failures_.fetch_add(1, std::memory_order_relaxed) + 1 < std::max(settings_.threshold, 1))
    return false;
  arm_locked(now_ns);
  open_.store(true, std::memory_order_release);
  return true;
}

bool Breaker::trip(std::int64_t now_ns) {
  std::lock_guard lock(mu_);
  const bool was_open = open_.load(std::memory_order_relaxed);
  arm_locked(now_ns);
  open_.store(true, std::memory_order_release);
  return !was_open;
}

bool Breaker::success() {
  // The hot path: closed with no failure counted.
  if (!open_.load(std::memory_order_acquire) && failures_.load(std::memory_order_relaxed) == 0)
    return false;
  std::lock_guard lock(mu_);
  failures_.store(0, std::memory_order_relaxed);
  wait_ = std::chrono::nanoseconds(0);
  retry_at_ns_.store(0, std::memory_order_release);
  return open_.exchange(false, std::memory_order_acq_rel);
}

std::chrono::nanoseconds Breaker::wait() const {
  std::lock_guard lock(mu_);
  return wait_;
}

}  // namespace larder::util
