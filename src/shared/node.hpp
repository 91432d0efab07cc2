// The shared strategy: one cache directory (<cache_root>) used by cooperating processes.
//
// Election: every process that opens the directory opens <root>/.larder.lock; the one that holds
// an exclusive flock on it is the owner. The owner opens the RocksDB store (through a Backend)
// and serves requests on a Unix socket (socket.hpp, protocol.hpp); its own calls go straight to
// the store. Every other process is a client and sends its calls to the owner.
//
// Takeover: when a client finds nobody serving (no socket, connection refused, or the owner
// closed the connection), it tries the lock; the process that gets it opens the store (RocksDB
// replays its WAL) and serves, the others reconnect. A graceful close stops serving, flushes and
// closes the store, and only then releases the lock.
//
// Bounded waits: every call waits at most lock_timeout in all (connect, lock attempts, reply).
// Past it the call degrades (miss / false / 0), counts an error and logs; for the next
// lock_timeout calls fail at once instead of waiting again, then the owner is tried again.
// A request whose reply was lost because the owner died is retried when it is idempotent (get,
// set, exists, metadata, keys, stats, peek, get_many, set_many, flush) and fails cleanly
// otherwise (remove, invalidate*, clear*, cleanup): nothing is answered twice.
//
// Thread-safety: every member function may be called from many threads at once.
#pragma once

#include <memory>

#include "core/config.hpp"
#include "core/service.hpp"

namespace larder::shared {

inline constexpr const char* kOwnerLockName = ".larder.lock";

// The node for r.root (r.config.strategy == shared, use_file_locking). Throws ConfigError for an
// unsafe root; never for I/O trouble (a node that cannot take part degrades).
std::shared_ptr<core::Service> open_node(const core::Resolved& r);

}  // namespace larder::shared
