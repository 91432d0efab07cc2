// Validation and resolution of a public Config: checks every field (throwing ConfigError naming
// it), works out the per-user default root and the directory the cache lives in.
// Thread-safety: pure functions (they read the environment).
#pragma once

#include <filesystem>
#include <memory>

#include "larder/larder.hpp"
#include "util/fs.hpp"

namespace larder::core {

struct Resolved {
  Config config;
  std::filesystem::path root;  // absolute
  std::filesystem::path dir;   // store + statistics; empty for the disabled strategy
  // `dir` held open once its safety was checked (Backend::open and the shared node set it).
  // Every file of the cache is reached through io(), so a directory renamed or replaced after
  // that is never followed; messages name `dir`.
  std::shared_ptr<const util::PinnedDir> pinned;
  const std::filesystem::path& io() const { return pinned ? pinned->path() : dir; }

  // For larder's own tools (cachectl); Cache::open leaves them alone.
  // Run with the policy, limits, default TTL and stale factor the store records (config has
  // them after Backend::open) instead of imposing config's: opening changes nothing.
  bool adopt_stored_settings = false;
  // Inspect a store another process has open: the directory and store must exist; no locks,
  // counter files, housekeeping or writes (writes fail).
  bool read_only = false;
  // process_isolated: remove directories of dead processes on open (kCollectOnOpenAge).
  bool collect_dead_dirs = true;
  // process_isolated: take over the directory of a process that is gone (most recent first)
  // instead of starting an empty proc_<pid> (false: use `dir` exactly, as cachectl does).
  bool adopt_dead_dir = true;
  // A store that does not open because its files are damaged is moved aside and started empty
  // (true: what a program using its cache wants); false leaves it where it is and degrades
  // (what an inspection tool wants: report it, keep the evidence).
  bool move_corrupt_aside = true;
};

// $XDG_CACHE_HOME/larder, else $HOME/.cache/larder, else the passwd home's .cache/larder.
std::filesystem::path default_root();
// Throws ConfigError naming the first invalid field.
void validate(const Config& config);
// validate() and work out root and dir (no filesystem changes).
Resolved resolve(const Config& config);

const char* to_string(Strategy s);
const char* to_string(EvictionPolicy p);
const char* to_string(EntryStatus s);

}  // namespace larder::core
