#include "util/fs.hpp"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstring>
#include <ctime>
#include <fstream>
#include <sstream>
#include <system_error>

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

std::string atomic_write_file(const fs::path& path, std::string_view content) {
  static std::atomic<unsigned> sequence{0};
  const fs::path tmp = path.string() + fmt::format(".tmp.{}.{}", ::getpid(), sequence.fetch_add(1));
  const int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
  if (fd < 0) return fmt::format("cannot create {}: {}", tmp.string(), errno_text(errno));
  if (!write_all(fd, content) || ::fsync(fd) != 0) {
    const int err = errno;
    ::close(fd);
    ::unlink(tmp.c_str());
    return fmt::format("cannot write {}: {}", tmp.string(), errno_text(err));
  }
  ::close(fd);
  if (::rename(tmp.c_str(), path.c_str()) != 0) {
    const int err = errno;
    ::unlink(tmp.c_str());
    return fmt::format("cannot rename {} to {}: {}", tmp.string(), path.string(), errno_text(err));
  }
  const int dfd = ::open(path.parent_path().c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (dfd >= 0) {
    ::fsync(dfd);
    ::close(dfd);
  }
  return {};
}

bool read_file(const fs::path& path, std::string* content, std::string* error) {
  std::ifstream in(path, std::ios::binary);
  if (!in) {
    *error = fmt::format("cannot open {}: {}", path.string(), errno_text(errno));
    return false;
  }
  std::ostringstream buffer;
  buffer << in.rdbuf();
  if (in.bad()) {
    *error = fmt::format("cannot read {}", path.string());
    return false;
  }
  *content = std::move(buffer).str();
  return true;
}

std::string create_private_directories(const fs::path& dir) {
  std::error_code ec;
  if (fs::is_directory(dir, ec)) return {};
  if (!dir.has_parent_path() || dir.parent_path() == dir)
    return fmt::format("cannot create {}", dir.string());
  if (auto why = create_private_directories(dir.parent_path()); !why.empty()) return why;
  if (::mkdir(dir.c_str(), 0700) != 0 && errno != EEXIST)
    return fmt::format("cannot create directory {}: {}", dir.string(), errno_text(errno));
  if (!fs::is_directory(dir, ec))
    return fmt::format("{} exists and is not a directory", dir.string());
  return {};
}

std::string unsafe_directory_reason(const fs::path& dir) {
  struct stat st {};
  if (::stat(dir.c_str(), &st) != 0) return {};
  // Not a directory: not a question of safety; creating the cache there fails and degrades.
  if (!S_ISDIR(st.st_mode)) return {};
  if (st.st_uid != ::geteuid())
    return fmt::format("{} is owned by uid {}, not by this user (uid {})", dir.string(), st.st_uid,
                       ::geteuid());
  if ((st.st_mode & (S_IWGRP | S_IWOTH)) != 0)
    return fmt::format("{} is writable by group or others (mode {:o})", dir.string(),
                       st.st_mode & 07777);
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
