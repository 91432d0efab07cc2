// The cache's logger: Config::log when set, else stderr at the level LARDER_LOG names
// (debug|info|warn|error), else silent. Thread-safety: a pure function (reads the environment).
#pragma once

#include "larder/larder.hpp"
#include "util/log.hpp"

namespace larder::core {

util::Logger make_logger(const std::function<void(LogLevel, std::string_view)>& sink);

}  // namespace larder::core
