// Validation and resolution of a public Config: checks every field (throwing ConfigError naming
// it), works out the per-user default root and the directory the cache lives in. The one place a
// Config is checked: Cache::open and larder's tools both come through resolve().
// Thread-safety: pure functions (they read the environment).
#pragma once

#include <filesystem>

#include "core/config.hpp"
#include "larder/larder.hpp"

namespace larder::api {

// $XDG_CACHE_HOME/larder, else $HOME/.cache/larder, else the passwd home's .cache/larder.
// Throws ConfigError when there is no home directory.
std::filesystem::path default_root();
// Throws ConfigError naming the first invalid field.
void validate(const Config& config);
// validate() and work out root and dir (no filesystem changes). Throws ConfigError.
core::Resolved resolve(const Config& config);

}  // namespace larder::api
