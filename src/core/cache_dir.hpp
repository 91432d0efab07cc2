// A cache's directory as one process uses it, the steps the store (core::Backend) and the
// shared-cache node (shared::Node) both take: the root checked, the directory created private,
// checked and pinned (reached through a descriptor from then on: Resolved::io()), and this
// process's counter file in it.
//
// Thread-safety: functions of the opening thread, before the Resolved is shared.
#pragma once

#include <memory>

#include "core/config.hpp"
#include "stats/counter_file.hpp"
#include "stats/counters.hpp"
#include "util/fs.hpp"
#include "util/log.hpp"
#include "util/result.hpp"

namespace larder::core {

struct CacheDir {
  // Throws ConfigError when `r.root` exists and is not a private directory of this user (the
  // cache refuses loudly rather than share with other users).
  static void check_root(const Resolved& r);
  // Creates `r.dir` (mode 0700, missing parents too; `symlinks` as
  // util::create_private_directories), checks it, and pins it in `r.pinned` unless it is pinned
  // already. ok, or why the directory cannot be used (the caller degrades to memory). Throws
  // ConfigError when the directory is not private (another user's, or open to others).
  static util::Status open(Resolved& r, util::Symlinks symlinks = util::Symlinks::allow);
  // This process's counter file in the directory, or null when statistics are off or the file
  // cannot be created (logged, and counted as an error in `local`: counters stay in memory).
  static std::unique_ptr<stats::CounterFile> counter_file(const Resolved& r,
                                                          const util::Logger& log,
                                                          stats::Counters& local);
};

}  // namespace larder::core
