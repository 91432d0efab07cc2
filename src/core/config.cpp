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
    case EvictionPolicy::s3fifo:
      return "s3fifo";
  }
  return "unknown";
}

std::optional<EvictionPolicy> policy_from_string(std::string_view name) {
  for (const EvictionPolicy p : {EvictionPolicy::lru, EvictionPolicy::lfu, EvictionPolicy::fifo,
                                 EvictionPolicy::ttl, EvictionPolicy::s3fifo})
    if (name == to_string(p)) return p;
  return std::nullopt;
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
