// cachectl: inspect and maintain larder caches (docs/cachectl.md is the manual).
//
// Exit codes: 0 success; 1 not found (or refused, or verify found problems); 2 usage error or
// bad input; 3 not a larder cache or it cannot be opened. Errors are one line on stderr.
#include <cstdio>
#include <cstdlib>
#include <exception>
#include <string>
#include <vector>

#include <CLI/CLI.hpp>

#include "commands.hpp"
#include "target.hpp"

namespace {

constexpr const char* kFooter =
    "Exit codes: 0 success, 1 not found / refused / problems found, 2 usage error or bad "
    "input, 3 not a larder cache or it cannot be opened. Manual: docs/cachectl.md, man cachectl.";

}  // namespace

int main(int argc, char** argv) {
  using namespace cachectl;
  CLI::App app{"cachectl: inspect and maintain larder caches"};
  app.footer(kFooter);
  app.require_subcommand(1);
  app.fallthrough();

  Globals g;
  app.add_option("--root", g.root,
                 "Cache root (default: $XDG_CACHE_HOME/larder or ~/.cache/larder)");
  app.add_option("--strategy", g.strategy,
                 "shared or process_isolated (default: what --root holds)")
      ->check(CLI::IsMember({"shared", "process_isolated"}));
  app.add_option("--pid", g.pid, "Which proc_<PID> directory of a process_isolated cache");
  app.add_option("--ns", g.ns, "Work in this namespace of the cache (Cache::ns)");
  if (const char* r = std::getenv("LARDER_REMOTE")) g.remote = r;
  app.add_option("--remote", g.remote,
                 "The remote tier's URL, as Config::remote (default: LARDER_REMOTE)");
  app.add_flag("--json", g.json, "Machine-readable output (stable JSON)");
  app.add_flag("--no-color", g.no_color, "No colours (also when NO_COLOR is set)");
  app.add_flag("-q,--quiet", g.quiet, "Only results and errors; no progress or notes");
  app.add_flag("-v,--verbose", g.verbose, "Show larder's log lines (-vv: debug)");
  app.add_option("--timeout", g.timeout_ms,
                 "Milliseconds to wait for a shared cache's owner per call (default 10000)")
      ->check(CLI::Range(std::int64_t{10}, std::int64_t{3'600'000}));

  int code = kExitOk;
  std::function<int()> run;

  auto* status = app.add_subcommand(
      "status", "Where the cache is, who serves it, how full and how well it works");
  status->callback([&] { run = [&] { return cmd_status(g); }; });

  std::string format = "text";
  bool zero = false;
  auto* stats = app.add_subcommand("stats", "All counters");
  stats->add_option("--format", format, "text, json or prometheus");
  stats->add_flag("--zero", zero, "Reset the counters to zero (records when)");
  std::string stats_output;
  stats->add_option("--output", stats_output,
                    "Write to this file atomically (for node-exporter's textfile collector)");
  stats->callback([&] { run = [&] { return cmd_stats(g, format, zero, stats_output); }; });

  LsOptions ls;
  auto* lsc = app.add_subcommand("ls", "List entries");
  lsc->add_option("--category", ls.category, "Only this category");
  lsc->add_option("--pattern", ls.pattern, "Only keys matching this glob (* ? [...] \\)");
  lsc->add_option("--status", ls.status, "Only fresh, stale, expired or invalid entries");
  lsc->add_option("--sort", ls.sort,
                  "key (default), age (oldest first), size or hits (largest first)");
  lsc->add_option("--limit", ls.limit, "At most N entries (after sorting)");
  lsc->add_flag("-l,--long", ls.long_format, "Status, size, age, TTL left, hits and category");
  lsc->callback([&] { run = [&] { return cmd_ls(g, ls); }; });

  GetOptions get;
  auto* getc = app.add_subcommand("get", "Print a fresh entry's value (exit 1 if there is none)");
  getc->add_option("KEY", get.key, "The key")->required();
  getc->add_flag("--meta", get.meta, "Print the entry's information instead (any status)");
  getc->add_flag("--raw", get.raw, "Write the value's bytes exactly as stored");
  getc->callback([&] { run = [&] { return cmd_get(g, get); }; });

  SetOptions set;
  auto* setc = app.add_subcommand("set", "Store an entry");
  setc->add_option("KEY", set.key, "The key")->required();
  auto* value_opt = setc->add_option("VALUE", set.value, "The value (or use --file)");
  setc->add_option("--file", set.file, "Read the value from this file ('-': stdin)");
  setc->add_option(
      "--ttl", set.ttl,
      "Time to live: seconds (0.5 too), 250ms, 30m, 2h, 1d; 0: never expires (default: the "
      "cache's)");
  setc->add_option("--category", set.category, "Category (default: default)");
  setc->add_option("--meta", set.meta, "Metadata KEY=VALUE (repeatable)");
  setc->add_flag("--if-absent", set.if_absent,
                 "Only if no fresh entry is stored (exit 1 if one is); atomic");
  setc->callback([&] {
    set.has_value = value_opt->count() > 0;
    run = [&] { return cmd_set(g, set); };
  });

  std::string touch_key, touch_ttl;
  auto* touchc = app.add_subcommand(
      "touch", "Give a fresh entry a new TTL from now, keeping its value (exit 1 if none)");
  touchc->add_option("KEY", touch_key, "The key")->required();
  touchc->add_option("--ttl", touch_ttl, "Seconds (0.5 too), 250ms, 30m, 2h, 1d; 0: never expires")
      ->required();
  touchc->callback([&] { run = [&] { return cmd_touch(g, touch_key, touch_ttl); }; });

  SetOptions counter;
  std::int64_t delta = 1;
  auto* incrc = app.add_subcommand(
      "incr", "Add DELTA (default 1) to a decimal counter and print the sum; atomic");
  incrc->add_option("KEY", counter.key, "The key (missing: counts as 0)")->required();
  incrc->add_option("DELTA", delta, "What to add (may be negative)");
  incrc->add_option("--ttl", counter.ttl, "TTL of a counter this creates (default: the cache's)");
  incrc->add_option("--category", counter.category, "Category of a counter this creates");
  incrc->add_option("--meta", counter.meta, "Metadata KEY=VALUE of a counter this creates");
  incrc->callback([&] { run = [&] { return cmd_incr(g, counter, delta); }; });

  std::vector<std::string> rm_keys;
  auto* rm = app.add_subcommand("rm", "Remove entries (exit 1 if one was not there)");
  rm->add_option("KEY", rm_keys, "Keys to remove")->required();
  rm->callback([&] { run = [&] { return cmd_rm(g, rm_keys); }; });

  InvalidateOptions inv;
  auto* invc = app.add_subcommand("invalidate",
                                  "Mark entries invalid (one of --key, --category, --pattern)");
  invc->add_option("--key", inv.key, "One key");
  invc->add_option("--category", inv.category, "Every entry of a category");
  invc->add_option("--pattern", inv.pattern, "Every key matching a glob");
  invc->callback([&] { run = [&] { return cmd_invalidate(g, inv); }; });

  std::string clear_category;
  auto* clear = app.add_subcommand("clear", "Remove every entry (or one category's)");
  clear->add_option("--category", clear_category, "Only this category");
  clear->callback([&] { run = [&] { return cmd_clear(g, clear_category); }; });

  auto* cleanup = app.add_subcommand("cleanup", "Remove expired and invalid entries");
  cleanup->callback([&] { run = [&] { return cmd_cleanup(g); }; });

  std::string age;
  auto* evict = app.add_subcommand(
      "evict-older-than", "Remove entries created more than AGE ago (counted as evictions)");
  evict->add_option("AGE", age, "45s, 30m, 3h, 2d, 1w or sums like 1d12h")->required();
  evict->callback([&] { run = [&] { return cmd_evict_older_than(g, age); }; });

  auto* compact =
      app.add_subcommand("compact", "Compact the store (reclaims disk space after large deletes)");
  compact->callback([&] { run = [&] { return cmd_compact(g); }; });

  bool dry_run = false;
  std::string min_age = "0";
  auto* gc = app.add_subcommand(
      "gc", "Remove proc_<pid> directories of processes that are gone (lock-proven)");
  gc->add_flag("--dry-run,-n", dry_run, "Only list what would be removed");
  gc->add_option("--min-age", min_age, "Only directories not modified for this long (default 0)");
  gc->callback([&] { run = [&] { return cmd_gc(g, dry_run, min_age); }; });

  bool repair = false;
  auto* verify = app.add_subcommand(
      "verify", "Check the store against its counters and indexes (exit 1 on problems)");
  verify->add_flag("--repair", repair, "Rebuild indexes and counters when problems are found");
  verify->callback([&] { run = [&] { return cmd_verify(g, repair); }; });

  std::string export_file;
  auto* exp = app.add_subcommand("export", "Write fresh entries as JSON Lines (value in base64)");
  exp->add_option("FILE", export_file, "Output file ('-': stdout); replaced atomically")
      ->required();
  exp->callback([&] { run = [&] { return cmd_export(g, export_file); }; });

  std::string import_file;
  auto* imp = app.add_subcommand(
      "import", "Store the entries of a JSON Lines file (all lines are checked first)");
  imp->add_option("FILE", import_file, "Input file ('-': stdin)")->required();
  imp->callback([&] { run = [&] { return cmd_import(g, import_file); }; });

  InitOptions init;
  auto* initc = app.add_subcommand(
      "init", "Create a cache at --root (shared unless --strategy process_isolated)");
  initc->add_option("--policy", init.policy, "lru (default), lfu, fifo, ttl or s3fifo");
  initc->add_option("--max-entries", init.max_entries, "Entry limit (0: none)");
  initc->add_option("--max-size", init.max_size, "Size limit: bytes or 500M, 2G (0: none)");
  initc->callback([&] { run = [&] { return cmd_init(g, init); }; });

  LimitsOptions limits;
  auto* limitsc = app.add_subcommand(
      "limits", "Show or change a cache's limits (they then replace its programs' own)");
  limitsc->add_option("--max-entries", limits.max_entries, "Entry limit (0: none)");
  limitsc->add_option("--max-size", limits.max_size, "Size limit: bytes or 500M, 2G (0: none)");
  limitsc->add_flag("--reset", limits.reset, "Give the limits back to the programs' Config");
  limitsc->callback([&] { run = [&] { return cmd_limits(g, limits); }; });

  ServeOptions serve;
  auto* servec = app.add_subcommand(
      "serve", "Serve the cache over HTTP: REST API, Prometheus /metrics, a live dashboard");
  servec->add_option("--listen", serve.listen,
                     "ADDRESS:PORT to listen on (default 127.0.0.1:8437; port 0: any free one)");
  servec->add_option("--socket", serve.socket, "Listen on this Unix socket instead (mode 0600)");
  servec->add_option("--tokens", serve.tokens,
                     "Tokens file (mode 0600): lines 'TOKEN read|write|admin [ns=NAME]'");
  servec->callback([&] { run = [&] { return cmd_serve(g, serve); }; });

  try {
    app.parse(argc, argv);
  } catch (const CLI::Success& e) {
    return app.exit(e);
  } catch (const CLI::ParseError& e) {
    std::fprintf(stderr, "cachectl: %s\nRun 'cachectl --help' for usage.\n", e.what());
    return kExitUsage;
  }
  try {
    code = run();
  } catch (const Failure& f) {
    std::fprintf(stderr, "cachectl: %s\n", f.message.c_str());
    code = f.code;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "cachectl: %s\n", e.what());
    code = kExitNoCache;
  }
  std::fflush(stdout);
  return code;
}
