// Logging for larder internals: a Logger sends lines at or above its threshold to a sink, or
// nowhere when it has none. Generic: the cache's own rules (Config::log, LARDER_LOG) live in
// core/log.hpp. Thread-safety: a Logger is immutable after construction; log() may be called
// from any thread (the sink must tolerate that).
#pragma once

#include <fmt/format.h>

#include <cstdint>
#include <functional>
#include <string_view>

namespace larder::util {

enum class Level : std::uint8_t { debug = 0, info = 1, warn = 2, error = 3 };

// "debug", "info", "warn", "error".
const char* to_string(Level level);

class Logger {
 public:
  using Sink = std::function<void(Level, std::string_view)>;
  Logger() = default;  // silent
  explicit Logger(Sink sink, Level threshold = Level::debug)
      : sink_(std::move(sink)), threshold_(threshold) {}
  // Lines "<prefix> [level] message" on stderr, each one fwrite call.
  static Logger to_stderr(std::string_view prefix, Level threshold);

  // A sink that throws is ignored (logging must not break its caller).
  void log(Level level, std::string_view message) const;
  template <class... Args>
  void logf(Level level, fmt::format_string<Args...> format, Args&&... args) const {
    if (!sink_ || level < threshold_) return;
    log(level, fmt::format(format, std::forward<Args>(args)...));
  }

 private:
  Sink sink_;
  Level threshold_ = Level::debug;
};

}  // namespace larder::util
