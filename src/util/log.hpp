// Logging for larder internals: a sink from Config::log, or stderr when LARDER_LOG is set, or
// nothing. Thread-safety: a Logger is immutable after construction; log() may be called from any
// thread (the sink must tolerate that, stderr writes are single fwrite calls).
#pragma once

#include <fmt/format.h>

#include <functional>
#include <string_view>

#include "larder/larder.hpp"

namespace larder::util {

class Logger {
 public:
  using Sink = std::function<void(LogLevel, std::string_view)>;
  Logger() = default;
  // `sink` empty: stderr at the level named by LARDER_LOG, or silent when it is unset.
  explicit Logger(Sink sink);

  void log(LogLevel level, std::string_view message) const;
  template <class... Args>
  void logf(LogLevel level, fmt::format_string<Args...> format, Args&&... args) const {
    if (!sink_ || level < threshold_) return;
    log(level, fmt::format(format, std::forward<Args>(args)...));
  }

 private:
  Sink sink_;
  LogLevel threshold_ = LogLevel::debug;
};

}  // namespace larder::util
