// The client's connections to the owner's socket: a small pool of idle connections, reused only
// while recent and not closed by the owner, and the check that the process at the other end runs
// as our user (a socket another user planted is never sent a request nor believed).
//
// Thread-safety: take() and give_back() may be called from many threads at once; set_socket()
// before any of them.
#pragma once

#include <chrono>
#include <cstdint>
#include <filesystem>
#include <mutex>
#include <vector>

#include "shared/socket.hpp"
#include "util/result.hpp"

namespace larder::shared {

// Why take() gave no connection.
enum class NoConnection : std::uint8_t {
  no_owner,     // nobody listens on the socket: the caller may run the owner election
  unreachable,  // the owner did not accept in time, or the socket cannot be used
  untrusted,    // the process serving the socket runs as another user (not root)
};

class ConnectionPool {
 public:
  ConnectionPool() = default;
  ~ConnectionPool();  // closes the idle connections
  ConnectionPool(const ConnectionPool&) = delete;
  ConnectionPool& operator=(const ConnectionPool&) = delete;

  // Where the owner listens, and the name to show for it in messages.
  void set_socket(std::filesystem::path path, std::filesystem::path shown);
  const std::filesystem::path& path() const { return path_; }
  const std::filesystem::path& shown() const { return shown_; }

  // A connection to the owner: an idle one, else a new one (waiting for the owner to accept at
  // most until `deadline`). Returns the descriptor, or why not (*why_not says which case).
  util::Result<int> take(Deadline deadline, NoConnection* why_not);
  // Returns a connection after a complete exchange, to be reused; closes it when the pool is
  // full. A connection in doubt (an exchange that failed half-way) is closed, not given back.
  void give_back(int fd);
  // Closes every idle connection.
  void close_all();

 private:
  struct Pooled {
    int fd = -1;
    std::chrono::steady_clock::time_point since;
  };
  std::filesystem::path path_, shown_;
  std::mutex mu_;
  std::vector<Pooled> idle_;
};

}  // namespace larder::shared
