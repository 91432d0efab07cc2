// A store that could not be opened yet (a full disk, a read-only or failing filesystem at open):
// every call fails with the reason until recover() manages to open the real store, after which
// every call goes to it. The Backend puts it behind an open circuit breaker, so the cache serves
// from memory meanwhile and its probe (recover) retries the open.
//
// Thread-safety: as Kv. recover() must not run concurrently with itself.
#pragma once

#include <functional>
#include <memory>

#include "kv/kv.hpp"

namespace larder::kv {

// Opens the real store: ok with *out set, or why not.
using StoreOpener = std::function<Status(std::unique_ptr<Kv>* out)>;

// `why` is the failure of the first attempt (what calls report until a retry succeeds).
std::unique_ptr<Kv> make_deferred_kv(StoreOpener open, Status why);

}  // namespace larder::kv
