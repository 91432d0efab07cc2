// cachectl's commands. Each takes the global options and its own, prints its result (a table or
// text on a terminal, JSON with --json) and returns the exit code; failures throw Failure
// (target.hpp) with the code and the one line to print. docs/cachectl.md is the manual.
//
// Thread-safety: run from cachectl's main thread only.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "target.hpp"

namespace cachectl {

struct LsOptions {
  std::string category, pattern, status, sort = "key";
  std::uint64_t limit = 0;  // 0: all
  bool long_format = false;
};

struct GetOptions {
  std::string key;
  bool meta = false, raw = false;
};

struct SetOptions {
  std::string key, value, file, ttl, category = "default";
  std::vector<std::string> meta;  // k=v
  bool has_value = false;
  bool if_absent = false;  // only when no fresh entry is stored (Cache::add)
};

struct InvalidateOptions {
  std::string key, category, pattern;
};

struct LimitsOptions {
  std::optional<std::uint64_t> max_entries;
  std::string max_size;  // "" : not given
  bool reset = false;
};

struct InitOptions {
  std::string policy;  // "": the default (lru)
  std::optional<std::uint64_t> max_entries;
  std::string max_size;  // "": the default
};

struct ServeOptions {
  std::string listen;  // ADDRESS:PORT ("": 127.0.0.1:8437)
  std::string socket;  // a Unix socket path instead
  std::string tokens;  // the tokens file ("": none; then loopback or a socket only)
};

int cmd_status(const Globals& g);
// The statistics as `cachectl stats` prints them in Prometheus's text format and in JSON (the
// Stats fields by their names, hit_rate, the limits, categories and when they were last written
// and zeroed); `cachectl serve` serves the same texts.
std::string prometheus_text(const Session& s, const larder::Stats& st);
std::string stats_json(const Session& s, const larder::Stats& st);
// `output_file` not empty: written atomically (a temporary file renamed over it), mode 0644, as
// node-exporter's textfile collector wants.
int cmd_stats(const Globals& g, const std::string& format, bool zero,
              const std::string& output_file);
int cmd_ls(const Globals& g, const LsOptions& o);
int cmd_get(const Globals& g, const GetOptions& o);
int cmd_set(const Globals& g, const SetOptions& o);
int cmd_touch(const Globals& g, const std::string& key, const std::string& ttl);
// Uses o's key, ttl, category and meta (for a counter it creates).
int cmd_incr(const Globals& g, const SetOptions& o, std::int64_t delta);
int cmd_rm(const Globals& g, const std::vector<std::string>& keys);
int cmd_invalidate(const Globals& g, const InvalidateOptions& o);
int cmd_clear(const Globals& g, const std::string& category);
int cmd_cleanup(const Globals& g);
int cmd_evict_older_than(const Globals& g, const std::string& age);
int cmd_compact(const Globals& g);
int cmd_gc(const Globals& g, bool dry_run, const std::string& min_age);
int cmd_verify(const Globals& g, bool repair);
int cmd_export(const Globals& g, const std::string& file);
int cmd_import(const Globals& g, const std::string& file);
// Creates a cache at --root (exit 1 if one is there); limits given are set as cachectl limits.
int cmd_init(const Globals& g, const InitOptions& o);
// Serves the cache over HTTP until SIGINT or SIGTERM (docs/cachectl.md, "serve"); prints the
// address it listens on first.
int cmd_serve(const Globals& g, const ServeOptions& o);
// Shows the limits in force, or changes them (persisted; they replace programs' configured ones).
int cmd_limits(const Globals& g, const LimitsOptions& o);

}  // namespace cachectl
