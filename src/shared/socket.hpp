// Unix-domain stream sockets for the shared strategy: where the socket lives, listening,
// connecting and framed I/O with deadlines (frames as in protocol.hpp). Every wait is bounded by
// a deadline; no call blocks past it. Descriptors are close-on-exec, non-blocking, and closed in
// forked children (util/fork.hpp).
//
// Thread-safety: functions are independent; one descriptor must not be read (or written) by two
// threads at once.
#pragma once

#include <chrono>
#include <cstdint>
#include <filesystem>
#include <string>

#include "util/result.hpp"

namespace larder::shared {

using Deadline = std::chrono::steady_clock::time_point;
inline constexpr Deadline kNoDeadline = Deadline::max();

// <io_root>/.larder.sock (io_root: the root pinned open, core::Resolved::io()), or when
// <root>/.larder.sock is too long for a socket address, a socket named after a hash of the root
// in a private per-user directory ($XDG_RUNTIME_DIR/larder, else /tmp/larder-<uid>, created 0700
// and checked to be ours). Returns the path, or why neither works.
util::Result<std::filesystem::path> socket_path(const std::filesystem::path& root,
                                                const std::filesystem::path& io_root);

// Binds and listens on `path` (replacing a stale socket file), mode 0600. Returns the descriptor,
// or why not.
util::Result<int> listen_unix(const std::filesystem::path& path);
// Connects to `path`. Returns the descriptor, or why not; then *refused is true when nobody
// listens there (no socket file, or connection refused), i.e. there is no owner serving.
util::Result<int> connect_unix(const std::filesystem::path& path, Deadline deadline, bool* refused);
// The uid of the process at the other end, or -1.
long peer_uid(int fd);
// Closes `fd` (forgetting it for fork).
void close_socket(int fd);

enum class IoResult : std::uint8_t { ok, closed, timeout, too_large, error };
const char* to_string(IoResult r);

// Frame I/O expects a non-blocking descriptor (as listen_unix / connect_unix / the owner's accept
// make them): on a blocking one the deadline cannot be enforced.
// Sends one frame (length prefix + payload).
IoResult send_frame(int fd, std::string_view payload, Deadline deadline);
// Receives one frame's payload. `closed`: the peer closed before the first byte of a frame.
IoResult recv_frame(int fd, std::string* payload, Deadline deadline);

}  // namespace larder::shared
