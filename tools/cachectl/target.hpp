// Finding and opening the cache cachectl works on, without creating anything where there is no
// cache.
//
// A shared cache is opened as a member of its group: when another process owns it, every call
// goes to that owner over its socket; otherwise cachectl owns it for the duration of the command.
// A process_isolated directory whose process is gone is opened normally (its liveness lock is
// taken); one whose process is alive is opened read-only (RocksDB's read-only mode, no lock, no
// writes), so cachectl can look but refuses to change it. Either way the store's own settings
// (policy, limits, default TTL, stale factor) are adopted, so opening changes nothing.
//
// Thread-safety: used from cachectl's main thread only.
#pragma once

#include <algorithm>
#include <cstdint>
#include <filesystem>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "core/config.hpp"
#include "core/service.hpp"
#include "larder/larder.hpp"

namespace cachectl {

namespace fs = std::filesystem;

inline constexpr int kExitOk = 0;
inline constexpr int kExitNotFound = 1;  // not found, refused, or problems found (verify)
inline constexpr int kExitUsage = 2;
inline constexpr int kExitNoCache = 3;  // not a larder cache, or it cannot be opened

// Thrown to end the command: main prints "cachectl: <message>" and exits with `code`.
struct Failure {
  int code;
  std::string message;
};

struct Globals {
  std::string root;
  std::string strategy;  // "", "shared" or "process_isolated"
  std::int64_t pid = 0;  // 0: not given
  bool json = false;
  bool no_color = false;
  bool quiet = false;
  int verbose = 0;
  std::int64_t timeout_ms = 10'000;
  std::string remote;  // --remote (default LARDER_REMOTE): the remote tier (Config::remote)
  std::string ns;      // --ns: the namespace (Cache::ns) commands work in; "": the unnamed one
};

struct ProcDir {
  std::int64_t pid = 0;
  fs::path dir;
  bool live = false;       // its liveness lock is held by a running process
  bool has_store = false;  // db/ exists
};

struct Location {
  fs::path root;
  larder::Strategy strategy = larder::Strategy::shared;
  std::vector<ProcDir> procs;     // process_isolated: every proc_<pid> directory
  std::optional<ProcDir> chosen;  // process_isolated: the one to open
};

// Works out which cache the options point at. With `need_one`, a process_isolated root must
// resolve to one directory (--pid, or the only one there). Throws Failure (3: no cache there,
// 2: ambiguous or contradictory options). Reads only.
Location locate(const Globals& g, bool need_one);

// The process_isolated directories under `root` with their live/dead state.
std::vector<ProcDir> list_proc_dirs(const fs::path& root);

struct Session {
  Location loc;
  fs::path dir;  // the store's directory
  std::shared_ptr<larder::core::Service> service;
  bool read_only = false;
  std::map<std::string, std::string> settings;  // AdminCommand::settings of whoever runs the store
  std::string scope;  // --ns's key prefix (core::ns_prefix), or "" for the unnamed namespace
  larder::core::Resolved resolved;  // what the service was opened with

  // A key of the namespace as stored, and a stored key as the namespace knows it.
  std::string key(std::string_view k) const { return larder::core::stored_key(scope, k); }
  std::string user_key(std::string_view stored) const {
    return std::string(larder::core::user_key(scope, stored));
  }

  // The pid of the process running the store (the owner, or cachectl itself).
  std::int64_t store_pid() const;
  // Throws Failure (3) naming why when the cache may not be changed from here.
  void require_writable(std::string_view what) const;
};

// Opens the located cache (see above). Throws Failure (3) when it cannot be opened. A
// `long_running` session (cachectl serve) runs the periodic cleanup while it owns the store;
// a command's does not.
Session open_session(const Globals& g, const Location& loc, bool long_running = false);

}  // namespace cachectl
