// Remote tier URLs (Config::remote, LARDER_REMOTE):
//   redis://[[user:]password@]host[:port][/db][?options]
//   redis+unix://[[user:]password@]/path/to/socket[?db=N&options]
// Options: prefix=NAME (default "larder"; letters, digits, '_', '-', '.', ':'), connect_timeout=MS
// (default 100), operation_timeout=MS (default 1000), read_only=1, secret_file=PATH (a file
// holding the shared secret that signs every record, mode 0600 or stricter), outage=local|miss
// (what reads serve while the change listener is disconnected). User, password,
// path and secret_file may be percent-encoded. Thread-safety: pure functions and plain values.
#pragma once

#include <chrono>
#include <cstdint>
#include <string>
#include <string_view>

#include "util/result.hpp"

namespace larder::remote {

struct RemoteUrl {
  enum class Transport : std::uint8_t { tcp, unix_socket };
  Transport transport = Transport::tcp;
  std::string host;  // tcp
  int port = 6379;   // tcp
  std::string path;  // unix_socket
  std::string user;  // empty: AUTH with the password only (or no AUTH without one)
  std::string password;
  int db = 0;
  std::string prefix = "larder";
  std::chrono::milliseconds connect_timeout{100};
  std::chrono::milliseconds operation_timeout{1000};
  bool read_only = false;
  // secret_file= as given (absolute), and the secret load_secret read from it (never printed).
  std::string secret_file;
  std::string secret;
  // outage=local|miss: what a read finds while this cache's change listener is disconnected
  // (it cannot hear of other caches' writes then): its local copies (local, the default), or
  // misses (miss: no possibly-stale copy is served).
  enum class Outage : std::uint8_t { local = 0, miss = 1 };
  Outage outage = Outage::local;

  // The URL without its password (for status output and logs).
  std::string display() const;
};

// The parsed URL, or a message naming what is wrong with it ("remote: ..." is the caller's).
util::Result<RemoteUrl> parse_url(std::string_view url);

// The largest secret_file read.
inline constexpr long kMaxSecretBytes = 4096;

// Reads u->secret from u->secret_file (nothing to do without one). Fails, naming secret_file,
// when the file is missing, not a regular file, empty (a trailing newline aside), larger than
// kMaxSecretBytes, or when its mode gives group or others any access.
util::Status load_secret(RemoteUrl* u);

}  // namespace larder::remote
