#include "util/log.hpp"

#include <cstdio>
#include <cstdlib>
#include <string>

namespace larder::util {

namespace {
const char* level_name(LogLevel level) {
  switch (level) {
    case LogLevel::debug:
      return "debug";
    case LogLevel::info:
      return "info";
    case LogLevel::warn:
      return "warn";
    case LogLevel::error:
      return "error";
  }
  return "?";
}
}  // namespace

Logger::Logger(Sink sink) {
  if (sink) {
    sink_ = std::move(sink);
    return;
  }
  const char* env = std::getenv("LARDER_LOG");
  if (env == nullptr || *env == '\0') return;
  const std::string_view v(env);
  if (v == "debug")
    threshold_ = LogLevel::debug;
  else if (v == "info")
    threshold_ = LogLevel::info;
  else if (v == "warn")
    threshold_ = LogLevel::warn;
  else
    threshold_ = LogLevel::error;
  sink_ = [](LogLevel level, std::string_view message) {
    const std::string line = fmt::format("larder [{}] {}\n", level_name(level), message);
    std::fwrite(line.data(), 1, line.size(), stderr);
  };
}

void Logger::log(LogLevel level, std::string_view message) const {
  if (!sink_ || level < threshold_) return;
  try {
    sink_(level, message);
  } catch (...) {
    // A throwing log sink must not break the cache.
  }
}

}  // namespace larder::util
