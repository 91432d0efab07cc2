#include "shared/socket.hpp"

#include <fcntl.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <sys/uio.h>

#include <cerrno>
#include <cstring>
#include <functional>
#include <thread>

#include <fmt/format.h>

#include "shared/protocol.hpp"
#include "util/fork.hpp"
#include "util/fs.hpp"

namespace larder::shared {

namespace fs = std::filesystem;

namespace {

constexpr std::size_t kMaxSocketPath = sizeof(sockaddr_un::sun_path) - 1;

bool fill_address(const fs::path& path, sockaddr_un* addr) {
  const std::string& p = path.native();
  if (p.size() > kMaxSocketPath) return false;
  std::memset(addr, 0, sizeof *addr);
  addr->sun_family = AF_UNIX;
  std::memcpy(addr->sun_path, p.data(), p.size());
  return true;
}

int new_socket() {
  const int fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
  if (fd >= 0) util::close_in_forked_child(fd);
  return fd;
}

// Waits for `events` on fd until the deadline. 1 ready, 0 timeout, -1 error.
int wait_for(int fd, short events, Deadline deadline) {
  for (;;) {
    int timeout_ms = -1;
    if (deadline != kNoDeadline) {
      const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
          deadline - std::chrono::steady_clock::now());
      if (left.count() <= 0) return 0;
      timeout_ms = static_cast<int>(std::min<std::int64_t>(left.count() + 1, 60'000));
    }
    pollfd p{fd, events, 0};
    const int n = ::poll(&p, 1, timeout_ms);
    if (n > 0) return 1;
    if (n < 0 && errno != EINTR) return -1;
    if (n == 0 && deadline != kNoDeadline && std::chrono::steady_clock::now() >= deadline) return 0;
  }
}

// Reads exactly n bytes. `closed` only when EOF comes before the first byte and allow_closed.
IoResult read_exact(int fd, char* out, std::size_t n, Deadline deadline, bool allow_closed) {
  std::size_t got = 0;
  while (got < n) {
    const ssize_t r = ::recv(fd, out + got, n - got, 0);
    if (r > 0) {
      got += static_cast<std::size_t>(r);
      continue;
    }
    if (r == 0) return got == 0 && allow_closed ? IoResult::closed : IoResult::error;
    if (errno == EINTR) continue;
    if (errno != EAGAIN && errno != EWOULDBLOCK)
      return errno == ECONNRESET && got == 0 && allow_closed ? IoResult::closed : IoResult::error;
    const int w = wait_for(fd, POLLIN, deadline);
    if (w == 0) return IoResult::timeout;
    if (w < 0) return IoResult::error;
  }
  return IoResult::ok;
}

// Writes the parts in order, as one stream of bytes (sendmsg gathers them: nothing is copied
// into one buffer first).
IoResult write_exact(int fd, std::initializer_list<std::string_view> parts, Deadline deadline) {
  constexpr std::size_t kMaxParts = 4;
  iovec iov[kMaxParts];
  std::size_t count = 0;
  for (std::string_view p : parts)
    if (!p.empty() && count < kMaxParts)
      iov[count++] = iovec{const_cast<char*>(p.data()), p.size()};
  std::size_t first = 0;
  while (first < count) {
    msghdr m{};
    m.msg_iov = iov + first;
    m.msg_iovlen = count - first;
    const ssize_t r = ::sendmsg(fd, &m, MSG_NOSIGNAL);
    if (r >= 0) {
      auto done = static_cast<std::size_t>(r);
      while (first < count && done >= iov[first].iov_len) done -= iov[first++].iov_len;
      if (first < count) {
        iov[first].iov_base = static_cast<char*>(iov[first].iov_base) + done;
        iov[first].iov_len -= done;
      }
      continue;
    }
    if (errno == EINTR) continue;
    if (errno != EAGAIN && errno != EWOULDBLOCK) return IoResult::error;
    const int w = wait_for(fd, POLLOUT, deadline);
    if (w == 0) return IoResult::timeout;
    if (w < 0) return IoResult::error;
  }
  return IoResult::ok;
}

}  // namespace

util::Result<fs::path> socket_path(const fs::path& root, const fs::path& io_root) {
  // Every process must arrive at the same socket: which kind of path is chosen depends only on
  // the length of `root`'s own name.
  if ((root / ".larder.sock").native().size() <= kMaxSocketPath &&
      (io_root / ".larder.sock").native().size() <= kMaxSocketPath)
    return io_root / ".larder.sock";
  fs::path dir;
  if (const char* run = std::getenv("XDG_RUNTIME_DIR"); run != nullptr && *run == '/')
    dir = fs::path(run) / "larder";
  else
    dir = fs::path("/tmp") / fmt::format("larder-{}", ::geteuid());
  if (auto made = util::create_private_directories(dir); !made) return util::fail(made.error());
  if (auto safe = util::check_private_directory(dir); !safe)
    return util::fail("socket directory: {}", safe.error());
  const std::size_t h = std::hash<std::string>{}(root.native());
  fs::path p = dir / fmt::format("{:016x}.sock", h);
  if (p.native().size() > kMaxSocketPath) {
    return util::fail("no socket path short enough for {}", root.string());
  }
  return p;
}

util::Result<int> listen_unix(const fs::path& path) {
  sockaddr_un addr{};
  if (!fill_address(path, &addr)) {
    return util::fail("socket path too long: {}", path.string());
  }
  const int fd = new_socket();
  if (fd < 0) {
    return util::fail("socket: {}", std::strerror(errno));
  }
  ::unlink(path.c_str());  // a stale socket of an owner that is gone (we hold the owner lock)
  if (::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0 ||
      ::chmod(path.c_str(), 0600) != 0 || ::listen(fd, 128) != 0) {
    const int err = errno;
    close_socket(fd);
    return util::fail("cannot listen on {}: {}", path.string(), std::strerror(err));
  }
  return fd;
}

util::Result<int> connect_unix(const fs::path& path, Deadline deadline, bool* refused) {
  *refused = false;
  sockaddr_un addr{};
  if (!fill_address(path, &addr)) {
    return util::fail("socket path too long: {}", path.string());
  }
  for (auto pause = std::chrono::microseconds(100);; pause *= 2) {
    const int fd = new_socket();
    if (fd < 0) {
      return util::fail("socket: {}", std::strerror(errno));
    }
    if (::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0) return fd;
    const int err = errno;
    close_socket(fd);
    if (err == ENOENT || err == ECONNREFUSED) {
      *refused = true;
      return util::fail("no owner listening on {}", path.string());
    }
    // EAGAIN: the owner's backlog is full (it is busy or stopped); retry until the deadline.
    if ((err != EAGAIN && err != EINTR) || std::chrono::steady_clock::now() >= deadline) {
      return util::fail("cannot connect to {}: {}", path.string(), std::strerror(err));
    }
    std::this_thread::sleep_for(std::min(pause, std::chrono::microseconds(10'000)));
  }
}

long peer_uid(int fd) {
  ucred cred{};
  socklen_t len = sizeof cred;
  if (::getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &len) != 0) return -1;
  return static_cast<long>(cred.uid);
}

void close_socket(int fd) {
  if (fd < 0) return;
  util::forget_in_forked_child(fd);
  ::close(fd);
}

const char* to_string(IoResult r) {
  switch (r) {
    case IoResult::ok:
      return "ok";
    case IoResult::closed:
      return "connection closed";
    case IoResult::timeout:
      return "timed out";
    case IoResult::too_large:
      return "frame too large";
    case IoResult::error:
      return "connection broken";
  }
  return "unknown";
}

IoResult send_frame(int fd, std::string_view payload, Deadline deadline) {
  if (payload.size() > kMaxFrameBytes) return IoResult::too_large;
  std::string header;
  put_frame_length(&header, static_cast<std::uint32_t>(payload.size()));
  return write_exact(fd, {header, payload}, deadline);
}

IoResult recv_frame(int fd, std::string* payload, Deadline deadline) {
  char len[kFrameHeaderBytes];
  const IoResult r = read_exact(fd, len, kFrameHeaderBytes, deadline, true);
  if (r != IoResult::ok) return r;
  const std::uint32_t n = frame_length(len);
  if (n > kMaxFrameBytes) return IoResult::too_large;
  // The declared length is only a claim: grow the buffer as bytes arrive (at most doubling what
  // was received), so a peer pins no more memory than it actually sent.
  payload->clear();
  std::size_t got = 0;
  while (got < n) {
    // At most doubling the buffer each time, or tripling it when that brings the whole rest
    // (so the last bytes of a frame do not cost one more copy of all before them).
    const std::size_t step = std::max<std::size_t>(got, 64 * 1024);
    const std::size_t chunk = n - got <= 2 * step ? n - got : step;
    payload->resize(got + chunk);
    const IoResult part = read_exact(fd, payload->data() + got, chunk, deadline, false);
    if (part != IoResult::ok) return part;
    got += chunk;
  }
  return IoResult::ok;
}

}  // namespace larder::shared
