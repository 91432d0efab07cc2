// The owner's side of the shared protocol: one decoded request answered by running its
// operation's `run` (operations.hpp) on the owner's LocalService: the code the owner's own calls
// run. What only a peer can send wrong (an empty pattern, an unknown maintenance code, a scope
// that is no namespace's) is refused here by the operation's `refuse`; invalid keys,
// categories and TTLs read as a miss / false, as the public API would answer them.
// Thread-safety: as LocalService (dispatch may run on any server thread concurrently).
#pragma once

#include "shared/protocol.hpp"

namespace larder::shared {

// The reply to `q` (same id): ReplyStatus::bad_request with the reason in Reply::error when
// the operation refuses the request, else ok with the operation's result.
Reply dispatch(core::LocalService& service, const Request& q);

}  // namespace larder::shared
