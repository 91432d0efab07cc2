#include "core/log.hpp"

#include <cstdlib>

namespace larder::core {

static_assert(static_cast<int>(LogLevel::debug) == static_cast<int>(util::Level::debug) &&
              static_cast<int>(LogLevel::error) == static_cast<int>(util::Level::error));

util::Logger make_logger(const std::function<void(LogLevel, std::string_view)>& sink) {
  if (sink)
    return util::Logger([sink](util::Level level, std::string_view message) {
      sink(static_cast<LogLevel>(level), message);
    });
  const char* env = std::getenv("LARDER_LOG");
  if (env == nullptr || *env == '\0') return {};
  const std::string_view v(env);
  const util::Level threshold = v == "debug"  ? util::Level::debug
                                : v == "info" ? util::Level::info
                                : v == "warn" ? util::Level::warn
                                              : util::Level::error;
  return util::Logger::to_stderr("larder", threshold);
}

}  // namespace larder::core
