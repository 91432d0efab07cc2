#include "util/lock_file.hpp"

#include <fcntl.h>
#include <sys/file.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <thread>
#include <utility>

#include <fmt/format.h>

#include "util/fork.hpp"
#include "util/fs.hpp"

namespace larder::util {

LockFile::~LockFile() {
  close();
}

LockFile::LockFile(LockFile&& other) noexcept
    : fd_(std::exchange(other.fd_, -1)),
      locked_(std::exchange(other.locked_, false)),
      path_(std::move(other.path_)) {}

LockFile& LockFile::operator=(LockFile&& other) noexcept {
  if (this != &other) {
    close();
    fd_ = std::exchange(other.fd_, -1);
    locked_ = std::exchange(other.locked_, false);
    path_ = std::move(other.path_);
  }
  return *this;
}

Status LockFile::open(const std::filesystem::path& path, Create create) {
  close();
  path_ = path;
  auto fd = open_cache_file(path, create);  // no symlinks, FIFOs or directories
  if (!fd) return fd.status();
  fd_ = *fd;
  close_in_forked_child(fd_);
  return {};
}

Result<bool> LockFile::try_lock(LockMode mode) {
  if (fd_ < 0) return fail("cannot lock {}: not open", path_.string());
  for (;;) {
    if (::flock(fd_, (mode == LockMode::exclusive ? LOCK_EX : LOCK_SH) | LOCK_NB) == 0) {
      locked_ = true;
      return true;
    }
    if (errno == EINTR) continue;
    if (errno == EWOULDBLOCK) return false;
    return fail("cannot lock {}: {}", path_.string(), std::strerror(errno));
  }
}

bool LockFile::lock_for(std::chrono::milliseconds timeout, LockMode mode) {
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  auto pause = std::chrono::microseconds(200);
  for (;;) {
    if (held(try_lock(mode))) return true;
    if (std::chrono::steady_clock::now() >= deadline) return false;
    std::this_thread::sleep_for(pause);
    pause = std::min(pause * 2, std::chrono::microseconds(5000));
  }
}

void LockFile::unlock() {
  if (fd_ >= 0 && locked_) ::flock(fd_, LOCK_UN);
  locked_ = false;
}

Status LockFile::write_content(std::string_view content) {
  if (fd_ < 0) return fail("cannot write {}: not open", path_.string());
  if (::ftruncate(fd_, 0) != 0 ||
      ::pwrite(fd_, content.data(), content.size(), 0) != static_cast<ssize_t>(content.size()))
    return fail("cannot write {}: {}", path_.string(), std::strerror(errno));
  return {};
}

std::string LockFile::read_content() const {
  if (fd_ < 0) return {};
  char buffer[4096];
  const ssize_t n = ::pread(fd_, buffer, sizeof buffer, 0);
  return n > 0 ? std::string(buffer, static_cast<std::size_t>(n)) : std::string();
}

void LockFile::close() {
  if (fd_ < 0) return;
  forget_in_forked_child(fd_);
  ::close(fd_);  // releases the lock
  fd_ = -1;
  locked_ = false;
}

}  // namespace larder::util
