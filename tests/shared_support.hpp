// Helpers for tests that talk to a shared cache's owner directly: its pid, raw connections and
// frames that bypass larder's client.
#pragma once

#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <string>

#include "larder/larder.hpp"
#include "support.hpp"

namespace larder::test {

// A shared cache at `root` with no limits and no periodic cleanup.
inline Config shared_config(const std::filesystem::path& root) {
  Config cfg;
  cfg.cache_root = root;
  cfg.strategy = Strategy::shared;
  cfg.max_entries = 0;
  cfg.max_size_bytes = 0;
  cfg.cleanup_interval = std::chrono::seconds(0);
  return cfg;
}

// The pid the owner lock names, or -1.
inline long owner_pid(const std::filesystem::path& root) {
  std::ifstream in(root / ".larder.lock");
  std::string line;
  while (std::getline(in, line))
    if (line.starts_with("pid=")) return std::stol(line.substr(4));
  return -1;
}

// Connects to the owner's socket directly, bypassing larder. -1 on failure.
inline int raw_connect(const std::filesystem::path& socket) {
  const int fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  std::snprintf(addr.sun_path, sizeof addr.sun_path, "%s", socket.c_str());
  if (::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0) {
    ::close(fd);
    return -1;
  }
  timeval tv{5, 0};
  ::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  return fd;
}

inline std::string frame(const std::string& payload) {
  std::string f(4, '\0');
  const auto n = static_cast<std::uint32_t>(payload.size());
  for (int i = 0; i < 4; ++i) f[static_cast<std::size_t>(i)] = static_cast<char>(n >> (8 * i));
  return f + payload;
}

// Sends bytes and reports what comes back: the number of bytes read before the owner closed the
// connection (0: closed, or reset, without a reply), or -1 when the wait timed out.
inline long send_and_read(int fd, const std::string& bytes) {
  if (::send(fd, bytes.data(), bytes.size(), MSG_NOSIGNAL) != static_cast<ssize_t>(bytes.size()))
    return errno == EPIPE || errno == ECONNRESET ? 0 : -2;
  long total = 0;
  char buffer[4096];
  for (;;) {
    const ssize_t n = ::recv(fd, buffer, sizeof buffer, 0);
    if (n == 0) return total;
    if (n < 0) return total > 0 ? total : errno == ECONNRESET ? 0 : -1;
    total += n;
    if (total >= 4) return total;  // a reply arrived
  }
}

}  // namespace larder::test
