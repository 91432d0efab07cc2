#include "shared/client.hpp"

#include <poll.h>
#include <unistd.h>

#include <fmt/format.h>

namespace larder::shared {

namespace {
constexpr std::size_t kMaxIdleConnections = 16;
// A pooled connection older than this is not reused (the owner closes idle ones after
// kIdleTimeout; reusing one it is about to close could lose a request's reply).
constexpr auto kMaxPooledAge = std::chrono::seconds(10);
}  // namespace

ConnectionPool::~ConnectionPool() {
  close_all();
}

void ConnectionPool::set_socket(std::filesystem::path path, std::filesystem::path shown) {
  path_ = std::move(path);
  shown_ = std::move(shown);
}

util::Result<int> ConnectionPool::take(Deadline deadline, NoConnection* why_not) {
  for (;;) {
    Pooled p;
    {
      std::lock_guard lock(mu_);
      if (idle_.empty()) break;
      p = idle_.back();
      idle_.pop_back();
    }
    // Reuse only a recent connection the owner has not closed (readable while idle = EOF).
    pollfd pf{p.fd, POLLIN, 0};
    if (std::chrono::steady_clock::now() - p.since < kMaxPooledAge && ::poll(&pf, 1, 0) == 0)
      return p.fd;
    close_socket(p.fd);
  }
  bool refused = false;
  auto fd = connect_unix(path_, deadline, &refused);
  if (!fd) {
    *why_not = refused ? NoConnection::no_owner : NoConnection::unreachable;
    return fd;
  }
  const long uid = peer_uid(*fd);
  if (uid == static_cast<long>(::geteuid()) || uid == 0) return fd;
  close_socket(*fd);
  *why_not = NoConnection::untrusted;
  return util::fail("the process serving {} runs as uid {}, not as uid {}: not using it",
                    shown_.string(), uid, ::geteuid());
}

void ConnectionPool::give_back(int fd) {
  std::lock_guard lock(mu_);
  if (idle_.size() < kMaxIdleConnections)
    idle_.push_back({fd, std::chrono::steady_clock::now()});
  else
    close_socket(fd);
}

void ConnectionPool::close_all() {
  std::lock_guard lock(mu_);
  for (const Pooled& p : idle_) close_socket(p.fd);
  idle_.clear();
}

}  // namespace larder::shared
