#include "util/log.hpp"

#include <cstdio>
#include <string>

namespace larder::util {

const char* to_string(Level level) {
  switch (level) {
    case Level::debug:
      return "debug";
    case Level::info:
      return "info";
    case Level::warn:
      return "warn";
    case Level::error:
      return "error";
  }
  return "?";
}

Logger Logger::to_stderr(std::string_view prefix, Level threshold) {
  return Logger(
      [p = std::string(prefix)](Level level, std::string_view message) {
        const std::string line = fmt::format("{} [{}] {}\n", p, to_string(level), message);
        std::fwrite(line.data(), 1, line.size(), stderr);
      },
      threshold);
}

void Logger::log(Level level, std::string_view message) const {
  if (!sink_ || level < threshold_) return;
  try {
    sink_(level, message);
  } catch (...) {
    // A throwing log sink must not break the cache.
  }
}

}  // namespace larder::util
