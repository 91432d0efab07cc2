// The registry that gives two opens of one directory in one process the same Service
// (api/access.hpp: open_service), and backend_of.
#include <map>
#include <memory>
#include <mutex>
#include <string>

#include <fmt/format.h>

#include "api/access.hpp"
#include "core/backend.hpp"
#include "core/config.hpp"
#include "core/log.hpp"
#include "core/service.hpp"
#include "larder/larder.hpp"
#include "shared/node.hpp"

namespace larder {

using core::Service;

namespace api {

using core::Backend;
using core::LocalService;
using core::Resolved;

std::shared_ptr<Service> open_service(const Resolved& r) {
  if (r.dir.empty()) return std::make_shared<LocalService>(Backend::open(r));
  const bool node =
      r.config.strategy == Strategy::shared && r.config.use_file_locking && !r.read_only;
  // Leaked on purpose: services may be destroyed during static destruction.
  static auto* mu = new std::mutex;
  static auto* registry = new std::map<std::string, std::weak_ptr<Service>>;
  std::lock_guard lock(*mu);
  // A read-only view (cachectl) never shares with a writable open of the same directory.
  const std::string key = fmt::format("{}{}",
                                      node          ? "node:"
                                      : r.read_only ? "ro:"
                                                    : "dir:",
                                      r.dir.string());
  if (auto it = registry->find(key); it != registry->end()) {
    if (auto existing = it->second.lock(); existing && !existing->inherited()) {
      const Config& a = existing->config();
      const Config& b = r.config;
      if (a.max_entries != b.max_entries || a.max_size_bytes != b.max_size_bytes ||
          a.eviction_policy != b.eviction_policy || a.stale_factor != b.stale_factor)
        core::make_logger(b.log).logf(
            util::Level::warn,
            "{} is already open in this process; the second open shares it "
            "and its limits, policy and stale factor",
            r.dir.string());
      return existing;
    }
  }
  std::shared_ptr<Service> s;
  if (node)
    s = shared::open_node(r);
  else
    s = std::make_shared<LocalService>(Backend::open(r));
  (*registry)[key] = s;
  return s;
}

std::shared_ptr<core::Backend> backend_of(const Cache& cache) {
  return Cache::Access::service(cache)->backend();
}

}  // namespace api

}  // namespace larder
