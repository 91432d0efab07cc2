// A Kv in memory (per family a hash map, and the key order kept lazily for scans): the store of
// the disabled strategy and the circuit breaker's fallback. Not durable (Kv::durable): its
// records end with the process.
// Thread-safety: one shared_mutex; gets and scans share it, writes take it exclusively.
#pragma once

#include <memory>

#include "kv/kv.hpp"

namespace larder::kv {

std::unique_ptr<Kv> make_memory_kv();

}  // namespace larder::kv
