// The HTTP transport of `cachectl serve`: cpp-httplib's Server (it parses requests and writes
// responses), with its connection loop replaced so that what a peer can hold is bounded:
//   - connections served at once (one thread each, from a pool that grows on demand up to
//     Limits::max_connections; more wait in the kernel's listen backlog);
//   - a connection without a request for Limits::idle is closed;
//   - a request's head (request line and headers) must arrive within Limits::head and be at most
//     Limits::max_head_bytes (else 431 and the connection is closed); its body within
//     Limits::body; every read waits at most Limits::io;
//   - a handler may ask for the connection to be closed after its response (a request answered
//     without its body being read: the unread body must not be taken for the next request).
// So 300 connections that send nothing, or a byte a second, each hold one thread for a bounded
// time and never the ones a legitimate client is served on.
//
// Thread-safety: GuardedServer's handlers run on the pool's threads, many at once;
// close_after_response() acts on the connection of the calling thread.
#pragma once

#include <atomic>
#include <chrono>
#include <cstddef>

#include <httplib.h>

namespace cachectl::serve {

struct Limits {
  std::size_t max_connections = 512;
  std::chrono::milliseconds idle{3000};
  std::chrono::milliseconds head{10'000};
  std::chrono::milliseconds body{60'000};
  std::chrono::milliseconds io{5000};
  std::size_t max_head_bytes = 64 * 1024;
  std::size_t max_requests = 1000;  // on one connection, then it is closed
};

class GuardedServer : public httplib::Server {
 public:
  explicit GuardedServer(const Limits& limits);
  // Connections open now.
  std::size_t connections() const { return connections_.load(std::memory_order_relaxed); }
  const Limits& limits() const { return limits_; }
  // After bind_to_port: a listen backlog of `n` instead of httplib's 5, so a burst of
  // connections waits to be accepted instead of having its handshakes dropped. False when the
  // socket refuses.
  bool set_backlog(int n);

 private:
  bool process_and_close_socket(socket_t sock) override;

  Limits limits_;
  std::atomic<std::size_t> connections_{0};
};

// Called from a handler: the connection is closed once the current response is written.
void close_after_response();

}  // namespace cachectl::serve
