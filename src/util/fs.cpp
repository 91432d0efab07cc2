#include "util/fs.hpp"

#include <fcntl.h>
#include <sys/stat.h>
#include <sys/vfs.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstring>
#include <ctime>
#include <fstream>
#include <sstream>
#include <system_error>
#include <vector>

#include <fmt/format.h>

namespace larder::util {

namespace fs = std::filesystem;

namespace {
std::string errno_text(int err) {
  return std::error_code(err, std::generic_category()).message();
}

bool write_all(int fd, std::string_view data) {
  while (!data.empty()) {
    const ssize_t n = ::write(fd, data.data(), data.size());
    if (n < 0) {
      if (errno == EINTR) continue;
      return false;
    }
    data.remove_prefix(static_cast<std::size_t>(n));
  }
  return true;
}
}  // namespace

Result<std::shared_ptr<const PinnedDir>> PinnedDir::open(const fs::path& dir) {
  const int fd = ::open(dir.c_str(), O_PATH | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
  if (fd < 0) return fail("cannot open {}: {}", dir.string(), errno_text(errno));
  std::shared_ptr<PinnedDir> p(new PinnedDir());
  p->fd_ = fd;
  p->dir_ = dir;
  // The magic link resolves to the open directory itself; check that it does here.
  const fs::path via = fmt::format("/proc/self/fd/{}", fd);
  struct stat a {
  }, b{};
  if (::fstat(fd, &a) == 0 && ::stat(via.c_str(), &b) == 0 && a.st_dev == b.st_dev &&
      a.st_ino == b.st_ino)
    p->path_ = via;
  else
    p->path_ = dir;
  return std::shared_ptr<const PinnedDir>(std::move(p));
}

PinnedDir::~PinnedDir() {
  if (fd_ >= 0) ::close(fd_);
}

Status atomic_write_file(const fs::path& path, std::string_view content, unsigned mode) {
  static std::atomic<unsigned> sequence{0};
  const fs::path tmp = path.string() + fmt::format(".tmp.{}.{}", ::getpid(), sequence.fetch_add(1));
  // O_EXCL | O_NOFOLLOW: never write through a file or symlink planted under the temporary name.
  int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
  if (fd < 0 && errno == EEXIST && ::unlink(tmp.c_str()) == 0)
    fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
  if (fd < 0) return fail("cannot create {}: {}", tmp.string(), errno_text(errno));
  // fchmod: the mode exactly, whatever the umask.
  if (!write_all(fd, content) || (mode != 0600 && ::fchmod(fd, mode) != 0) || ::fsync(fd) != 0) {
    const int err = errno;
    ::close(fd);
    ::unlink(tmp.c_str());
    return fail("cannot write {}: {}", tmp.string(), errno_text(err));
  }
  ::close(fd);
  if (::rename(tmp.c_str(), path.c_str()) != 0) {
    const int err = errno;
    ::unlink(tmp.c_str());
    return fail("cannot rename {} to {}: {}", tmp.string(), path.string(), errno_text(err));
  }
  const int dfd = ::open(path.parent_path().c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (dfd >= 0) {
    ::fsync(dfd);
    ::close(dfd);
  }
  return {};
}

Result<std::string> read_file(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return fail("cannot open {}: {}", path.string(), errno_text(errno));
  std::ostringstream buffer;
  buffer << in.rdbuf();
  if (in.bad()) return fail("cannot read {}", path.string());
  return std::move(buffer).str();
}

Result<int> open_cache_file(const fs::path& path, Create create) {
  const int fd = ::open(
      path.c_str(),
      O_RDWR | O_CLOEXEC | O_NOFOLLOW | O_NONBLOCK | (create == Create::if_missing ? O_CREAT : 0),
      0600);
  if (fd < 0)
    return fail("cannot open {}: {}", path.string(),
                errno == ELOOP ? "it is a symlink" : errno_text(errno));
  struct stat st {};
  if (::fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
    ::close(fd);
    return fail("cannot use {}: not a regular file", path.string());
  }
  const int flags = ::fcntl(fd, F_GETFL);
  if (flags >= 0) ::fcntl(fd, F_SETFL, flags & ~O_NONBLOCK);
  return fd;
}

Result<std::string> read_cache_file(const fs::path& path, std::size_t max_bytes) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NOFOLLOW | O_NONBLOCK);
  if (fd < 0)
    return fail("cannot open {}: {}", path.string(),
                errno == ELOOP ? "it is a symlink" : errno_text(errno));
  struct stat st {};
  if (::fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
    ::close(fd);
    return fail("cannot read {}: not a regular file", path.string());
  }
  if (static_cast<std::uint64_t>(st.st_size) > max_bytes) {
    ::close(fd);
    return fail("{} is {} bytes, more than the {} such a file may have", path.string(), st.st_size,
                max_bytes);
  }
  std::string out;
  char buffer[65536];
  for (;;) {
    const ssize_t n = ::read(fd, buffer, sizeof buffer);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) {
      const int err = errno;
      ::close(fd);
      return fail("cannot read {}: {}", path.string(), errno_text(err));
    }
    if (n == 0) break;
    if (out.size() + static_cast<std::size_t>(n) > max_bytes) {  // grew while being read
      ::close(fd);
      return fail("{} is larger than the {} bytes such a file may have", path.string(), max_bytes);
    }
    out.append(buffer, static_cast<std::size_t>(n));
  }
  ::close(fd);
  return out;
}

Status create_private_directories(const fs::path& dir, Symlinks symlinks) {
  const bool no_symlink = symlinks == Symlinks::refuse;
  std::error_code ec;
  if (no_symlink && fs::is_symlink(dir, ec))
    return fail("{} is a symlink; larder does not follow symlinks inside a cache", dir.string());
  if (fs::is_directory(dir, ec)) return {};
  if (!dir.has_parent_path() || dir.parent_path() == dir)
    return fail("cannot create {}", dir.string());
  if (auto made = create_private_directories(dir.parent_path()); !made) return made;
  if (::mkdir(dir.c_str(), 0700) != 0 && errno != EEXIST)
    return fail("cannot create directory {}: {}", dir.string(), errno_text(errno));
  if (no_symlink && fs::is_symlink(dir, ec))
    return fail("{} is a symlink; larder does not follow symlinks inside a cache", dir.string());
  if (!fs::is_directory(dir, ec)) return fail("{} exists and is not a directory", dir.string());
  return {};
}

namespace {

// Why the directory `d` lets another user replace `next` (its child on the way to a cache): owned
// by another user (not root), or writable by group or others unless sticky with `next` ours.
std::string unsafe_ancestor(const fs::path& d, const fs::path& next) {
  struct stat st {};
  if (::stat(d.c_str(), &st) != 0) return {};
  const uid_t me = ::geteuid();
  if (st.st_uid != me && st.st_uid != 0)
    return fmt::format(
        "{} (on the way to the cache) is owned by uid {}, who could replace what "
        "is inside it",
        d.string(), st.st_uid);
  if ((st.st_mode & (S_IWGRP | S_IWOTH)) == 0) return {};
  struct stat nt {};
  const bool next_ours = ::lstat(next.c_str(), &nt) == 0 && (nt.st_uid == me || nt.st_uid == 0) &&
                         !S_ISLNK(nt.st_mode);
  if ((st.st_mode & S_ISVTX) != 0 && next_ours) return {};
  return fmt::format("{} (on the way to the cache) is writable by group or others (mode {:o}){}",
                     d.string(), st.st_mode & 07777,
                     (st.st_mode & S_ISVTX) != 0 ? fmt::format(" and {} is not ours", next.string())
                                                 : std::string());
}

// Checks each directory on the way to `dir`, both as written and with symlinks resolved.
std::string unsafe_ancestors(const fs::path& dir) {
  std::error_code ec;
  const fs::path lexical = fs::absolute(dir, ec).lexically_normal();
  if (ec) return {};
  std::vector<fs::path> chains = {lexical};
  // The deepest existing directory, resolved: the chain a symlink on the way leads through.
  fs::path existing = lexical;
  while (!existing.empty() && !fs::exists(existing, ec) && existing.has_parent_path() &&
         existing.parent_path() != existing)
    existing = existing.parent_path();
  if (const fs::path real = fs::canonical(existing, ec); !ec && real != existing)
    chains.push_back(real);
  for (const fs::path& chain : chains) {
    fs::path at = chain.root_path();
    for (const auto& part : chain.relative_path()) {
      const fs::path next = at / part;
      if (auto why = unsafe_ancestor(at, next); !why.empty()) return why;
      at = next;
    }
  }
  return {};
}

}  // namespace

Status check_private_directory(const fs::path& dir) {
  if (auto why = unsafe_ancestors(dir); !why.empty()) return fail(std::move(why));
  struct stat st {};
  if (::stat(dir.c_str(), &st) != 0) return {};
  // Not a directory: not a question of safety; creating the cache there fails and degrades.
  if (!S_ISDIR(st.st_mode)) return {};
  if (st.st_uid != ::geteuid())
    return fail("{} is owned by uid {}, not by this user (uid {})", dir.string(), st.st_uid,
                ::geteuid());
  if ((st.st_mode & (S_IWGRP | S_IWOTH)) != 0)
    return fail("{} is writable by group or others (mode {:o})", dir.string(), st.st_mode & 07777);
  return {};
}

std::optional<std::string> network_filesystem(const fs::path& path) {
  struct statfs st {};
  if (::statfs(path.c_str(), &st) != 0) return std::nullopt;
  // Magic numbers from <linux/magic.h> (and fs/smb/client for the SMB ones).
  switch (static_cast<std::uint64_t>(static_cast<std::uint32_t>(st.f_type))) {
    case 0x6969:
      return "nfs";
    case 0x517B:
      return "smb";
    case 0xFF534D42:
      return "cifs";
    case 0xFE534D42:
      return "smb2";
    case 0x65735546:
      return "fuse";
    case 0x01021997:
      return "9p";
    case 0x00C36400:
      return "ceph";
    case 0x5346414F:
      return "afs";
    case 0x47504653:
      return "gpfs";
    case 0x0BD00BD0:
      return "lustre";
    default:
      return std::nullopt;
  }
}

Status write_cachedir_tag(const fs::path& dir) {
  const fs::path path = dir / kCacheDirTagName;
  const int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
  if (fd < 0) {
    if (errno == EEXIST) return {};  // there already (or something planted there: left alone)
    return fail("cannot create {}: {}", path.string(), errno_text(errno));
  }
  const std::string content = fmt::format(
      "{}\n# This file is a cache directory tag created by larder.\n"
      "# For information about cache directory tags, see:\n#\thttps://bford.org/cachedir/\n",
      kCacheDirTagSignature);
  const bool written = write_all(fd, content);
  const int err = errno;
  ::close(fd);
  if (!written) {
    ::unlink(path.c_str());
    return fail("cannot write {}: {}", path.string(), errno_text(err));
  }
  return {};
}

std::string compact_utc_timestamp(std::chrono::system_clock::time_point t) {
  const std::time_t secs = std::chrono::system_clock::to_time_t(t);
  std::tm tm{};
  ::gmtime_r(&secs, &tm);
  return fmt::format("{:04}{:02}{:02}T{:02}{:02}{:02}Z", tm.tm_year + 1900, tm.tm_mon + 1,
                     tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec);
}

std::string iso8601_utc(std::chrono::system_clock::time_point t) {
  const auto ms =
      std::chrono::duration_cast<std::chrono::milliseconds>(t.time_since_epoch()).count();
  const std::time_t secs = static_cast<std::time_t>(ms >= 0 ? ms / 1000 : (ms - 999) / 1000);
  const long millis = static_cast<long>(ms - static_cast<long long>(secs) * 1000);
  std::tm tm{};
  ::gmtime_r(&secs, &tm);
  return fmt::format("{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:03}Z", tm.tm_year + 1900, tm.tm_mon + 1,
                     tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec, millis);
}

fs::path move_aside(const fs::path& path, std::string_view infix,
                    std::chrono::system_clock::time_point now) {
  const std::string base = path.string() + std::string(infix) + compact_utc_timestamp(now);
  for (int i = 0; i < 1000; ++i) {
    fs::path target = i == 0 ? fs::path(base) : fs::path(fmt::format("{}.{}", base, i));
    std::error_code ec;
    if (fs::exists(target, ec)) continue;
    if (::rename(path.c_str(), target.c_str()) == 0) return target;
    return {};
  }
  return {};
}

}  // namespace larder::util
