// Time-to-live arithmetic shared by the store's and the remote's record formats: ttls are kept
// in milliseconds since format 2 of entries (format 3 of remote records); older records kept
// whole seconds.
// Thread-safety: pure functions.
#pragma once

#include <cstdint>
#include <limits>

namespace larder::util {

// `seconds` in milliseconds, saturating at the int64 limits.
constexpr std::int64_t seconds_to_ms(std::int64_t seconds) {
  constexpr std::int64_t kMax = std::numeric_limits<std::int64_t>::max() / 1000;
  if (seconds > kMax) return std::numeric_limits<std::int64_t>::max();
  if (seconds < -kMax) return std::numeric_limits<std::int64_t>::min();
  return seconds * 1000;
}

// `ms` in whole seconds, rounded up (what a reader that only knows seconds is given).
constexpr std::int64_t ms_to_seconds_up(std::int64_t ms) {
  return ms / 1000 + (ms % 1000 > 0 ? 1 : 0);
}

}  // namespace larder::util
