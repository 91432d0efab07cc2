// The shared-cache owner's socket server: one event-loop thread that accepts connections and
// reads request frames without blocking, and a fixed pool of worker threads that answer complete
// requests. Every peer is treated as hostile:
//  - at most kMaxConnections connections; past it the connection idle the longest is closed to
//    make room (a new client is still served), or the newcomer when none is idle;
//  - a frame's declared length is never allocated up front: its buffer grows with the bytes that
//    arrive; a frame must arrive whole within frame_timeout of its first byte;
//  - the bytes held by frames not yet answered are bounded (kMaxPendingBytes): past it the
//    connection holding the largest partial frame is closed;
//  - idle connections are closed after kIdleTimeout;
//  - accept() failing for lack of descriptors (EMFILE, ENFILE) pauses accepting instead of
//    spinning; a worker thread that cannot be created leaves fewer workers (none: start fails).
// stop() stops accepting and reading, answers every request already received whole, then closes
// every connection: a graceful handover answers each accepted request exactly once.
//
// Thread-safety: start() and stop() from one thread (the owner's); the handler is called from
// the worker threads concurrently.
#pragma once

#include <chrono>
#include <cstdint>
#include <filesystem>
#include <functional>
#include <memory>
#include <string>

#include "shared/protocol.hpp"
#include "stats/counters.hpp"
#include "util/log.hpp"
#include "util/result.hpp"

namespace larder::shared {

inline constexpr std::size_t kMaxConnections = 256;
inline constexpr std::size_t kWorkerThreads = 4;
inline constexpr std::size_t kMaxPendingBytes = 512u << 20;
inline constexpr std::chrono::seconds kIdleTimeout{60};

struct ServerOptions {
  std::chrono::milliseconds reply_timeout{1000};  // longest a reply may take to send
  std::chrono::milliseconds frame_timeout{5000};  // longest a frame may take to arrive
  std::size_t max_connections = kMaxConnections;
  std::size_t max_pending_bytes = kMaxPendingBytes;
  std::chrono::milliseconds idle_timeout = kIdleTimeout;
  std::size_t workers = kWorkerThreads;
};

class Server {
 public:
  using Handler = std::function<Reply(const Request&)>;
  Server(Handler handler, const util::Logger& log, stats::Counters& counters,
         ServerOptions options);
  ~Server();
  Server(const Server&) = delete;
  Server& operator=(const Server&) = delete;

  // Listens on `path` and starts serving. Returns success, or why not.
  util::Status start(const std::filesystem::path& path);
  // Answers the requests received whole, then closes everything and removes the socket file.
  // Idempotent.
  void stop();

  class Impl;

 private:
  std::unique_ptr<Impl> impl_;
};

}  // namespace larder::shared
