// The owner's side of the shared protocol: one decoded request answered with the owner's
// LocalService, the same code the owner's own calls run. Validation of what a peer sent (keys,
// categories, TTLs, operation codes) happens here, once, with core::valid_set / valid_key.
// Thread-safety: as LocalService (dispatch may run on any server thread concurrently).
#pragma once

#include <cstdint>

#include "shared/protocol.hpp"

namespace larder::core {
class LocalService;
}

namespace larder::shared {

// The owner answers get_many with at most about this many value bytes per reply (a reply must
// fit in a frame, kMaxFrameBytes); the client asks again for the keys left.
inline constexpr std::uint64_t kMaxGetManyReplyBytes = 64u << 20;
// An events reply carries at most this many events (each key at most about 4.3 KB: well
// within a frame).
inline constexpr std::int64_t kMaxEventsPerReply = 4096;

// The reply to `q` (same id). A malformed request (wrong item count, empty pattern, unknown
// maintenance code) gets ReplyStatus::bad_request with the reason in Reply::error; anything
// else gets ok with the operation's result (invalid keys read as a miss / false).
Reply dispatch(core::LocalService& service, const Request& q);

}  // namespace larder::shared
