// cachectl's maintenance commands: clear, cleanup, evict-older-than, compact, gc, verify, limits,
// init (commands.hpp).
#include "common.hpp"

namespace cachectl {

using namespace detail;

// ------------------------------------------------------------ clear, cleanup, evict, compact

int cmd_clear(const Globals& g, const std::string& category) {
  Session s = open_session(g, locate(g, true));
  s.require_writable("clear the cache");
  std::uint64_t n = 0;
  {
    Progress p("clearing", 0, progress_wanted(g));
    n = category.empty() ? s.service->clear(s.scope) : s.service->clear_category(category, s.scope);
  }
  return print_count(g, "removed", n, fmt::format("removed {} entries", n));
}

int cmd_cleanup(const Globals& g) {
  Session s = open_session(g, locate(g, true));
  s.require_writable("clean up");
  const std::uint64_t n = s.service->cleanup();
  return print_count(g, "removed", n, fmt::format("removed {} expired or invalid entries", n));
}

int cmd_evict_older_than(const Globals& g, const std::string& age) {
  const auto seconds = parse_age(age);
  if (!seconds)
    throw Failure{kExitUsage, fmt::format("'{}' is not an age (e.g. 45s, 30m, 3h, 2d, 1w)", age)};
  Session s = open_session(g, locate(g, true));
  s.require_writable("evict entries");
  AdminResult r;
  {
    Progress p("evicting", 0, progress_wanted(g));
    r = s.service->admin(AdminCommand::evict_older_than, *seconds);
  }
  if (!r.ok) throw Failure{kExitNoCache, fmt::format("evict-older-than failed: {}", r.error)};
  return print_count(g, "evicted", r.count,
                     fmt::format("evicted {} entries created more than {} ago", r.count,
                                 human_duration(static_cast<double>(*seconds))));
}

int cmd_compact(const Globals& g) {
  Session s = open_session(g, locate(g, true));
  s.require_writable("compact the store");
  const Disk before = disk_usage(s.dir / "db");
  AdminResult r;
  {
    Progress p("compacting", 0, progress_wanted(g));
    r = s.service->admin(AdminCommand::compact, 0);
  }
  if (!r.ok) throw Failure{kExitNoCache, fmt::format("compaction failed: {}", r.error)};
  const Disk after = disk_usage(s.dir / "db");
  if (g.json) {
    Json j;
    j.w().StartObject();
    j.field("disk_bytes_before", before.total());
    j.field("disk_bytes_after", after.total());
    j.w().EndObject();
    out(j.text());
  } else {
    info(g, fmt::format("compacted: {} on disk before, {} after", human_size(before.total()),
                        human_size(after.total())));
  }
  return kExitOk;
}

// ---------------------------------------------------------------------------------------- gc

int cmd_gc(const Globals& g, bool dry_run, const std::string& min_age) {
  const auto age = parse_age(min_age);
  if (!age)
    throw Failure{kExitUsage,
                  fmt::format("--min-age '{}' is not an age (e.g. 0, 1h, 2d)", min_age)};
  const Location loc = locate(g, false);
  std::vector<fs::path> dirs = larder::collect_dead_process_dirs(
      loc.root, std::chrono::seconds(*age), dry_run,
      [&](larder::LogLevel l, std::string_view line) {
        if (l >= larder::LogLevel::warn || g.verbose > 0)
          std::fprintf(stderr, "cachectl: %.*s\n", static_cast<int>(line.size()), line.data());
      });
  if (g.json) {
    Json j;
    j.w().StartObject();
    j.field("dry_run", dry_run);
    j.key(dry_run ? "would_remove" : "removed");
    j.w().StartArray();
    for (const auto& d : dirs) j.str(d.string());
    j.w().EndArray();
    j.w().EndObject();
    out(j.text());
  } else {
    std::string text;
    for (const auto& d : dirs) text += d.string() + "\n";
    out(text);
    info(g, fmt::format("{} {} director{} of processes that are gone",
                        dry_run ? "would remove" : "removed", dirs.size(),
                        dirs.size() == 1 ? "y" : "ies"));
  }
  return kExitOk;
}

// ------------------------------------------------------------------------------------ verify

int cmd_verify(const Globals& g, bool repair) {
  Session s = open_session(g, locate(g, true));
  if (repair) s.require_writable("repair the store");
  AdminResult found;
  {
    Progress p("verifying", 0, progress_wanted(g));
    found = s.service->admin(AdminCommand::verify, 0);
  }
  if (!found.ok) throw Failure{kExitNoCache, fmt::format("verify failed: {}", found.error)};
  AdminResult after;
  if (repair && found.count > 0) {
    Progress p("repairing", 0, progress_wanted(g));
    after = s.service->admin(AdminCommand::repair, 0);
    if (!after.ok) throw Failure{kExitNoCache, fmt::format("repair failed: {}", after.error)};
  }
  const std::uint64_t left = repair && found.count > 0 ? after.count : found.count;
  if (g.json) {
    Json j;
    j.w().StartObject();
    j.field("entries", static_cast<std::uint64_t>(std::stoull(found.fields["entries"])));
    j.field("bytes", static_cast<std::uint64_t>(std::stoull(found.fields["bytes"])));
    j.key("problems");
    j.w().StartArray();
    for (const auto& l : found.lines) j.str(l);
    j.w().EndArray();
    j.field("repaired", repair && found.count > 0);
    j.field("problems_left", left);
    j.w().EndObject();
    out(j.text());
  } else {
    std::string text;
    for (const auto& l : found.lines) text += l + "\n";
    out(text);
    info(g, fmt::format("checked {} entries ({}): {} problem{}", found.fields["entries"],
                        human_size(std::stoull(found.fields["bytes"])), found.count,
                        found.count == 1 ? "" : "s"));
    if (repair && found.count > 0)
      info(g, fmt::format("repaired: indexes and counters rebuilt, {} problem{} left", left,
                          left == 1 ? "" : "s"));
  }
  return left == 0 ? kExitOk : kExitNotFound;
}

// ------------------------------------------------------------------------------- init, limits

namespace {

std::string limit_text(std::uint64_t entries, std::uint64_t bytes) {
  return fmt::format("{} entries, {}", entries == 0 ? "unlimited" : std::to_string(entries),
                     bytes == 0 ? "unlimited size" : human_size(bytes));
}

std::optional<std::uint64_t> size_option(const std::string& text, const char* name) {
  if (text.empty()) return std::nullopt;
  auto v = parse_size(text);
  if (!v)
    throw Failure{kExitUsage, fmt::format("{} '{}' is not a size (bytes, or with K, M, G, T: 500M)",
                                          name, text)};
  return v;
}

// Sets the given limits through whoever runs the store; returns the entries evicted for them.
std::uint64_t apply_limits(larder::core::Service& service, std::optional<std::uint64_t> entries,
                           std::optional<std::uint64_t> bytes, bool reset) {
  using larder::core::AdminCommand;
  std::uint64_t evicted = 0;
  auto run = [&](AdminCommand command, std::uint64_t arg) {
    const larder::core::AdminResult r = service.admin(command, static_cast<std::int64_t>(arg));
    if (!r.ok) throw Failure{kExitNoCache, fmt::format("changing the limits failed: {}", r.error)};
    evicted += r.count;
  };
  if (reset) run(AdminCommand::reset_limits, 0);
  if (entries) run(AdminCommand::set_max_entries, *entries);
  if (bytes) run(AdminCommand::set_max_bytes, *bytes);
  return evicted;
}

}  // namespace

int cmd_limits(const Globals& g, const LimitsOptions& o) {
  const auto bytes = size_option(o.max_size, "--max-size");
  if (o.reset && (o.max_entries || bytes))
    throw Failure{kExitUsage, "--reset cannot be combined with --max-entries or --max-size"};
  Session s = open_session(g, locate(g, true));
  std::uint64_t evicted = 0;
  const bool change = o.reset || o.max_entries || bytes;
  if (change) {
    s.require_writable("change the limits");
    evicted = apply_limits(*s.service, o.max_entries, bytes, o.reset);
    s.settings = s.service->admin(larder::core::AdminCommand::settings, 0).fields;
  }
  const std::uint64_t e = setting_u64(s, "max_entries"), b = setting_u64(s, "max_size_bytes");
  const std::string by = setting(s, "limits_set_by");
  if (g.json) {
    Json j;
    j.w().StartObject();
    j.field("max_entries", e);
    j.field("max_size_bytes", b);
    j.field("limits_set_by", by);
    j.field("evicted", evicted);
    j.w().EndObject();
    out(j.text());
    return kExitOk;
  }
  out(fmt::format("{}{}\n", limit_text(e, b),
                  by == "cachectl" ? " (set with cachectl limits: programs' configured limits "
                                     "do not apply; --reset gives them back)"
                                   : " (the limits the last program configured)"));
  if (evicted > 0) info(g, fmt::format("evicted {} entries to meet the new limits", evicted));
  return kExitOk;
}

int cmd_init(const Globals& g, const InitOptions& o) {
  const auto bytes = size_option(o.max_size, "--max-size");
  std::optional<larder::EvictionPolicy> policy;
  if (!o.policy.empty()) {
    policy = larder::core::policy_from_string(o.policy);
    if (!policy)
      throw Failure{kExitUsage, fmt::format("--policy '{}' is not one of {}", o.policy,
                                            larder::core::kPolicyNames)};
  }
  larder::Config c;
  c.cache_root = g.root.empty() ? larder::api::default_root() : fs::path(g.root);
  c.strategy = g.strategy == "process_isolated" ? larder::Strategy::process_isolated
                                                : larder::Strategy::shared;
  c.cleanup_interval = std::chrono::seconds(0);
  c.lock_timeout = std::chrono::milliseconds(g.timeout_ms);
  std::error_code ec;
  const fs::path root = fs::absolute(c.cache_root, ec);
  if (fs::is_directory(root / "db", ec) || !list_proc_dirs(root).empty())
    throw Failure{kExitNotFound,
                  fmt::format("{} already holds a larder cache (change its limits with "
                              "cachectl limits)",
                              root.string())};
  if (c.strategy == larder::Strategy::process_isolated) {
    // Each process of a process_isolated cache has its own store and its own Config.
    if (policy || o.max_entries || bytes)
      throw Failure{kExitUsage,
                    "a process_isolated cache has one store per process, each with the policy "
                    "and limits of its program's Config: init takes no --policy, --max-entries "
                    "or --max-size for it"};
    if (auto made = larder::util::create_private_directories(root); !made)
      throw Failure{kExitNoCache, fmt::format("cannot create {}: {}", root.string(), made.error())};
    if (auto tagged = larder::util::write_cachedir_tag(root); !tagged)
      throw Failure{kExitNoCache, tagged.error()};
    info(g, fmt::format("created the process_isolated cache root {}", root.string()));
    return kExitOk;
  }
  if (policy) c.eviction_policy = *policy;
  if (o.max_entries) c.max_entries = *o.max_entries;
  if (bytes) c.max_size_bytes = *bytes;
  try {
    larder::Cache cache = larder::Cache::open(c);
    if (cache.degraded())
      throw Failure{kExitNoCache, fmt::format("cannot create a cache in {}: {}", root.string(),
                                              cache.last_error())};
    // Limits given here stay the cache's whatever its programs configure (cachectl limits).
    if (o.max_entries || bytes)
      apply_limits(*larder::Cache::Access::service(cache), o.max_entries, bytes, false);
  } catch (const larder::ConfigError& e) {
    throw Failure{kExitNoCache, e.what()};
  }
  info(g, fmt::format("created a shared cache in {}: policy {}, {}", root.string(),
                      larder::core::to_string(c.eviction_policy),
                      limit_text(c.max_entries, c.max_size_bytes)));
  return kExitOk;
}

}  // namespace cachectl
