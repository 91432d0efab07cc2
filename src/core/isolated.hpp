// The process_isolated directory lifecycle. Each <cache_root>/proc_<pid>/ holds a liveness lock
// (an flock on .alive.lock) for as long as a process uses it. A directory whose lock can be
// taken belongs to a process that is gone (flock locks die with their holder, even on SIGKILL);
// that, never a guess from pids, is what allows removing it.
//
// Thread-safety: functions are independent; concurrent collectors in several processes are safe
// (a directory is renamed away under its lock before it is deleted).
#pragma once

#include <chrono>
#include <cstdint>
#include <filesystem>
#include <string>
#include <vector>

#include "util/lock_file.hpp"
#include "util/log.hpp"

namespace larder::core {

inline constexpr const char* kAliveLockName = ".alive.lock";
// A directory without a liveness lock file is only taken for dead past this age (it may be
// being created, or come from a version without locks).
inline constexpr std::chrono::seconds kUnlockedGrace{60};

// Takes the liveness lock of `dir` (which exists), waiting up to `timeout`. Returns success (the
// lock is held by *out) or why not.
util::Status lock_process_dir(const std::filesystem::path& dir, std::chrono::milliseconds timeout,
                              util::LockFile* out);

// The proc_<pid> directory under `root` of a process that is gone, most recently used first,
// with its liveness lock now held by *out (so no collector removes it and no other process
// adopts it); empty when there is none. The directory keeps its name (the pid of the process
// that created it).
std::filesystem::path adopt_dead_process_dir(const std::filesystem::path& root,
                                             util::LockFile* out);

enum class Collect : std::uint8_t { remove, list_only };
// Removes (or with Collect::list_only only lists) the proc_<pid> directories under `root` whose
// process is gone and that were last modified at least `min_age` ago. Returns the directories
// concerned.
std::vector<std::filesystem::path> collect_dead_process_dirs(const std::filesystem::path& root,
                                                             std::chrono::seconds min_age,
                                                             Collect mode, const util::Logger* log);

}  // namespace larder::core
