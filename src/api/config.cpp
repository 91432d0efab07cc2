#include "api/config.hpp"

#include <pwd.h>
#include <unistd.h>

#include <charconv>
#include <cmath>
#include <cstdlib>
#include <string>

#include <fmt/format.h>

#include "remote/url.hpp"

namespace larder::api {

namespace fs = std::filesystem;
using core::Resolved;

fs::path default_root() {
  if (const char* xdg = std::getenv("XDG_CACHE_HOME"); xdg != nullptr && *xdg == '/')
    return fs::path(xdg) / "larder";
  if (const char* home = std::getenv("HOME"); home != nullptr && *home == '/')
    return fs::path(home) / ".cache" / "larder";
  if (const passwd* pw = ::getpwuid(::geteuid()); pw != nullptr && pw->pw_dir != nullptr)
    return fs::path(pw->pw_dir) / ".cache" / "larder";
  throw ConfigError("cache_root: empty and no home directory to put the default cache in");
}

}  // namespace larder::api

namespace larder {

std::optional<std::chrono::milliseconds> ttl_from_seconds(double seconds) {
  if (!std::isfinite(seconds) || seconds < 0 || seconds > 1e12) return std::nullopt;
  const auto ms = static_cast<std::int64_t>(std::llround(seconds * 1000.0));
  return std::chrono::milliseconds(ms == 0 && seconds > 0 ? 1 : ms);
}

}  // namespace larder

namespace larder::api {

void validate(const Config& c) {
  if (static_cast<unsigned>(c.strategy) > static_cast<unsigned>(Strategy::disabled))
    throw ConfigError(fmt::format("strategy: unknown value {}", static_cast<unsigned>(c.strategy)));
  if (static_cast<unsigned>(c.eviction_policy) > static_cast<unsigned>(EvictionPolicy::s3fifo))
    throw ConfigError(
        fmt::format("eviction_policy: unknown value {}", static_cast<unsigned>(c.eviction_policy)));
  if (c.default_ttl.count() < 0)
    throw ConfigError(
        fmt::format("default_ttl: must not be negative (got {}ms)", c.default_ttl.count()));
  if (c.cleanup_interval.count() < 0)
    throw ConfigError(fmt::format("cleanup_interval: must not be negative (got {}s)",
                                  c.cleanup_interval.count()));
  if (c.lock_timeout.count() < 0)
    throw ConfigError(
        fmt::format("lock_timeout: must not be negative (got {}ms)", c.lock_timeout.count()));
  if (c.read_only && c.strategy == Strategy::process_isolated)
    throw ConfigError(
        "read_only: a process_isolated store belongs to one process; open it read-only with "
        "Strategy::shared on its proc_<pid> directory, or use cachectl --pid");
  if (!std::isfinite(c.stale_factor) || c.stale_factor < 1.0)
    throw ConfigError(fmt::format("stale_factor: must be a number >= 1 (got {})", c.stale_factor));
  if (!c.remote.empty()) {
    auto url = remote::parse_url(c.remote);
    if (!url) throw ConfigError(fmt::format("remote: {}", url.error()));
    if (auto loaded = remote::load_secret(&*url); !loaded)
      throw ConfigError(fmt::format("remote: {}", loaded.error()));
  }
}

Resolved resolve(const Config& c) {
  validate(c);
  Resolved r;
  r.config = c;
  if (!c.remote.empty() && !c.read_only) {
    r.remote = *remote::parse_url(c.remote);
    if (auto loaded = remote::load_secret(&*r.remote); !loaded)
      throw ConfigError(fmt::format("remote: {}", loaded.error()));
  }
  if (c.strategy == Strategy::disabled) return r;
  fs::path root = c.cache_root.empty() ? default_root() : c.cache_root;
  std::error_code ec;
  if (root.is_relative()) root = fs::absolute(root, ec);
  if (ec)
    throw ConfigError(
        fmt::format("cache_root: cannot make {} absolute: {}", root.string(), ec.message()));
  r.root = root.lexically_normal();
  if (r.root.has_filename() == false && r.root.has_parent_path()) r.root = r.root.parent_path();
  r.dir = c.strategy == Strategy::process_isolated ? r.root / fmt::format("proc_{}", ::getpid())
                                                   : r.root;
  if (c.read_only) {
    // Inspection: change nothing, impose nothing.
    r.read_only = true;
    r.adopt_stored_settings = true;
    r.move_corrupt_aside = false;
    r.repair_on_open = false;
    r.collect_dead_dirs = false;
    r.adopt_dead_dir = false;
  }
  return r;
}

namespace {

std::uint64_t parse_u64(const char* name, const char* text) {
  std::uint64_t v = 0;
  const std::string_view s(text);
  auto [ptr, err] = std::from_chars(s.data(), s.data() + s.size(), v);
  if (err != std::errc() || ptr != s.data() + s.size() || s.empty())
    throw ConfigError(fmt::format("{}: expected a non-negative whole number, got '{}'", name, s));
  return v;
}

}  // namespace

}  // namespace larder::api

namespace larder {

using api::parse_u64;

Config Config::from_env() {
  Config c;
  auto env = [](const char* name) -> const char* {
    const char* v = std::getenv(name);
    return v != nullptr && *v != '\0' ? v : nullptr;
  };
  if (const char* v = env("LARDER_CACHE_ROOT")) c.cache_root = v;
  if (const char* v = env("LARDER_STRATEGY")) {
    const std::string_view s(v);
    if (s == "process_isolated")
      c.strategy = Strategy::process_isolated;
    else if (s == "shared")
      c.strategy = Strategy::shared;
    else if (s == "disabled")
      c.strategy = Strategy::disabled;
    else
      throw ConfigError(
          fmt::format("LARDER_STRATEGY: unknown strategy '{}' (expected "
                      "process_isolated, shared or disabled)",
                      s));
  }
  if (const char* v = env("LARDER_MAX_SIZE_MB")) {
    const std::uint64_t mb = parse_u64("LARDER_MAX_SIZE_MB", v);
    if (mb > (std::uint64_t{1} << 40)) throw ConfigError("LARDER_MAX_SIZE_MB: too large");
    c.max_size_bytes = mb * kMiB;
  }
  if (const char* v = env("LARDER_MAX_ENTRIES")) c.max_entries = parse_u64("LARDER_MAX_ENTRIES", v);
  if (const char* v = env("LARDER_DEFAULT_TTL")) {
    // A decimal number of seconds ("0.25", "90", "1e3").
    const std::string_view text = v;
    double seconds = 0;
    const auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), seconds);
    const auto ttl = ec == std::errc() && end == text.data() + text.size()
                         ? ttl_from_seconds(seconds)
                         : std::nullopt;
    if (!ttl)
      throw ConfigError(
          fmt::format("LARDER_DEFAULT_TTL: '{}' is not a number of seconds from 0 to 1e12", text));
    c.default_ttl = *ttl;
  }
  if (const char* v = env("LARDER_EVICTION_POLICY")) {
    const auto p = core::policy_from_string(v);
    if (!p)
      throw ConfigError(fmt::format("LARDER_EVICTION_POLICY: unknown policy '{}' (expected {})", v,
                                    core::kPolicyNames));
    c.eviction_policy = *p;
  }
  if (const char* v = env("LARDER_REMOTE")) {
    if (auto url = remote::parse_url(v); !url && *v != '\0')
      throw ConfigError(fmt::format("LARDER_REMOTE: {}", url.error()));
    c.remote = v;
  }
  if (const char* v = env("LARDER_DISABLED")) {
    const std::string_view s(v);
    if (s == "1" || s == "true" || s == "yes")
      c.strategy = Strategy::disabled;
    else if (s != "0" && s != "false" && s != "no")
      throw ConfigError(fmt::format("LARDER_DISABLED: expected 1 or 0, got '{}'", s));
  }
  return c;
}

}  // namespace larder
