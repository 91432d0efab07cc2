// cachectl's status and stats commands (commands.hpp).
#include "common.hpp"

namespace cachectl {

using namespace detail;

// ------------------------------------------------------------------------------------ status

int cmd_status(const Globals& g) {
  const Location loc = locate(g, false);
  const Style st = style_for(g);
  Json j;
  j.w().StartObject();
  j.field("root", loc.root.string());
  j.field("strategy", larder::core::to_string(loc.strategy));
  std::string text;
  text += fmt::format("{:<12}{}\n", "cache", loc.root.string());
  text += fmt::format("{:<12}{}\n", "strategy", larder::core::to_string(loc.strategy));
  // flock and RocksDB's lock are not reliable across machines on a network filesystem.
  const auto network = larder::util::network_filesystem(loc.root);
  j.key("network_filesystem");
  if (network)
    j.str(*network);
  else
    j.w().Null();
  if (network)
    text += fmt::format("{:<12}{}\n", "filesystem",
                        st.yellow(fmt::format("{}: a network filesystem; locks are not reliable "
                                              "between machines, keep shared caches local",
                                              *network)));

  if (loc.strategy == larder::Strategy::process_isolated) {
    Table t({"PID", "STATE", "ENTRIES", "ON DISK", "MODIFIED", "DIRECTORY"},
            {true, false, true, true, true, false});
    j.key("processes");
    j.w().StartArray();
    for (const auto& p : loc.procs) {
      const Disk d = disk_usage(p.dir / "db");
      const auto snap = read_snapshot(p.dir);
      std::error_code ec;
      const auto mtime = fs::last_write_time(p.dir, ec);
      const double age =
          ec ? 0.0
             : std::chrono::duration<double>(fs::file_time_type::clock::now() - mtime).count();
      t.add({std::to_string(p.pid), p.live ? st.green("live") : st.dim("dead"),
             snap ? std::to_string(snap->total_entries) : "?", human_size(d.total()),
             human_duration(age) + " ago", p.dir.filename().string()});
      j.w().StartObject();
      j.field("pid", static_cast<std::int64_t>(p.pid));
      j.field("live", p.live);
      j.field("directory", p.dir.string());
      j.field("disk_bytes", d.total());
      j.key("entries_last_saved");
      if (snap)
        j.w().Uint64(snap->total_entries);
      else
        j.w().Null();
      j.w().EndObject();
    }
    j.w().EndArray();
    text += "\n" + t.render();
    if (!loc.chosen) {
      j.w().EndObject();
      if (g.json)
        out(j.text());
      else
        out(text + "\n(choose one with --pid for its details)\n");
      return kExitOk;
    }
    text += "\n";
  }

  Session s = open_session(g, loc);
  larder::Stats stats = s.service->stats();
  const auto snap = read_snapshot(s.dir);
  const Disk d = disk_usage(s.dir / "db");
  const std::uint64_t max_entries = setting_u64(s, "max_entries");
  const std::uint64_t max_bytes = setting_u64(s, "max_size_bytes");
  const std::int64_t store_pid = s.store_pid();
  const bool by_us = store_pid == static_cast<std::int64_t>(::getpid());

  if (loc.strategy == larder::Strategy::shared) {
    const std::string holder = lock_holder(loc.root);
    const std::string socket = field_of(holder, "socket");
    if (by_us)
      text +=
          fmt::format("{:<12}none (no process was serving; cachectl opened the store)\n", "owner");
    else
      text += fmt::format("{:<12}pid {}{}\n", "owner", store_pid,
                          socket.empty() ? "" : fmt::format(", serving on {}", socket));
    j.key("owner_pid");
    if (by_us)
      j.w().Null();
    else
      j.w().Int64(store_pid);
    j.key("socket");
    if (by_us || socket.empty())
      j.w().Null();
    else
      j.str(socket);
  } else {
    text += fmt::format("{:<12}{} (pid {}, {})\n", "directory", s.dir.string(), loc.chosen->pid,
                        s.read_only ? "live: read-only view" : "not in use");
    j.field("pid", static_cast<std::int64_t>(loc.chosen->pid));
    j.field("live", loc.chosen->live);
  }
  j.field("directory", s.dir.string());
  j.field("read_only", s.read_only);
  const std::int64_t ttl_ms = std::stoll(setting(s, "default_ttl_ms"));
  const double ttl = static_cast<double>(ttl_ms) / 1000.0;
  text += fmt::format("{:<12}{}, default TTL {}, stale until {} x TTL\n", "policy",
                      setting(s, "policy"), ttl_ms == 0 ? "none" : human_duration(ttl),
                      setting(s, "stale_factor"));
  j.field("policy", setting(s, "policy"));
  j.field("default_ttl_s", ttl);  // seconds, fractional below a second
  j.field("stale_factor", std::stod(setting(s, "stale_factor")));

  auto limit_line = [&](const char* name, std::uint64_t value, std::uint64_t limit,
                        const std::string& shown, const std::string& shown_limit) {
    std::string line = fmt::format("{:<12}{}", name, shown);
    if (limit == 0) return line + " (no limit)\n";
    line += fmt::format(" of {}", shown_limit);
    const double f = static_cast<double>(value) / static_cast<double>(limit);
    if (::isatty(STDOUT_FILENO) == 1)
      line += "  " + (f >= 0.9 ? st.yellow(usage_bar(f)) : usage_bar(f));
    else
      line += fmt::format(" ({:.0f}%)", f * 100);
    return line + "\n";
  };
  text += limit_line("entries", stats.total_entries, max_entries,
                     std::to_string(stats.total_entries), std::to_string(max_entries));
  text += limit_line("size", stats.total_size_bytes, max_bytes, human_size(stats.total_size_bytes),
                     human_size(max_bytes));
  const bool admin_limits = setting(s, "limits_set_by") == "cachectl";
  if (admin_limits)
    text += fmt::format("{:<12}set with cachectl limits (programs' own limits do not apply)\n",
                        "limits");
  text += fmt::format("{:<12}{} fresh, {} stale, {} expired, {} invalid\n", "status",
                      stats.fresh_entries, stats.stale_entries, stats.expired_entries,
                      stats.invalid_entries);
  text += fmt::format("{:<12}{:.1f}% ({} hits, {} misses)\n", "hit rate", stats.hit_rate(),
                      stats.hit_count, stats.miss_count);
  text += fmt::format("{:<12}{} evictions, {} expirations, {} invalidations, {}\n", "removals",
                      stats.eviction_count, stats.expiration_count, stats.invalidation_count,
                      stats.error_count == 0 ? std::string("0 errors")
                                             : st.red(fmt::format("{} errors", stats.error_count)));
  // The remote tier, as the process serving the cache sees it (URL without its password).
  const std::string remote_url = setting(s, "remote");
  if (!remote_url.empty()) {
    const bool up = setting(s, "remote_reachable") == "true";
    text += fmt::format(
        "{:<12}{}, {}; {} hits, {} misses, {}\n", "remote", remote_url,
        up ? std::string("reachable") : st.red("unreachable: " + setting(s, "remote_error")),
        stats.remote_hit_count, stats.remote_miss_count,
        stats.remote_error_count == 0 ? std::string("0 errors")
                                      : st.red(fmt::format("{} errors", stats.remote_error_count)));
    j.key("remote");
    j.w().StartObject();
    j.field("url", remote_url);
    j.field("reachable", up);
    j.field("error", setting(s, "remote_error"));
    j.w().EndObject();
  } else {
    j.key("remote");
    j.w().Null();
  }
  text += fmt::format("{:<12}{} (SST {}, WAL {}, other {}); logical size {}\n", "on disk",
                      human_size(d.total()), human_size(d.sst), human_size(d.wal),
                      human_size(d.other), human_size(stats.total_size_bytes));
  auto when = [&](const std::string& iso_text) -> std::string {
    if (iso_text.empty()) return "never";
    auto t = parse_iso(iso_text);
    if (!t) return iso_text;
    return fmt::format("{} ago ({})",
                       human_duration(std::chrono::duration<double>(Clock::now() - *t).count()),
                       iso_text);
  };
  text += fmt::format("{:<12}updated {}, last zeroed {}\n", "statistics",
                      snap ? when(snap->last_updated) : "never (no statistics file yet)",
                      snap ? when(snap->last_zeroed) : "never");

  j.field("total_entries", stats.total_entries);
  j.field("max_entries", max_entries);
  j.field("total_size_bytes", stats.total_size_bytes);
  j.field("max_size_bytes", max_bytes);
  j.field("limits_set_by", admin_limits ? "cachectl" : "config");
  // The named namespaces (Cache::ns, --ns) with their entry counts.
  std::map<std::string, std::uint64_t> namespaces;
  for (const auto& k : s.service->keys(std::string_view("\0", 1))) {
    const auto end = k.find('\0', 1);
    if (end != std::string::npos) ++namespaces[k.substr(1, end - 1)];
  }
  j.key("namespaces");
  j.w().StartObject();
  std::string listed;
  for (const auto& [name, n] : namespaces) {
    j.field(name, n);
    listed += fmt::format("{}{} ({})", listed.empty() ? "" : ", ", printable_value(name), n);
  }
  j.w().EndObject();
  if (!listed.empty()) text += fmt::format("{:<12}{}\n", "namespaces", listed);
  j.field("fresh_entries", stats.fresh_entries);
  j.field("stale_entries", stats.stale_entries);
  j.field("expired_entries", stats.expired_entries);
  j.field("invalid_entries", stats.invalid_entries);
  j.field("hit_rate", stats.hit_rate());
  larder::stats::for_each_counter(stats, [&](larder::stats::Counter, std::string_view name,
                                             std::uint64_t v) { j.field(std::string(name), v); });
  j.key("stats_last_updated");
  if (snap && !snap->last_updated.empty())
    j.str(snap->last_updated);
  else
    j.w().Null();
  j.key("stats_last_zeroed");
  if (snap && !snap->last_zeroed.empty())
    j.str(snap->last_zeroed);
  else
    j.w().Null();
  j.key("disk");
  j.w().StartObject();
  j.field("sst_bytes", d.sst);
  j.field("wal_bytes", d.wal);
  j.field("other_bytes", d.other);
  j.field("total_bytes", d.total());
  j.w().EndObject();
  j.w().EndObject();
  out(g.json ? j.text() : text);
  return kExitOk;
}

// ------------------------------------------------------------------------------------- stats

// The statistics in Prometheus's text format, named by its guide: counters from the counter
// table (stats/counters.hpp) with _total, gauges with units, labels instead of name variants,
// # HELP and # TYPE for every metric.
std::string prometheus_text(const Session& s, const larder::Stats& st) {
  const std::string cache = fmt::format("cache=\"{}\"", prom_label(s.dir.string()));
  std::string text;
  auto family = [&](std::string_view name, std::string_view type, std::string_view help) {
    text += fmt::format("# HELP larder_{0} {1}\n# TYPE larder_{0} {2}\n", name, help, type);
  };
  auto sample = [&](std::string_view name, std::string_view labels, std::uint64_t v) {
    text +=
        fmt::format("larder_{}{{{}{}{}}} {}\n", name, cache, labels.empty() ? "" : ",", labels, v);
  };
  larder::stats::CounterValues values{};
  larder::stats::for_each_counter(st,
                                  [&](larder::stats::Counter c, std::string_view, std::uint64_t v) {
                                    values[larder::stats::index(c)] = v;
                                  });
  const auto& info = larder::stats::kCounterInfo;
  for (std::size_t i = 0; i < info.size(); ++i) {
    if (i > 0 && info[i - 1].metric == info[i].metric) continue;  // written with its family
    std::size_t end = i + 1;
    while (end < info.size() && info[end].metric == info[i].metric) ++end;
    // One counter: its help. Several (one metric by a label): "by result: hit = ...; miss = ...".
    std::string help(info[i].help);
    if (end - i > 1) {
      const std::string_view first = info[i].label;
      help = fmt::format("by {}:", first.substr(0, first.find('=')));
      for (std::size_t k = i; k < end; ++k) {
        const std::string_view label = info[k].label;
        const auto quote = label.find('"');
        help += fmt::format("{} {} = {}", k > i ? ";" : "",
                            label.substr(quote + 1, label.size() - quote - 2), info[k].help);
      }
    }
    family(info[i].metric, "counter", help);  // our own text: nothing to escape
    for (std::size_t k = i; k < end; ++k) sample(info[k].metric, info[k].label, values[k]);
  }
  family("entries", "gauge", "entries stored now (any status)");
  sample("entries", "", st.total_entries);
  family("size_bytes", "gauge", "bytes of the stored values");
  sample("size_bytes", "", st.total_size_bytes);
  family("entries_by_status", "gauge",
         "entries stored now by status: fresh (within their ttl), stale (past it, within "
         "stale_factor x ttl), expired (past that, not removed yet), invalid (invalidated)");
  sample("entries_by_status", "status=\"fresh\"", st.fresh_entries);
  sample("entries_by_status", "status=\"stale\"", st.stale_entries);
  sample("entries_by_status", "status=\"expired\"", st.expired_entries);
  sample("entries_by_status", "status=\"invalid\"", st.invalid_entries);
  family("max_entries", "gauge", "the entry limit (0: none)");
  sample("max_entries", "", setting_u64(s, "max_entries"));
  family("max_size_bytes", "gauge", "the limit on the bytes of stored values (0: none)");
  sample("max_size_bytes", "", setting_u64(s, "max_size_bytes"));
  family("category_entries", "gauge", "entries stored now per category");
  for (const auto& [c, n] : st.categories)
    sample("category_entries", fmt::format("category=\"{}\"", prom_label(c)), n);
  const Disk d = disk_usage(s.dir / "db");
  family("disk_bytes", "gauge",
         "bytes the store takes on disk by kind: sst (tables), wal (write-ahead log), other");
  sample("disk_bytes", "kind=\"sst\"", d.sst);
  sample("disk_bytes", "kind=\"wal\"", d.wal);
  sample("disk_bytes", "kind=\"other\"", d.other);
  family("info", "gauge", "the cache's strategy and eviction policy and larder's version");
  sample("info",
         fmt::format("strategy=\"{}\",policy=\"{}\",version=\"{}\"",
                     prom_label(setting(s, "strategy")), prom_label(setting(s, "policy")),
                     LARDER_VERSION),
         1);
  family("degraded", "gauge",
         "1 while the cache runs on memory only because its store cannot be used, else 0");
  sample("degraded", "", setting(s, "degraded") == "true" ? 1 : 0);
  return text;
}

namespace {

// Every counter by its larder::Stats name (stats/counters.hpp), then the gauges, also by their
// Stats (or Config) names: the same names in text, JSON and Prometheus.
struct Row {
  std::string_view name, help;
  std::uint64_t value;
};

std::vector<Row> counter_rows(const larder::Stats& st) {
  std::vector<Row> counters;
  larder::stats::for_each_counter(
      st, [&](larder::stats::Counter c, std::string_view name, std::uint64_t v) {
        counters.push_back({name, larder::stats::kCounterInfo[larder::stats::index(c)].help, v});
      });
  return counters;
}

std::vector<Row> gauge_rows(const Session& s, const larder::Stats& st) {
  return {
      {"total_entries", "entries stored (any status)", st.total_entries},
      {"total_size_bytes", "bytes of stored values", st.total_size_bytes},
      {"fresh_entries", "entries within their ttl (or without one)", st.fresh_entries},
      {"stale_entries", "entries past their ttl, within stale_factor x ttl", st.stale_entries},
      {"expired_entries", "entries past stale_factor x ttl, not yet removed", st.expired_entries},
      {"invalid_entries", "entries marked invalid, not yet removed", st.invalid_entries},
      {"max_entries", "the entry limit (0: none)", setting_u64(s, "max_entries")},
      {"max_size_bytes", "the byte limit (0: none)", setting_u64(s, "max_size_bytes")},
  };
}

}  // namespace

std::string stats_json(const Session& s, const larder::Stats& st) {
  const auto snap = read_snapshot(s.dir);
  // "Never" is null in JSON and "never" in text, for both times.
  auto time_field = [](Json& j, const char* name, const std::string& iso) {
    j.key(name);
    if (iso.empty())
      j.w().Null();
    else
      j.str(iso);
  };
  Json j;
  j.w().StartObject();
  j.field("directory", s.dir.string());
  for (const auto& r : counter_rows(st)) j.field(std::string(r.name), r.value);
  for (const auto& r : gauge_rows(s, st)) j.field(std::string(r.name), r.value);
  j.field("hit_rate", st.hit_rate());
  j.key("categories");
  j.w().StartObject();
  for (const auto& [c, n] : st.categories) j.field(c, n);
  j.w().EndObject();
  time_field(j, "last_updated", snap ? snap->last_updated : std::string());
  time_field(j, "last_zeroed", snap ? snap->last_zeroed : std::string());
  j.w().EndObject();
  return j.text();
}

int cmd_stats(const Globals& g, const std::string& format, bool zero,
              const std::string& output_file) {
  if (format != "text" && format != "json" && format != "prometheus")
    throw Failure{kExitUsage,
                  fmt::format("--format must be text, json or prometheus, not '{}'", format)};
  std::string output;  // when not empty: what goes to stdout or --output
  const Location loc = locate(g, true);
  Session s = open_session(g, loc);
  if (zero) {
    s.require_writable("zero the statistics");
    AdminResult r = s.service->admin(AdminCommand::zero_stats, 0);
    if (!r.ok) throw Failure{kExitNoCache, fmt::format("cannot zero the statistics: {}", r.error)};
    info(g, "statistics zeroed");
  }
  const larder::Stats st = s.service->stats();
  if (g.json || format == "json") {
    output = stats_json(s, st);
  } else if (format == "prometheus") {
    output = prometheus_text(s, st);
  } else {
    const auto snap = read_snapshot(s.dir);
    Table t({"COUNTER", "VALUE"}, {false, true});
    for (const auto& r : counter_rows(st)) t.add({std::string(r.name), std::to_string(r.value)});
    for (const auto& r : gauge_rows(s, st)) t.add({std::string(r.name), std::to_string(r.value)});
    t.add({"hit_rate", fmt::format("{:.1f}%", st.hit_rate())});
    for (const auto& [c, n] : st.categories) t.add({"category " + c, std::to_string(n)});
    t.add({"last_updated", snap && !snap->last_updated.empty() ? snap->last_updated : "never"});
    t.add({"last_zeroed", snap && !snap->last_zeroed.empty() ? snap->last_zeroed : "never"});
    output = t.render();
  }
  if (output_file.empty()) {
    out(output);
  } else if (auto written = larder::util::atomic_write_file(output_file, output, 0644); !written) {
    throw Failure{kExitUsage, fmt::format("--output: {}", written.error())};
  }
  return kExitOk;
}

}  // namespace cachectl
