// fork() bookkeeping. A child process forked while larder is open inherits file descriptors
// whose flock locks, sockets and mappings belong to the parent: the child must neither keep the
// parent's locks alive after the parent dies nor talk on the parent's sockets.
//
// Thread-safety: every function may be called from any thread. The child handler runs in the
// forked child (single-threaded, async-signal-safe operations only).
#pragma once

#include <cstdint>

namespace larder::util {

// Counts fork()s of this process (incremented in the child by a pthread_atfork handler). An
// object opened in an earlier generation was inherited from the parent.
std::uint64_t fork_generation();

// Registers `fd` to be closed in every child forked from now on (the parent keeps it). Returns
// false when the table (256 descriptors) is full; the descriptor is then simply inherited.
bool close_in_forked_child(int fd);
// Removes `fd` from that set; call before closing it.
void forget_in_forked_child(int fd);

}  // namespace larder::util
