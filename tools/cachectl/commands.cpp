#include "commands.hpp"

#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <ctime>
#include <fstream>
#include <iostream>
#include <iterator>

#include <fmt/format.h>
#include "util/json.hpp"

#include "api/access.hpp"
#include "api/config.hpp"
#include "core/config.hpp"
#include "larder/larder.hpp"
#include "output.hpp"
#include "stats/stats_file.hpp"
#include "util/fs.hpp"
#include "util/glob.hpp"
#include "util/lock_file.hpp"

namespace cachectl {

namespace {

using larder::core::AdminCommand;
using larder::core::AdminResult;
using Clock = std::chrono::system_clock;

constexpr std::size_t kBatch = 500;  // keys per inspect / set_many round trip

void out(const std::string& text) {
  std::fwrite(text.data(), 1, text.size(), stdout);
}

// Informational lines (suppressed by -q); results go through out().
void info(const Globals& g, const std::string& line) {
  if (!g.quiet) std::fprintf(stderr, "%s\n", line.c_str());
}

Style style_for(const Globals& g) {
  Style s;
  s.color =
      !g.no_color && !g.json && ::isatty(STDOUT_FILENO) == 1 && std::getenv("NO_COLOR") == nullptr;
  return s;
}

bool progress_wanted(const Globals& g) {
  return !g.quiet;
}

std::string status_word(const Style& st, larder::EntryStatus s) {
  const char* name = larder::core::to_string(s);
  switch (s) {
    case larder::EntryStatus::fresh:
      return st.green(name);
    case larder::EntryStatus::stale:
      return st.yellow(name);
    case larder::EntryStatus::expired:
      return st.red(name);
    case larder::EntryStatus::invalid:
      return st.magenta(name);
  }
  return name;
}

std::optional<larder::EntryStatus> parse_status(std::string_view s) {
  for (auto v : {larder::EntryStatus::fresh, larder::EntryStatus::stale,
                 larder::EntryStatus::expired, larder::EntryStatus::invalid})
    if (s == larder::core::to_string(v)) return v;
  return std::nullopt;
}

std::string iso(Clock::time_point t) {
  return larder::util::iso8601_utc(t);
}

std::optional<Clock::time_point> parse_iso(const std::string& s) {
  std::tm tm{};
  int y = 0, mo = 0, d = 0, h = 0, mi = 0, sec = 0;
  if (std::sscanf(s.c_str(), "%d-%d-%dT%d:%d:%d", &y, &mo, &d, &h, &mi, &sec) != 6)
    return std::nullopt;
  tm.tm_year = y - 1900;
  tm.tm_mon = mo - 1;
  tm.tm_mday = d;
  tm.tm_hour = h;
  tm.tm_min = mi;
  tm.tm_sec = sec;
  return Clock::from_time_t(::timegm(&tm));
}

// The statistics file as last written (read only: never moved aside from here).
std::optional<larder::stats::Snapshot> read_snapshot(const fs::path& dir) {
  auto content = larder::util::read_cache_file(dir / larder::stats::kStatsFileName,
                                               larder::stats::kMaxStatsFileBytes);
  if (!content) return std::nullopt;
  auto snap = larder::stats::from_json(*content);
  if (!snap) return std::nullopt;
  return std::move(*snap);
}

struct Disk {
  std::uint64_t sst = 0, wal = 0, other = 0;
  std::uint64_t total() const { return sst + wal + other; }
};

Disk disk_usage(const fs::path& db) {
  Disk d;
  std::error_code ec;
  for (fs::directory_iterator it(db, ec), end; !ec && it != end; it.increment(ec)) {
    std::error_code ec2;
    if (!it->is_regular_file(ec2)) continue;
    const std::uint64_t size = it->file_size(ec2);
    if (ec2) continue;
    const std::string ext = it->path().extension().string();
    if (ext == ".sst")
      d.sst += size;
    else if (ext == ".log")
      d.wal += size;
    else
      d.other += size;
  }
  return d;
}

std::uint64_t setting_u64(const Session& s, const std::string& name) {
  auto it = s.settings.find(name);
  return it == s.settings.end() ? 0 : std::stoull(it->second);
}

std::string setting(const Session& s, const std::string& name) {
  auto it = s.settings.find(name);
  return it == s.settings.end() ? std::string() : it->second;
}

// The owner's pid of a shared cache as its lock file names it ("" when unknown).
std::string lock_holder(const fs::path& root) {
  larder::util::LockFile lock;
  if (!lock.open(root / ".larder.lock", larder::util::Create::no)) return {};
  return lock.read_content();
}

std::string field_of(const std::string& content, std::string_view name) {
  const auto pos = content.find(std::string(name) + "=");
  if (pos == std::string::npos) return {};
  const auto start = pos + name.size() + 1;
  const auto end = content.find('\n', start);
  return content.substr(start, end == std::string::npos ? std::string::npos : end - start);
}

void entry_json(Json& j, const larder::EntryInfo& e) {
  j.w().StartObject();
  j.field("key", e.key);
  j.field("status", larder::core::to_string(e.status));
  j.field("category", e.category);
  j.field("size_bytes", e.size_bytes);
  j.field("created_at", iso(e.created_at));
  j.field("age_s", e.age_seconds());
  j.key("expires_at");
  if (e.expires_at)
    j.str(iso(*e.expires_at));
  else
    j.w().Null();
  j.key("ttl_remaining_s");
  if (auto r = e.remaining_ttl_seconds())
    j.w().Double(*r);
  else
    j.w().Null();
  j.field("access_count", e.access_count);
  j.field("last_accessed", iso(e.last_accessed));
  j.key("metadata");
  j.w().StartObject();
  for (const auto& [k, v] : e.metadata) j.field(k, v);
  j.w().EndObject();
  j.w().EndObject();
}

// Calls f(batch) on consecutive slices of at most kBatch items (one round trip each to a
// shared owner), counting them on `progress`.
template <class T, class F>
void in_batches(const std::vector<T>& items, Progress& progress, F&& f) {
  for (std::size_t i = 0; i < items.size(); i += kBatch) {
    const std::vector<T> batch(
        items.begin() + static_cast<std::ptrdiff_t>(i),
        items.begin() + static_cast<std::ptrdiff_t>(std::min(items.size(), i + kBatch)));
    f(batch);
    progress.add(batch.size());
  }
}

// Every stored entry's info (values with `with_values`), in key order, `keys` in batches.
std::vector<larder::Entry> inspect_all(const Session& s, const std::vector<std::string>& keys,
                                       bool with_values, const Globals& g, const char* label) {
  std::vector<larder::Entry> out;
  Progress progress(label, keys.size(), progress_wanted(g) && keys.size() > kBatch);
  in_batches(keys, progress, [&](const std::vector<std::string>& batch) {
    for (auto& e : s.service->inspect(batch, with_values))
      if (e) out.push_back(std::move(*e));
  });
  return out;
}

std::string printable_value(const std::string& v) {
  if (printable_text(v)) return v;
  std::string outv;
  for (unsigned char c : v) {
    if (c >= 0x20 && c < 0x7f && c != '\\')
      outv += static_cast<char>(c);
    else if (c == '\\')
      outv += "\\\\";
    else if (c == '\n')
      outv += "\\n";
    else
      outv += fmt::format("\\x{:02x}", c);
  }
  return outv;
}

std::string prom_label(std::string_view v) {
  std::string o;
  for (char c : v) {
    if (c == '\\' || c == '"')
      o += {'\\', c};
    else if (c == '\n')
      o += "\\n";
    else
      o += c;
  }
  return o;
}

}  // namespace

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

namespace {

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

}  // namespace

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
  // Every counter by its larder::Stats name (stats/counters.hpp), then the gauges, also by their
  // Stats (or Config) names: the same names in text, JSON and Prometheus.
  struct Row {
    std::string_view name, help;
    std::uint64_t value;
  };
  std::vector<Row> counters;
  larder::stats::for_each_counter(
      st, [&](larder::stats::Counter c, std::string_view name, std::uint64_t v) {
        counters.push_back({name, larder::stats::kCounterInfo[larder::stats::index(c)].help, v});
      });
  const std::vector<Row> gauges = {
      {"total_entries", "entries stored (any status)", st.total_entries},
      {"total_size_bytes", "bytes of stored values", st.total_size_bytes},
      {"fresh_entries", "entries within their ttl (or without one)", st.fresh_entries},
      {"stale_entries", "entries past their ttl, within stale_factor x ttl", st.stale_entries},
      {"expired_entries", "entries past stale_factor x ttl, not yet removed", st.expired_entries},
      {"invalid_entries", "entries marked invalid, not yet removed", st.invalid_entries},
      {"max_entries", "the entry limit (0: none)", setting_u64(s, "max_entries")},
      {"max_size_bytes", "the byte limit (0: none)", setting_u64(s, "max_size_bytes")},
  };
  const auto snap = read_snapshot(s.dir);
  // "Never" is null in JSON and "never" in text, for both times.
  auto time_field = [](Json& j, const char* name, const std::string& iso) {
    j.key(name);
    if (iso.empty())
      j.w().Null();
    else
      j.str(iso);
  };
  if (g.json || format == "json") {
    Json j;
    j.w().StartObject();
    j.field("directory", s.dir.string());
    for (const auto& r : counters) j.field(std::string(r.name), r.value);
    for (const auto& r : gauges) j.field(std::string(r.name), r.value);
    j.field("hit_rate", st.hit_rate());
    j.key("categories");
    j.w().StartObject();
    for (const auto& [c, n] : st.categories) j.field(c, n);
    j.w().EndObject();
    time_field(j, "last_updated", snap ? snap->last_updated : std::string());
    time_field(j, "last_zeroed", snap ? snap->last_zeroed : std::string());
    j.w().EndObject();
    output = j.text();
  } else if (format == "prometheus") {
    output = prometheus_text(s, st);
  } else {
    Table t({"COUNTER", "VALUE"}, {false, true});
    for (const auto& r : counters) t.add({std::string(r.name), std::to_string(r.value)});
    for (const auto& r : gauges) t.add({std::string(r.name), std::to_string(r.value)});
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

// ---------------------------------------------------------------------------------------- ls

int cmd_ls(const Globals& g, const LsOptions& o) {
  std::optional<larder::EntryStatus> want;
  if (!o.status.empty() && !(want = parse_status(o.status)))
    throw Failure{kExitUsage, fmt::format("--status must be fresh, stale, expired or invalid, "
                                          "not '{}'",
                                          o.status)};
  if (o.sort != "key" && o.sort != "age" && o.sort != "size" && o.sort != "hits")
    throw Failure{kExitUsage,
                  fmt::format("--sort must be key, age, size or hits, not '{}'", o.sort)};
  Session s = open_session(g, locate(g, true));
  std::vector<std::string> keys = o.category.empty()
                                      ? s.service->keys(s.scope)
                                      : s.service->keys_in_category(o.category, s.scope);
  if (!o.pattern.empty())
    std::erase_if(keys, [&](const std::string& k) {
      return !larder::util::glob_match(o.pattern, s.user_key(k));
    });
  std::vector<larder::Entry> entries = inspect_all(s, keys, false, g, "reading");
  for (auto& e : entries) e.info.key = s.user_key(e.info.key);
  if (want) std::erase_if(entries, [&](const larder::Entry& e) { return e.info.status != *want; });
  auto by = [&](auto f) {
    std::stable_sort(
        entries.begin(), entries.end(),
        [&](const larder::Entry& a, const larder::Entry& b) { return f(a.info, b.info); });
  };
  if (o.sort == "age")  // oldest first
    by([](const auto& a, const auto& b) { return a.created_at < b.created_at; });
  else if (o.sort == "size")  // largest first
    by([](const auto& a, const auto& b) { return a.size_bytes > b.size_bytes; });
  else if (o.sort == "hits")  // most accessed first
    by([](const auto& a, const auto& b) { return a.access_count > b.access_count; });
  if (o.limit > 0 && entries.size() > o.limit) entries.resize(o.limit);

  if (g.json) {
    Json j;
    j.w().StartArray();
    for (const auto& e : entries) entry_json(j, e.info);
    j.w().EndArray();
    out(j.text());
    return kExitOk;
  }
  const Style st = style_for(g);
  if (!o.long_format) {
    std::string text;
    for (const auto& e : entries) text += printable_value(e.info.key) + "\n";
    out(text);
    return kExitOk;
  }
  Table t({"STATUS", "SIZE", "AGE", "TTL LEFT", "HITS", "CATEGORY", "KEY"},
          {false, true, true, true, true, false, false});
  for (const auto& e : entries) {
    const auto left = e.info.remaining_ttl_seconds();
    t.add({status_word(st, e.info.status), human_size(e.info.size_bytes),
           human_duration(e.info.age_seconds()), left ? human_duration(*left) : "-",
           std::to_string(e.info.access_count), printable_value(e.info.category),
           printable_value(e.info.key)});
  }
  out(t.render());
  return kExitOk;
}

// --------------------------------------------------------------------------------------- get

int cmd_get(const Globals& g, const GetOptions& o) {
  Session s = open_session(g, locate(g, true));
  auto found = s.service->inspect({s.key(o.key)}, !o.meta);
  if (found[0]) found[0]->info.key = o.key;
  if (!found[0]) throw Failure{kExitNotFound, fmt::format("no entry '{}'", o.key)};
  const larder::Entry& e = *found[0];
  if (o.meta) {
    if (g.json) {
      Json j;
      entry_json(j, e.info);
      out(j.text());
      return kExitOk;
    }
    const Style st = style_for(g);
    const auto left = e.info.remaining_ttl_seconds();
    std::string text;
    text += fmt::format("{:<14}{}\n", "key", printable_value(e.info.key));
    text += fmt::format("{:<14}{}\n", "status", status_word(st, e.info.status));
    text += fmt::format("{:<14}{}\n", "category", printable_value(e.info.category));
    text += fmt::format("{:<14}{} ({} bytes)\n", "size", human_size(e.info.size_bytes),
                        e.info.size_bytes);
    text += fmt::format("{:<14}{} ({} ago)\n", "created", iso(e.info.created_at),
                        human_duration(e.info.age_seconds()));
    text += fmt::format("{:<14}{}\n", "expires",
                        e.info.expires_at ? fmt::format("{} (in {})", iso(*e.info.expires_at),
                                                        human_duration(*left))
                                          : std::string("never"));
    text += fmt::format("{:<14}{}\n", "accesses", e.info.access_count);
    text += fmt::format("{:<14}{}\n", "last access", iso(e.info.last_accessed));
    for (const auto& [k, v] : e.info.metadata)
      text += fmt::format("{:<14}{} = {}\n", "metadata", printable_value(k), printable_value(v));
    out(text);
    return kExitOk;
  }
  if (e.info.status != larder::EntryStatus::fresh)
    throw Failure{kExitNotFound,
                  fmt::format("'{}' is {}: the cache would not return it (see get --meta)", o.key,
                              larder::core::to_string(e.info.status))};
  if (o.raw) {
    out(e.value);
  } else if (g.json) {
    Json j;
    j.w().StartObject();
    j.field("key", e.info.key);
    j.field("value_base64", base64_encode(e.value));
    if (printable_text(e.value)) j.field("value", e.value);
    j.w().EndObject();
    out(j.text());
  } else {
    std::string v = printable_value(e.value);
    if (v.empty() || v.back() != '\n') v += '\n';
    out(v);
  }
  return kExitOk;
}

// --------------------------------------------------------------------------------------- set

namespace {

// --ttl in milliseconds: the cache's default when empty; decimal seconds ("90", "0.25"), whole
// milliseconds ("250ms") or an age ("30m", "2h 30m", "1d").
std::int64_t ttl_ms_of(const Session& s, const std::string& text) {
  if (text.empty()) return std::stoll(setting(s, "default_ttl_ms"));
  if (auto ms = parse_ttl_ms(text)) return *ms;
  throw Failure{
      kExitUsage,
      fmt::format("--ttl '{}' is not a duration (e.g. 90, 0.5, 250ms, 30m, 2h, 1d)", text)};
}

// The request for `o`'s key, category and metadata (checked as the library checks them).
larder::core::SetRequest request_of(const SetOptions& o) {
  if (!larder::core::valid_user_key(o.key))
    throw Failure{kExitUsage, fmt::format("the key must be 1 to {} bytes", larder::kMaxKeyBytes)};
  if (!larder::core::valid_category(o.category))
    throw Failure{kExitUsage, fmt::format("the category must be at most {} bytes without NUL",
                                          larder::kMaxCategoryBytes)};
  larder::core::SetRequest q;
  q.key = o.key;
  q.category = o.category;
  for (const auto& kv : o.meta) {
    const auto eq = kv.find('=');
    if (eq == std::string::npos || eq == 0)
      throw Failure{kExitUsage, fmt::format("--meta '{}' is not KEY=VALUE", kv)};
    q.metadata[kv.substr(0, eq)] = kv.substr(eq + 1);
  }
  return q;
}

}  // namespace

int cmd_set(const Globals& g, const SetOptions& o) {
  if (o.has_value == !o.file.empty())
    throw Failure{kExitUsage, "give the value either as an argument or with --file, not both"};
  larder::core::SetRequest q = request_of(o);
  if (o.has_value) {
    q.value = o.value;
  } else if (o.file == "-") {
    q.value.assign(std::istreambuf_iterator<char>(std::cin), std::istreambuf_iterator<char>());
  } else {
    auto content = larder::util::read_file(o.file);
    if (!content)
      throw Failure{kExitUsage, fmt::format("cannot read --file {}: {}", o.file, content.error())};
    q.value = std::move(*content);
  }
  Session s = open_session(g, locate(g, true));
  s.require_writable("set an entry");
  q.key = s.key(q.key);
  q.ttl_ms = ttl_ms_of(s, o.ttl);
  if (o.if_absent && !s.service->add(q))
    throw Failure{kExitNotFound,
                  fmt::format("'{}' not stored: a fresh entry exists (or the cache refused it: "
                              "see set without --if-absent)",
                              o.key)};
  if (!o.if_absent && !s.service->set(q))
    throw Failure{kExitNotFound,
                  fmt::format("the cache refused '{}' (larger than max_size_bytes {}, a ttl-policy "
                              "cache full of live entries, or a storage error: see status)",
                              o.key, setting(s, "max_size_bytes"))};
  info(g, fmt::format("stored '{}' ({} bytes)", o.key, q.value.size()));
  return kExitOk;
}

int cmd_touch(const Globals& g, const std::string& key, const std::string& ttl) {
  if (!larder::core::valid_user_key(key))
    throw Failure{kExitUsage, fmt::format("the key must be 1 to {} bytes", larder::kMaxKeyBytes)};
  Session s = open_session(g, locate(g, true));
  s.require_writable("touch an entry");
  const std::int64_t ttl_ms = ttl_ms_of(s, ttl);
  if (!s.service->touch(s.key(key), ttl_ms))
    throw Failure{kExitNotFound, fmt::format("no fresh entry '{}'", key)};
  info(g, ttl_ms == 0 ? fmt::format("'{}' never expires now", key)
                      : fmt::format("'{}' expires in {}", key,
                                    human_duration(static_cast<double>(ttl_ms) / 1000.0)));
  return kExitOk;
}

int cmd_incr(const Globals& g, const SetOptions& o, std::int64_t delta) {
  larder::core::SetRequest q = request_of(o);
  Session s = open_session(g, locate(g, true));
  s.require_writable("increment a counter");
  q.key = s.key(q.key);
  q.ttl_ms = ttl_ms_of(s, o.ttl);
  const auto v = s.service->incr(q, delta);
  if (!v)
    throw Failure{kExitNotFound,
                  fmt::format("'{}' not incremented: its value is not a decimal 64-bit integer, "
                              "the sum overflows, or the cache refused the write",
                              o.key)};
  if (g.json) {
    Json j;
    j.w().StartObject();
    j.field("key", o.key);
    j.key("value");
    j.w().Int64(*v);
    j.w().EndObject();
    out(j.text());
  } else {
    out(fmt::format("{}\n", *v));
  }
  return kExitOk;
}

// ---------------------------------------------------------------------------- rm, invalidate

int cmd_rm(const Globals& g, const std::vector<std::string>& keys) {
  Session s = open_session(g, locate(g, true));
  s.require_writable("remove entries");
  std::vector<std::string> missing;
  std::size_t removed = 0;
  for (const auto& k : keys) {
    if (s.service->remove(s.key(k)))
      ++removed;
    else
      missing.push_back(k);
  }
  if (g.json) {
    Json j;
    j.w().StartObject();
    j.field("removed", static_cast<std::uint64_t>(removed));
    j.key("not_found");
    j.w().StartArray();
    for (const auto& k : missing) j.str(k);
    j.w().EndArray();
    j.w().EndObject();
    out(j.text());
  } else {
    info(g, fmt::format("removed {} of {}", removed, keys.size()));
  }
  if (!missing.empty())
    throw Failure{
        kExitNotFound,
        fmt::format("no entry '{}'{}", missing.front(),
                    missing.size() > 1 ? fmt::format(" (and {} more)", missing.size() - 1) : "")};
  return kExitOk;
}

namespace {

int print_count(const Globals& g, const char* name, std::uint64_t n, const std::string& line) {
  if (g.json) {
    Json j;
    j.w().StartObject();
    j.field(name, n);
    j.w().EndObject();
    out(j.text());
  } else {
    info(g, line);
  }
  return kExitOk;
}

}  // namespace

int cmd_invalidate(const Globals& g, const InvalidateOptions& o) {
  const int given = !o.key.empty() + !o.category.empty() + !o.pattern.empty();
  if (given != 1) throw Failure{kExitUsage, "give exactly one of --key, --category and --pattern"};
  Session s = open_session(g, locate(g, true));
  s.require_writable("invalidate entries");
  std::uint64_t n = 0;
  if (!o.key.empty()) {
    if (!s.service->invalidate(s.key(o.key)))
      throw Failure{kExitNotFound, fmt::format("no valid entry '{}'", o.key)};
    n = 1;
  } else if (!o.category.empty()) {
    n = s.service->invalidate_category(o.category, s.scope);
  } else {
    n = s.service->invalidate_pattern(o.pattern, s.scope);
  }
  return print_count(g, "invalidated", n, fmt::format("invalidated {} entries", n));
}

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

// ---------------------------------------------------------------------------- export, import

int cmd_export(const Globals& g, const std::string& file) {
  Session s = open_session(g, locate(g, true));
  const std::vector<std::string> keys = s.service->keys(s.scope);
  const bool to_stdout = file == "-";
  const fs::path tmp = to_stdout ? fs::path() : fs::path(file + ".tmp");
  std::ofstream f;
  if (!to_stdout) {
    f.open(tmp, std::ios::binary | std::ios::trunc);
    if (!f) throw Failure{kExitUsage, fmt::format("cannot write {}", tmp.string())};
  }
  std::ostream& o = to_stdout ? std::cout : f;
  std::uint64_t written = 0, skipped = 0;
  Progress progress("exporting", keys.size(), progress_wanted(g) && !to_stdout);
  in_batches(keys, progress, [&](const std::vector<std::string>& batch) {
    for (auto& e : s.service->inspect(batch, true)) {
      if (!e) continue;  // removed meanwhile
      if (e->info.status != larder::EntryStatus::fresh) {
        ++skipped;
        continue;
      }
      rapidjson::StringBuffer buf;
      rapidjson::Writer<rapidjson::StringBuffer> w(buf);
      auto str = [&](std::string_view v) {
        w.String(v.data(), static_cast<rapidjson::SizeType>(v.size()));
      };
      w.StartObject();
      w.Key("key");
      str(s.user_key(e->info.key));
      w.Key("value");
      str(base64_encode(e->value));
      w.Key("category");
      str(e->info.category);
      w.Key("metadata");
      w.StartObject();
      for (const auto& [k, v] : e->info.metadata) {
        w.Key(k.data(), static_cast<rapidjson::SizeType>(k.size()));
        str(v);
      }
      w.EndObject();
      w.Key("ttl");  // seconds left, to the millisecond (at least 1 ms)
      if (auto left = e->info.remaining_ttl_seconds())
        w.Double(std::max(0.001, std::ceil(*left * 1000.0) / 1000.0));
      else
        w.Null();
      w.Key("created_at");
      str(iso(e->info.created_at));
      w.EndObject();
      o.write(buf.GetString(), static_cast<std::streamsize>(buf.GetSize()));
      o.put('\n');
      ++written;
    }
  });
  o.flush();
  if (!to_stdout) {
    f.close();
    std::error_code ec;
    if (!f || (fs::rename(tmp, file, ec), ec)) {
      fs::remove(tmp, ec);
      throw Failure{kExitUsage, fmt::format("cannot write {}", file)};
    }
  }
  if (g.json && !to_stdout) {
    Json j;
    j.w().StartObject();
    j.field("exported", written);
    j.field("skipped_not_fresh", skipped);
    j.w().EndObject();
    out(j.text());
  } else {
    info(g, fmt::format("exported {} entries{}", written,
                        skipped ? fmt::format(" ({} not fresh, left out)", skipped) : ""));
  }
  return kExitOk;
}

namespace {

// One line of an export file, checked; throws Failure (2) naming the line and the problem.
larder::core::SetRequest parse_line(const std::string& where, const std::string& line,
                                    std::int64_t default_ttl) {
  rapidjson::Document d;
  d.Parse(line.data(), line.size());
  auto bad = [&](const std::string& why) { return Failure{kExitUsage, where + ": " + why}; };
  if (d.HasParseError()) throw bad(fmt::format("not JSON (at byte {})", d.GetErrorOffset()));
  if (!d.IsObject()) throw bad("not a JSON object");
  const rapidjson::Document& cd = d;  // const iterators on both sides of == (clang, C++20)
  larder::core::SetRequest q;
  auto text = [&](const char* name, std::string* outv, bool required) {
    auto it = cd.FindMember(name);
    if (it == cd.MemberEnd()) {
      if (required) throw bad(fmt::format("'{}' is missing", name));
      return false;
    }
    if (!it->value.IsString()) throw bad(fmt::format("'{}' is not a string", name));
    outv->assign(it->value.GetString(), it->value.GetStringLength());
    return true;
  };
  text("key", &q.key, true);
  if (!larder::core::valid_user_key(q.key))
    throw bad(fmt::format("'key' must be 1 to {} bytes", larder::kMaxKeyBytes));
  std::string encoded;
  text("value", &encoded, true);
  if (!base64_decode(encoded, &q.value)) throw bad("'value' is not base64");
  if (!text("category", &q.category, false)) q.category = "default";
  if (!larder::core::valid_category(q.category)) throw bad("'category' is not a valid category");
  if (auto m = cd.FindMember("metadata"); m != cd.MemberEnd()) {
    if (!m->value.IsObject()) throw bad("'metadata' is not an object");
    for (auto it = m->value.MemberBegin(); it != m->value.MemberEnd(); ++it) {
      if (!it->value.IsString()) throw bad("'metadata' values must be strings");
      q.metadata[std::string(it->name.GetString(), it->name.GetStringLength())] =
          std::string(it->value.GetString(), it->value.GetStringLength());
    }
  }
  q.ttl_ms = default_ttl;
  if (auto t = cd.FindMember("ttl"); t != cd.MemberEnd()) {
    if (t->value.IsNull())
      q.ttl_ms = 0;
    else if (const auto ms = t->value.IsNumber() && t->value.GetDouble() > 0
                                 ? larder::ttl_from_seconds(t->value.GetDouble())
                                 : std::nullopt)
      q.ttl_ms = ms->count();
    else
      throw bad("'ttl' must be a positive number of seconds (at most 1e12) or null");
  }
  return q;
}

}  // namespace

int cmd_import(const Globals& g, const std::string& file) {
  std::string content;
  if (file == "-") {
    content.assign(std::istreambuf_iterator<char>(std::cin), std::istreambuf_iterator<char>());
  } else if (auto read = larder::util::read_file(file); !read) {
    throw Failure{kExitUsage, fmt::format("cannot read {}: {}", file, read.error())};
  } else {
    content = std::move(*read);
  }
  Session s = open_session(g, locate(g, true));
  s.require_writable("import entries");
  const std::int64_t default_ttl = std::stoll(setting(s, "default_ttl_ms"));
  // Every line is checked before anything is stored: a bad file imports nothing.
  std::vector<larder::core::SetRequest> items;
  std::size_t line_no = 0, pos = 0;
  while (pos < content.size()) {
    std::size_t end = content.find('\n', pos);
    if (end == std::string::npos) end = content.size();
    std::string line = content.substr(pos, end - pos);
    pos = end + 1;
    ++line_no;
    if (!line.empty() && line.back() == '\r') line.pop_back();
    if (line.find_first_not_of(" \t") == std::string::npos) continue;
    items.push_back(
        parse_line(fmt::format("{}:{}", file == "-" ? "stdin" : file, line_no), line, default_ttl));
  }
  std::uint64_t stored = 0;
  std::vector<std::string> refused;
  {
    Progress progress("importing", items.size(), progress_wanted(g));
    for (auto& item : items) item.key = s.key(item.key);
    in_batches(items, progress, [&](const std::vector<larder::core::SetRequest>& batch) {
      const std::vector<bool> ok = s.service->set_many(batch);
      for (std::size_t k = 0; k < batch.size(); ++k) {
        if (k < ok.size() && ok[k])
          ++stored;
        else
          refused.push_back(s.user_key(batch[k].key));
      }
    });
  }
  if (g.json) {
    Json j;
    j.w().StartObject();
    j.field("imported", stored);
    j.key("refused");
    j.w().StartArray();
    for (const auto& k : refused) j.str(k);
    j.w().EndArray();
    j.w().EndObject();
    out(j.text());
  } else {
    info(g, fmt::format("imported {} of {} entries", stored, items.size()));
  }
  if (!refused.empty())
    throw Failure{kExitNotFound,
                  fmt::format("the cache refused {} entries (first: '{}'): too large for "
                              "max_size_bytes, a full ttl-policy cache, or storage errors",
                              refused.size(), refused.front())};
  return kExitOk;
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
