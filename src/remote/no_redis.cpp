// The remote tier in a build without hiredis (-Dredis=disabled, or libhiredis-dev missing): a
// cache configured with a remote opens without it and says why (core/backend.cpp).
#include "remote/tier.hpp"

namespace larder::remote {

util::Result<std::unique_ptr<Tier>> open_tier(RemoteUrl url, double, std::uint64_t,
                                              std::filesystem::path, TierHooks,
                                              const util::Logger*) {
  return util::fail(
      "remote tier {} not used: this larder was built without Redis support (meson "
      "-Dredis=disabled, or libhiredis-dev was missing)",
      url.display());
}

}  // namespace larder::remote
