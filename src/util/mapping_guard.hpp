// Guards shared file mappings against truncation of their file by someone else: an access to a
// truncated page raises SIGBUS, which would kill the host. A guarded range that faults is replaced
// in place by anonymous zero pages (the access is then retried and succeeds) and marked lost; a
// SIGBUS anywhere else goes to the handler that was installed before (or kills as by default).
//
// Thread-safety: all functions may be called from any thread; the handler is async-signal-safe
// (atomics and mmap only). At most kMaxGuardedMappings ranges are guarded at once (more are left
// unguarded, and guard_mapping returns false).
#pragma once

#include <cstddef>

namespace larder::util {

inline constexpr std::size_t kMaxGuardedMappings = 256;

// Guards [addr, addr + bytes). Returns false when no slot is free (the range is not guarded).
bool guard_mapping(void* addr, std::size_t bytes);
// Stops guarding the range starting at addr (before it is unmapped).
void unguard_mapping(void* addr);
// True once a fault replaced the guarded range starting at addr.
bool mapping_lost(const void* addr);

}  // namespace larder::util
