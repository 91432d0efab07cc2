#include "core/isolated.hpp"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>

#include <random>

#include <fmt/format.h>

namespace larder::core {

namespace fs = std::filesystem;

namespace {

bool is_process_dir_name(const std::string& name) {
  if (!name.starts_with("proc_") || name.size() == 5) return false;
  return name.find_first_not_of("0123456789", 5) == std::string::npos;
}

// Seconds since `dir` (or its statistics file) last changed.
std::chrono::seconds age_of(const fs::path& dir) {
  std::time_t newest = 0;
  for (const fs::path& p : {dir, dir / ".cache_stats.json", dir / "db"}) {
    struct stat st {};
    if (::stat(p.c_str(), &st) == 0) newest = std::max(newest, st.st_mtime);
  }
  return std::chrono::seconds(std::max<std::time_t>(0, std::time(nullptr) - newest));
}

bool same_file(int fd, const fs::path& path) {
  struct stat a {
  }, b{};
  return ::fstat(fd, &a) == 0 && ::stat(path.c_str(), &b) == 0 && a.st_dev == b.st_dev &&
         a.st_ino == b.st_ino;
}

void remove_tree(const fs::path& p, const util::Logger* log) {
  std::error_code ec;
  fs::remove_all(p, ec);
  if (ec && log) log->logf(util::Level::warn, "could not remove {}: {}", p.string(), ec.message());
}

// Puts a liveness lock file into `dir` that is already locked when it appears: it is created
// and locked under a temporary name and linked into place (link never replaces). A lock file
// that appeared unlocked, even for a moment, would let another process adopt or collect a
// directory that is being set up. Returns false when a lock file is there already (or on error);
// the caller then takes that one.
bool create_locked(const fs::path& dir, util::LockFile* out) {
  const fs::path lock_path = dir / kAliveLockName;
  std::error_code ec;
  if (fs::exists(lock_path, ec) || ec) return false;
  static thread_local std::mt19937 rng{std::random_device{}()};
  const fs::path tmp = dir / fmt::format("{}.new-{:08x}", kAliveLockName, rng());
  util::LockFile fresh;
  const bool ready = fresh.open(tmp).ok() && util::held(fresh.try_lock());
  const bool linked = ready && ::link(tmp.c_str(), lock_path.c_str()) == 0;
  ::unlink(tmp.c_str());
  if (!linked || !same_file(fresh.fd(), lock_path)) return false;
  *out = std::move(fresh);
  return true;
}

}  // namespace

util::Status lock_process_dir(const fs::path& dir, std::chrono::milliseconds timeout,
                              util::LockFile* out) {
  for (int attempt = 0; attempt < 3; ++attempt) {
    std::error_code ec;
    fs::create_directory(dir, ec);  // again, if a collector just took it away
    ::chmod(dir.c_str(), 0700);
    if (create_locked(dir, out)) return {};
    const fs::path lock_path = dir / kAliveLockName;
    if (auto opened = out->open(lock_path); !opened) return opened;
    if (!out->lock_for(timeout))
      return util::fail("{} is in use by another process ({} held)", dir.string(), kAliveLockName);
    // A collector may have renamed the directory away between our open and our lock.
    if (same_file(out->fd(), lock_path)) return {};
    out->close();
  }
  return util::fail("{} keeps disappearing (removed by a collector?)", dir.string());
}

fs::path adopt_dead_process_dir(const fs::path& root, util::LockFile* out) {
  std::vector<std::pair<std::chrono::seconds, fs::path>> candidates;
  std::error_code ec;
  for (fs::directory_iterator it(root, ec), end; !ec && it != end; it.increment(ec)) {
    std::error_code type_ec;
    if (!is_process_dir_name(it->path().filename().string()) ||
        it->symlink_status(type_ec).type() != fs::file_type::directory)
      continue;
    candidates.emplace_back(age_of(it->path()), it->path());
  }
  std::sort(candidates.begin(), candidates.end());
  for (const auto& [age, dir] : candidates) {
    util::LockFile lock;
    const fs::path lock_path = dir / kAliveLockName;
    if (!lock.open(lock_path, util::Create::no) || !util::held(lock.try_lock()))
      continue;                                      // alive, or no lock
    if (!same_file(lock.fd(), lock_path)) continue;  // a collector renamed it away meanwhile
    ::utimensat(AT_FDCWD, dir.c_str(), nullptr, 0);  // in use again: not a collector's candidate
    *out = std::move(lock);
    return dir;
  }
  return {};
}

std::vector<fs::path> collect_dead_process_dirs(const fs::path& root, std::chrono::seconds min_age,
                                                Collect mode, const util::Logger* log) {
  const bool dry_run = mode == Collect::list_only;
  std::vector<fs::path> out;
  std::error_code ec;
  std::vector<fs::path> leftovers;
  for (fs::directory_iterator it(root, ec), end; !ec && it != end; it.increment(ec)) {
    const std::string name = it->path().filename().string();
    if (name.starts_with(".gc-proc_")) leftovers.push_back(it->path());  // an interrupted removal
    if (!is_process_dir_name(name) || !it->is_directory()) continue;
    const fs::path dir = it->path();
    const auto age = age_of(dir);
    if (age < min_age) continue;
    util::LockFile lock;
    if (lock.open(dir / kAliveLockName, util::Create::no)) {
      if (!util::held(lock.try_lock())) continue;  // alive
    } else if (age < std::max(min_age, kUnlockedGrace)) {
      continue;
    }
    out.push_back(dir);
    if (dry_run) continue;
    static std::mt19937 rng{std::random_device{}()};
    const fs::path doomed = root / fmt::format(".gc-{}-{:08x}", name, rng());
    fs::rename(dir, doomed, ec);
    if (ec) {
      if (log) log->logf(util::Level::warn, "could not remove {}: {}", dir.string(), ec.message());
      out.pop_back();
      ec.clear();
      continue;
    }
    remove_tree(doomed, log);
    if (log) log->logf(util::Level::info, "removed {} (its process is gone)", dir.string());
  }
  if (!dry_run)
    for (const fs::path& p : leftovers) remove_tree(p, log);
  return out;
}

}  // namespace larder::core
