// A public Config resolved for the layers below the api (api/config.hpp validates and resolves
// it): the absolute root, the cache's directory held open, and the options larder's own tools
// set. Also the names of the public enums, for messages and outputs.
// Thread-safety: values and pure functions.
#pragma once

#include <filesystem>
#include <memory>
#include <optional>
#include <string_view>

#include "larder/larder.hpp"
#include "remote/url.hpp"
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
  // Damage found while opening the store (totals that disagree with the access records, access
  // records that do not decode, a store of an older format) is repaired at once (true: what a
  // program using its cache wants); false only reports it, through verify (what cachectl wants).
  // A read-only open never repairs.
  bool repair_on_open = true;
  // Config::remote parsed (api::resolve); none without a remote or for a read-only view.
  std::optional<remote::RemoteUrl> remote;
};

const char* to_string(Strategy s);
const char* to_string(EvictionPolicy p);
// The policy named `name` (as to_string spells it); nullopt for an unknown name.
std::optional<EvictionPolicy> policy_from_string(std::string_view name);
// Every policy name, for messages: "lru, lfu, fifo, ttl or s3fifo".
inline constexpr const char* kPolicyNames = "lru, lfu, fifo, ttl or s3fifo";
const char* to_string(EntryStatus s);

}  // namespace larder::core
