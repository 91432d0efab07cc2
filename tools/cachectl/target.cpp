#include "target.hpp"

#include <unistd.h>

#include <algorithm>
#include <cstdio>

#include <fmt/format.h>

#include "api/access.hpp"
#include "api/config.hpp"
#include "core/config.hpp"
#include "core/isolated.hpp"
#include "util/lock_file.hpp"

namespace cachectl {

namespace {

bool is_dir(const fs::path& p) {
  std::error_code ec;
  return fs::is_directory(p, ec);
}

std::string pids_of(const std::vector<ProcDir>& procs) {
  std::string out;
  for (const auto& p : procs) out += fmt::format("{}{}", out.empty() ? "" : ", ", p.pid);
  return out;
}

}  // namespace

std::vector<ProcDir> list_proc_dirs(const fs::path& root) {
  std::vector<ProcDir> out;
  std::error_code ec;
  for (fs::directory_iterator it(root, ec), end; !ec && it != end; it.increment(ec)) {
    const std::string name = it->path().filename().string();
    if (!name.starts_with("proc_") || name.size() == 5 || !is_dir(it->path())) continue;
    if (!std::all_of(name.begin() + 5, name.end(), [](char c) { return c >= '0' && c <= '9'; }))
      continue;
    ProcDir p;
    p.pid = std::stoll(name.substr(5));
    p.dir = it->path();
    p.has_store = is_dir(p.dir / "db");
    // Live when another open file holds the liveness lock (never guessed from the pid).
    larder::util::LockFile lock;
    if (lock.open(p.dir / larder::core::kAliveLockName, larder::util::Create::no)) {
      p.live = !larder::util::held(lock.try_lock(larder::util::LockMode::exclusive));
      if (!p.live) lock.unlock();
    }
    out.push_back(std::move(p));
  }
  std::sort(out.begin(), out.end(),
            [](const ProcDir& a, const ProcDir& b) { return a.pid < b.pid; });
  return out;
}

Location locate(const Globals& g, bool need_one) {
  Location loc;
  loc.root = g.root.empty() ? larder::api::default_root() : fs::path(g.root);
  std::error_code ec;
  loc.root = fs::absolute(loc.root, ec);
  if (!fs::exists(loc.root, ec))
    throw Failure{kExitNoCache, fmt::format("no larder cache at {}: the directory does not exist",
                                            loc.root.string())};
  if (!is_dir(loc.root))
    throw Failure{kExitNoCache,
                  fmt::format("{} is not a larder cache: not a directory", loc.root.string())};
  const bool shared = is_dir(loc.root / "db");
  loc.procs = list_proc_dirs(loc.root);
  const bool isolated = !loc.procs.empty();

  if (g.strategy == "shared") {
    if (!shared)
      throw Failure{
          kExitNoCache,
          fmt::format("{} holds no shared larder cache (no db/ directory){}", loc.root.string(),
                      isolated ? "; it holds process_isolated caches" : "")};
    loc.strategy = larder::Strategy::shared;
  } else if (g.strategy == "process_isolated") {
    if (!isolated)
      throw Failure{kExitNoCache,
                    fmt::format("{} holds no process_isolated larder cache (no proc_<pid>/ "
                                "directories){}",
                                loc.root.string(), shared ? "; it holds a shared cache" : "")};
    loc.strategy = larder::Strategy::process_isolated;
  } else if (shared) {
    loc.strategy = larder::Strategy::shared;
  } else if (isolated) {
    loc.strategy = larder::Strategy::process_isolated;
  } else {
    throw Failure{kExitNoCache,
                  fmt::format("{} is not a larder cache (no db/ store and no proc_<pid>/ "
                              "directories)",
                              loc.root.string())};
  }
  if (g.pid != 0 && loc.strategy == larder::Strategy::shared)
    throw Failure{kExitUsage, "--pid selects a process_isolated cache; this one is shared"};

  if (loc.strategy == larder::Strategy::process_isolated) {
    if (g.pid != 0) {
      auto it = std::find_if(loc.procs.begin(), loc.procs.end(),
                             [&](const ProcDir& p) { return p.pid == g.pid; });
      if (it == loc.procs.end())
        throw Failure{kExitNoCache, fmt::format("{} has no proc_{} directory (it has pids: {})",
                                                loc.root.string(), g.pid, pids_of(loc.procs))};
      loc.chosen = *it;
    } else if (loc.procs.size() == 1) {
      loc.chosen = loc.procs.front();
    } else if (need_one) {
      throw Failure{kExitUsage,
                    fmt::format("{} holds {} process_isolated caches (pids {}); choose one with "
                                "--pid",
                                loc.root.string(), loc.procs.size(), pids_of(loc.procs))};
    }
    if (loc.chosen && !loc.chosen->has_store && need_one)
      throw Failure{kExitNoCache,
                    fmt::format("{} holds no store (no db/ directory)", loc.chosen->dir.string())};
  }
  return loc;
}

std::int64_t Session::store_pid() const {
  auto it = settings.find("pid");
  return it == settings.end() ? 0 : std::stoll(it->second);
}

void Session::require_writable(std::string_view what) const {
  if (!read_only) return;
  throw Failure{kExitNoCache,
                fmt::format("cannot {}: {} is in use by process {}; a process_isolated cache can "
                            "only be inspected while its process runs",
                            what, dir.string(), loc.chosen ? loc.chosen->pid : 0)};
}

Session open_session(const Globals& g, const Location& loc, bool long_running) {
  Session s;
  s.loc = loc;
  larder::Config c;
  c.cache_root = loc.root;
  c.strategy = loc.strategy;
  c.lock_timeout = std::chrono::milliseconds(g.timeout_ms);
  if (!long_running) c.cleanup_interval = std::chrono::seconds(0);  // a command runs none
  c.remote = g.remote;
  // The store's recorded limits are adopted (below); a store from before limits were recorded
  // gets none rather than cachectl's defaults, so a command never evicts on its own account.
  c.max_entries = 0;
  c.max_size_bytes = 0;
  if (g.verbose > 0) {
    const auto level = g.verbose > 1 ? larder::LogLevel::debug : larder::LogLevel::info;
    c.log = [level](larder::LogLevel l, std::string_view line) {
      if (l >= level)
        std::fprintf(stderr, "cachectl: larder: %.*s\n", static_cast<int>(line.size()),
                     line.data());
    };
  }  // else: larder's own lines only with LARDER_LOG; cachectl's error line says what failed
  larder::core::Resolved r;
  try {
    r = larder::api::resolve(c);
  } catch (const larder::ConfigError& e) {
    throw Failure{kExitNoCache, e.what()};
  }
  r.adopt_stored_settings = true;
  r.collect_dead_dirs = false;
  r.adopt_dead_dir = false;      // the directory chosen (--pid), not another
  r.move_corrupt_aside = false;  // report a damaged store; the next program opening it moves it
  r.repair_on_open = false;      // and what opening would repair: verify reports it
  if (loc.strategy == larder::Strategy::process_isolated) {
    r.dir = loc.chosen->dir;
    s.read_only = r.read_only = loc.chosen->live;
  }
  s.dir = r.dir;
  s.resolved = r;
  if (!g.ns.empty()) {
    if (g.ns.size() > larder::kMaxNamespaceBytes || g.ns.find('\0') != std::string::npos)
      throw Failure{kExitUsage, fmt::format("--ns: a namespace name is 1 to {} bytes without NUL",
                                            larder::kMaxNamespaceBytes)};
    s.scope = larder::core::ns_prefix(g.ns);
  }
  try {
    s.service = larder::api::open_service(r);
  } catch (const larder::ConfigError& e) {
    throw Failure{kExitNoCache, e.what()};
  }
  if (s.service->degraded())
    throw Failure{kExitNoCache, fmt::format("cannot open the cache in {}: {}", s.dir.string(),
                                            s.service->last_error())};
  larder::core::AdminResult settings = s.service->admin(larder::core::AdminCommand::settings, 0);
  if (!settings.ok)
    throw Failure{kExitNoCache,
                  fmt::format("cannot reach the cache in {}: {}", s.dir.string(), settings.error)};
  s.settings = std::move(settings.fields);
  return s;
}

}  // namespace cachectl
