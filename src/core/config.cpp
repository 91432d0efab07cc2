#include "core/config.hpp"

#include <string>

#include <fmt/format.h>

namespace larder::core {

namespace fs = std::filesystem;

const char* to_string(Strategy s) {
  switch (s) {
    case Strategy::process_isolated:
      return "process_isolated";
    case Strategy::shared:
      return "shared";
    case Strategy::disabled:
      return "disabled";
  }
  return "unknown";
}

const char* to_string(EvictionPolicy p) {
  switch (p) {
    case EvictionPolicy::lru:
      return "lru";
    case EvictionPolicy::lfu:
      return "lfu";
    case EvictionPolicy::fifo:
      return "fifo";
    case EvictionPolicy::ttl:
      return "ttl";
  }
  return "unknown";
}

const char* to_string(EntryStatus s) {
  switch (s) {
    case EntryStatus::fresh:
      return "fresh";
    case EntryStatus::stale:
      return "stale";
    case EntryStatus::expired:
      return "expired";
    case EntryStatus::invalid:
      return "invalid";
  }
  return "unknown";
}

}  // namespace larder::core
