// What cachectl's commands share (commands_*.cpp): output, styles, time formats, settings,
// batches and JSON of entries. Private to tools/cachectl.
#pragma once

#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <ctime>
#include <fstream>
#include <iostream>
#include <iterator>

#include <fmt/format.h>

#include "api/access.hpp"
#include "api/config.hpp"
#include "commands.hpp"
#include "core/config.hpp"
#include "larder/larder.hpp"
#include "output.hpp"
#include "stats/stats_file.hpp"
#include "util/fs.hpp"
#include "util/glob.hpp"
#include "util/json.hpp"
#include "util/lock_file.hpp"

namespace cachectl::detail {

using larder::core::AdminCommand;
using larder::core::AdminResult;
using Clock = std::chrono::system_clock;

constexpr std::size_t kBatch = 500;  // keys per inspect / set_many round trip

inline void out(const std::string& text) {
  std::fwrite(text.data(), 1, text.size(), stdout);
}

// Informational lines (suppressed by -q); results go through out().
inline void info(const Globals& g, const std::string& line) {
  if (!g.quiet) std::fprintf(stderr, "%s\n", line.c_str());
}

inline Style style_for(const Globals& g) {
  Style s;
  s.color =
      !g.no_color && !g.json && ::isatty(STDOUT_FILENO) == 1 && std::getenv("NO_COLOR") == nullptr;
  return s;
}

inline bool progress_wanted(const Globals& g) {
  return !g.quiet;
}

inline std::string status_word(const Style& st, larder::EntryStatus s) {
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

inline std::optional<larder::EntryStatus> parse_status(std::string_view s) {
  for (auto v : {larder::EntryStatus::fresh, larder::EntryStatus::stale,
                 larder::EntryStatus::expired, larder::EntryStatus::invalid})
    if (s == larder::core::to_string(v)) return v;
  return std::nullopt;
}

inline std::string iso(Clock::time_point t) {
  return larder::util::iso8601_utc(t);
}

inline std::optional<Clock::time_point> parse_iso(const std::string& s) {
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
inline std::optional<larder::stats::Snapshot> read_snapshot(const fs::path& dir) {
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

inline Disk disk_usage(const fs::path& db) {
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

inline std::uint64_t setting_u64(const Session& s, const std::string& name) {
  auto it = s.settings.find(name);
  return it == s.settings.end() ? 0 : std::stoull(it->second);
}

inline std::string setting(const Session& s, const std::string& name) {
  auto it = s.settings.find(name);
  return it == s.settings.end() ? std::string() : it->second;
}

// The owner's pid of a shared cache as its lock file names it ("" when unknown).
inline std::string lock_holder(const fs::path& root) {
  larder::util::LockFile lock;
  if (!lock.open(root / ".larder.lock", larder::util::Create::no)) return {};
  return lock.read_content();
}

inline std::string field_of(const std::string& content, std::string_view name) {
  const auto pos = content.find(std::string(name) + "=");
  if (pos == std::string::npos) return {};
  const auto start = pos + name.size() + 1;
  const auto end = content.find('\n', start);
  return content.substr(start, end == std::string::npos ? std::string::npos : end - start);
}

inline void entry_json(Json& j, const larder::EntryInfo& e) {
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
inline std::vector<larder::Entry> inspect_all(const Session& s,
                                              const std::vector<std::string>& keys,
                                              bool with_values, const Globals& g,
                                              const char* label) {
  std::vector<larder::Entry> out;
  Progress progress(label, keys.size(), progress_wanted(g) && keys.size() > kBatch);
  in_batches(keys, progress, [&](const std::vector<std::string>& batch) {
    for (auto& e : s.service->inspect(batch, with_values))
      if (e) out.push_back(std::move(*e));
  });
  return out;
}

inline std::string printable_value(const std::string& v) {
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

inline std::string prom_label(std::string_view v) {
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

// Prints a count: {"<name>": n} with --json, else `line`. Returns kExitOk.
inline int print_count(const Globals& g, const char* name, std::uint64_t n,
                       const std::string& line) {
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

}  // namespace cachectl::detail
