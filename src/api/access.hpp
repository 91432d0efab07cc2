// Internal access to what is behind a Cache handle, and the registry of open services, for
// larder's own tools (cachectl) and tests. Not part of the public API.
//
// Thread-safety: as the Cache and Service they reach (every function may be called from many
// threads at once).
#pragma once

#include <chrono>
#include <memory>

#include "core/backend.hpp"
#include "core/config.hpp"
#include "core/service.hpp"
#include "larder/larder.hpp"

namespace larder {

struct Cache::Access {
  // The Service behind the handle: local, or the shared node.
  static const std::shared_ptr<core::Service>& service(const Cache& cache);
  // A handle on `service`, opened from `r` (open_service), as Cache::open makes one: for
  // larder's tools that open the Service themselves (cachectl serve uses the public API on it).
  // Entries set without a TTL get `default_ttl`.
  static Cache wrap(std::shared_ptr<core::Service> service, const core::Resolved& r,
                    std::chrono::milliseconds default_ttl);
};

}  // namespace larder

namespace larder::api {

// The Service for `r` in this process: the registry hands out one per directory (two opens of
// one directory share it). Throws ConfigError for an unsafe root; never for I/O trouble.
std::shared_ptr<core::Service> open_service(const core::Resolved& r);

// The Backend behind a Cache handle; nullptr for a shared cache served by another process.
std::shared_ptr<core::Backend> backend_of(const Cache& cache);

}  // namespace larder::api
