// cachectl driven as a program (fork/exec of the built binary) against real caches: isolated
// (the process gone, and alive: read-only), shared with a live owner in another process, and
// directories that are not caches. Checks exit codes, JSON output and what the cache holds after.
#include <doctest/doctest.h>

#include <fcntl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <fstream>
#include <set>
#include <sstream>

#include <rocksdb/db.h>

#include "util/json.hpp"

#include "child.hpp"
#include "engine/records.hpp"
#include "shared_support.hpp"
#include "stats/counters.hpp"
#include "support.hpp"
#ifdef LARDER_REDIS_SERVER
#include "remote/redis_server.hpp"
#endif

using namespace larder;
using namespace larder::test;

namespace {

struct Run {
  int code = -1;
  std::string out, err;
};

std::string slurp(const std::filesystem::path& p) {
  std::ifstream f(p, std::ios::binary);
  std::ostringstream s;
  s << f.rdbuf();
  return s.str();
}

// Runs cachectl with `args` (stdin from `input`), bounded in time; collects exit code and output.
Run cachectl(const std::vector<std::string>& args, const std::string& input = {}) {
  TempDir io;
  const auto in_path = io / "in", out_path = io / "out", err_path = io / "err";
  std::ofstream(in_path, std::ios::binary) << input;
  const pid_t pid = ::fork();
  REQUIRE(pid >= 0);
  if (pid == 0) {
    const int in = ::open(in_path.c_str(), O_RDONLY);
    const int out = ::open(out_path.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0600);
    const int err = ::open(err_path.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0600);
    ::dup2(in, STDIN_FILENO);
    ::dup2(out, STDOUT_FILENO);
    ::dup2(err, STDERR_FILENO);
    std::vector<char*> argv;
    argv.push_back(const_cast<char*>(LARDER_CACHECTL));
    for (const auto& a : args) argv.push_back(const_cast<char*>(a.c_str()));
    argv.push_back(nullptr);
    ::execv(LARDER_CACHECTL, argv.data());
    ::_exit(127);
  }
  const int status = wait_bounded(pid);
  Run r;
  r.code = status >= 0 && WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  r.out = slurp(out_path);
  r.err = slurp(err_path);
  return r;
}

std::vector<std::string> with_root(const std::filesystem::path& root,
                                   std::vector<std::string> args) {
  args.insert(args.begin(), {"--root", root.string()});
  return args;
}

rapidjson::Document json(const Run& r) {
  rapidjson::Document d;
  d.Parse(r.out.c_str());
  INFO("stdout: " << r.out << " stderr: " << r.err);
  REQUIRE_FALSE(d.HasParseError());
  return d;
}

std::size_t lines(const std::string& s) {
  return static_cast<std::size_t>(std::count(s.begin(), s.end(), '\n'));
}

Config isolated_config(const std::filesystem::path& root) {
  Config c;
  c.cache_root = root;
  c.strategy = Strategy::process_isolated;
  c.cleanup_interval = std::chrono::seconds(0);
  c.max_entries = 1000;
  c.max_size_bytes = 1 << 20;
  c.eviction_policy = EvictionPolicy::lfu;
  c.default_ttl = std::chrono::hours(5);
  return c;
}

// An isolated cache written by this process and closed again (its process is "gone").
void fill(const std::filesystem::path& root) {
  Cache c = Cache::open(isolated_config(root));
  for (int i = 0; i < 10; ++i)
    REQUIRE(c.set("page:" + std::to_string(i), "value " + std::to_string(i), ttl(3600, "pages")));
  SetOptions meta;
  meta.category = "blobs";
  meta.metadata = {{"source", "test"}};
  meta.ttl = std::chrono::seconds(0);
  REQUIRE(c.set("blob", std::string("\x00\x01\xff", 3), meta));
}

}  // namespace

TEST_CASE("cachectl: a directory that is not a cache gives exit 3 and stays untouched") {
  TempDir dir;
  const auto empty = dir / "empty";
  std::filesystem::create_directory(empty);
  std::ofstream(dir / "export.jsonl") << "{\"key\":\"a\",\"value\":\"YQ==\"}\n";
  for (const auto& args :
       std::vector<std::vector<std::string>>{{"status"},
                                             {"ls"},
                                             {"get", "a"},
                                             {"set", "a", "b"},
                                             {"verify", "--repair"},
                                             {"stats", "--zero"},
                                             {"clear"},
                                             {"compact"},
                                             {"gc"},
                                             {"export", (dir / "x").string()},
                                             {"import", (dir / "export.jsonl").string()}}) {
    const Run r = cachectl(with_root(empty, args));
    INFO(args[0] << ": " << r.err);
    CHECK(r.code == 3);
    CHECK(r.err.find("is not a larder cache") != std::string::npos);
    CHECK(lines(r.err) == 1);
    CHECK(std::filesystem::is_empty(empty));
  }
  CHECK_FALSE(std::filesystem::exists(dir / "x"));
  const Run missing = cachectl(with_root(dir / "nope", {"status"}));
  CHECK(missing.code == 3);
  CHECK(missing.err.find("does not exist") != std::string::npos);
  CHECK_FALSE(std::filesystem::exists(dir / "nope"));
  // Asking for the wrong strategy names what is there.
  fill(dir / "iso");
  const Run wrong = cachectl(with_root(dir / "iso", {"--strategy", "shared", "status"}));
  CHECK(wrong.code == 3);
  CHECK(wrong.err.find("holds process_isolated caches") != std::string::npos);
}

TEST_CASE("cachectl: usage errors give exit 2 with one line naming the problem") {
  TempDir dir;
  fill(dir.path());
  for (const auto& args :
       std::vector<std::vector<std::string>>{{"frobnicate"},
                                             {},
                                             {"invalidate"},
                                             {"invalidate", "--key", "a", "--category", "b"},
                                             {"evict-older-than", "3x"},
                                             {"ls", "--sort", "colour"},
                                             {"ls", "--status", "rotten"},
                                             {"stats", "--format", "xml"},
                                             {"set", "k"},
                                             {"set", "k", "v", "--ttl", "soon"},
                                             {"--strategy", "other", "status"}}) {
    const Run r = cachectl(with_root(dir.path(), args));
    INFO((args.empty() ? "(none)" : args[0]) << ": " << r.err);
    CHECK(r.code == 2);
    CHECK(r.err.rfind("cachectl: ", 0) == 0);
  }
  CHECK(cachectl({"--help"}).code == 0);
  CHECK(cachectl({"ls", "--help"}).out.find("--sort") != std::string::npos);
}

TEST_CASE("cachectl: every command on a process_isolated cache whose process is gone") {
  TempDir dir;
  const auto root = dir.path();
  fill(root);
  auto run = [&](std::vector<std::string> args, const std::string& input = {}) {
    return cachectl(with_root(root, std::move(args)), input);
  };

  // status adopts the store's own settings (lfu, limits, TTL) and reports the contents.
  Run r = run({"--json", "status"});
  REQUIRE(r.code == 0);
  auto d = json(r);
  CHECK(std::string(d["strategy"].GetString()) == "process_isolated");
  CHECK(d["network_filesystem"].IsNull());  // a local disk: no warning
  CHECK(std::string(d["policy"].GetString()) == "lfu");
  CHECK(d["max_entries"].GetUint64() == 1000);
  CHECK(d["max_size_bytes"].GetUint64() == 1 << 20);
  CHECK(d["default_ttl_s"].GetDouble() == 5 * 3600);
  CHECK(d["total_entries"].GetUint64() == 11);
  CHECK(d["fresh_entries"].GetUint64() == 11);
  CHECK(d["live"].GetBool() == false);
  CHECK(d["processes"].GetArray().Size() == 1);
  CHECK(d["disk"]["total_bytes"].GetUint64() > 0);
  CHECK(run({"status"}).out.find("lfu") != std::string::npos);

  // ls: filters, sorting, limits, JSON.
  r = run({"ls"});
  CHECK(r.code == 0);
  CHECK(lines(r.out) == 11);
  CHECK(lines(run({"ls", "--category", "pages"}).out) == 10);
  CHECK(run({"ls", "--pattern", "page:[12]"}).out == "page:1\npage:2\n");
  CHECK(run({"ls", "--sort", "size", "--limit", "1"}).out == "page:0\n");
  d = json(run({"--json", "ls", "--category", "blobs"}));
  REQUIRE(d.GetArray().Size() == 1);
  CHECK(std::string(d[0]["key"].GetString()) == "blob");
  CHECK(d[0]["size_bytes"].GetUint64() == 3);
  CHECK(d[0]["expires_at"].IsNull());
  CHECK(std::string(d[0]["metadata"]["source"].GetString()) == "test");
  CHECK(run({"ls", "-l"}).out.find("STATUS") != std::string::npos);

  // get: value, raw bytes, metadata, missing key.
  CHECK(run({"get", "page:3"}).out == "value 3\n");
  r = run({"get", "blob", "--raw"});
  CHECK(r.out == std::string("\x00\x01\xff", 3));
  d = json(run({"--json", "get", "blob"}));
  CHECK(std::string(d["value_base64"].GetString()) == "AAH/");
  d = json(run({"--json", "get", "page:3", "--meta"}));
  CHECK(std::string(d["category"].GetString()) == "pages");
  r = run({"get", "page:99"});
  CHECK(r.code == 1);
  CHECK(r.err == "cachectl: no entry 'page:99'\n");

  // set and rm.
  CHECK(
      run({"set", "note", "hello", "--ttl", "2h", "--category", "notes", "--meta", "by=me"}).code ==
      0);
  CHECK(run({"get", "note"}).out == "hello\n");
  d = json(run({"--json", "get", "note", "--meta"}));
  CHECK(std::string(d["metadata"]["by"].GetString()) == "me");
  CHECK(d["ttl_remaining_s"].GetDouble() > 7000);
  CHECK(run({"set", "fromfile", "--file", "-"}, "piped").code == 0);
  CHECK(run({"get", "fromfile"}).out == "piped\n");
  r = run({"--json", "rm", "fromfile", "absent"});
  CHECK(r.code == 1);
  CHECK(r.err.find("absent") != std::string::npos);
  d = json(r);
  CHECK(d["removed"].GetUint64() == 1);
  REQUIRE(d["not_found"].GetArray().Size() == 1);
  CHECK(std::string(d["not_found"][0].GetString()) == "absent");
  CHECK(run({"get", "fromfile"}).code == 1);

  // invalidate, ls --status, get of an invalid entry, cleanup.
  d = json(run({"--json", "invalidate", "--pattern", "page:[0-4]"}));
  CHECK(d["invalidated"].GetUint64() == 5);
  CHECK(lines(run({"ls", "--status", "invalid"}).out) == 5);
  r = run({"get", "page:0"});
  CHECK(r.code == 1);
  CHECK(r.err.find("invalid") != std::string::npos);
  CHECK(run({"invalidate", "--key", "page:5"}).code == 0);
  CHECK(run({"invalidate", "--key", "page:5"}).code == 1);  // already invalid
  d = json(run({"--json", "cleanup"}));
  CHECK(d["removed"].GetUint64() == 6);
  CHECK(lines(run({"ls"}).out) == 6);

  // export, clear, import: the same entries come back.
  const auto file = dir / "dump.jsonl";
  d = json(run({"--json", "export", file.string()}));
  CHECK(d["exported"].GetUint64() == 6);
  CHECK(d["skipped_not_fresh"].GetUint64() == 0);
  CHECK(lines(slurp(file)) == 6);
  CHECK(lines(run({"export", "-"}).out) == 6);  // to stdout (ttl seconds may tick)
  d = json(run({"--json", "clear", "--category", "notes"}));
  CHECK(d["removed"].GetUint64() == 1);
  d = json(run({"--json", "clear"}));
  CHECK(d["removed"].GetUint64() == 5);
  CHECK(run({"ls"}).out.empty());
  d = json(run({"--json", "import", file.string()}));
  CHECK(d["imported"].GetUint64() == 6);
  CHECK(run({"get", "blob", "--raw"}).out == std::string("\x00\x01\xff", 3));
  d = json(run({"--json", "get", "note", "--meta"}));
  CHECK(std::string(d["category"].GetString()) == "notes");
  CHECK(d["ttl_remaining_s"].GetDouble() > 7000);
  CHECK(d["ttl_remaining_s"].GetDouble() <= 7200);
  CHECK(d["expires_at"].IsString());
  d = json(run({"--json", "get", "blob", "--meta"}));
  CHECK(d["expires_at"].IsNull());

  // A bad import line names the line and imports nothing.
  std::ofstream(dir / "bad.jsonl") << "{\"key\":\"x1\",\"value\":\"YQ==\"}\n"
                                   << "{\"key\":\"x2\",\"value\":\"not base64!\"}\n";
  r = run({"import", (dir / "bad.jsonl").string()});
  CHECK(r.code == 2);
  CHECK(r.err.find("bad.jsonl:2: 'value' is not base64") != std::string::npos);
  CHECK(run({"get", "x1"}).code == 1);

  // stats, prometheus, zeroing.
  d = json(run({"stats", "--format", "json"}));
  CHECK(d["set_count"].GetUint64() > 0);
  CHECK(d["total_entries"].GetUint64() == 6);
  CHECK(d["categories"]["notes"].GetUint64() == 1);
  r = run({"stats", "--format", "prometheus"});
  CHECK(r.out.find("# TYPE larder_sets_total counter") != std::string::npos);
  CHECK(r.out.find("larder_entries{cache=\"" + (root / "proc_").string()) != std::string::npos);
  CHECK(run({"stats", "--zero"}).code == 0);
  d = json(run({"--json", "stats"}));
  CHECK(d["set_count"].GetUint64() == 0);
  CHECK(d["total_entries"].GetUint64() == 6);
  CHECK(std::string(d["last_zeroed"].GetString()).size() > 10);

  // compact keeps everything.
  CHECK(json(run({"--json", "compact"}))["disk_bytes_after"].GetUint64() > 0);
  CHECK(lines(run({"ls"}).out) == 6);

  // Opening through cachectl changed neither policy nor limits.
  Cache c = Cache::open(isolated_config(root));
  CHECK(store_problems(c).empty());
}

TEST_CASE("cachectl: evict-older-than removes entries by creation time") {
  TempDir dir;
  Config cfg = isolated_config(dir.path());
  const auto now = std::chrono::system_clock::now();
  auto ns = std::make_shared<std::atomic<std::int64_t>>(
      std::chrono::duration_cast<std::chrono::nanoseconds>(
          (now - std::chrono::hours(3)).time_since_epoch())
          .count());
  cfg.clock = [ns] {
    return std::chrono::system_clock::time_point(
        std::chrono::duration_cast<std::chrono::system_clock::duration>(
            std::chrono::nanoseconds(ns->load())));
  };
  {
    Cache c = Cache::open(cfg);
    REQUIRE(c.set("old-1", "a", ttl(0)));
    REQUIRE(c.set("old-2", "b", ttl(0)));
    ns->fetch_add(std::chrono::duration_cast<std::chrono::nanoseconds>(std::chrono::hours(2) +
                                                                       std::chrono::minutes(30))
                      .count());
    REQUIRE(c.set("recent", "c", ttl(0)));
  }
  auto d = json(cachectl(with_root(dir.path(), {"--json", "evict-older-than", "2h"})));
  CHECK(d["evicted"].GetUint64() == 2);
  CHECK(cachectl(with_root(dir.path(), {"ls"})).out == "recent\n");
  d = json(cachectl(with_root(dir.path(), {"--json", "stats"})));
  CHECK(d["eviction_count"].GetUint64() == 2);
}

TEST_CASE("cachectl: verify finds a broken counter and verify --repair fixes it") {
  TempDir dir;
  fill(dir.path());
  {
    // Break the stored totals counter behind the engine's back.
    Cache c = Cache::open(isolated_config(dir.path()));
    kv::Kv& store = backend_of(c)->primary().kv();
    std::string totals;
    REQUIRE(store.get(kv::Cf::counters, "totals", &totals).ok());
    REQUIRE(totals.size() == 24);
    std::string broken;
    engine::put_le64(broken, 999);
    broken += totals.substr(8);
    auto batch = store.new_batch();
    batch->put(kv::Cf::counters, "totals", broken);
    REQUIRE(store.write(*batch).ok());
  }
  Run r = cachectl(with_root(dir.path(), {"verify"}));
  CHECK(r.code == 1);
  CHECK(r.out.find("counters say 999 entries") != std::string::npos);
  auto d = json(cachectl(with_root(dir.path(), {"--json", "verify"})));
  CHECK(d["problems"].GetArray().Size() >= 1);
  CHECK(d["problems_left"].GetUint64() >= 1);
  r = cachectl(with_root(dir.path(), {"verify", "--repair"}));
  CHECK(r.code == 0);
  CHECK(r.err.find("0 problems left") != std::string::npos);
  d = json(cachectl(with_root(dir.path(), {"--json", "verify"})));
  CHECK(d["problems"].GetArray().Size() == 0);
  CHECK(d["entries"].GetUint64() == 11);
  CHECK(json(cachectl(with_root(dir.path(), {"--json", "status"})))["total_entries"].GetUint64() ==
        11);
}

TEST_CASE("cachectl: a live process_isolated cache is inspected read-only, gc spares it") {
  TempDir dir;
  Cache live = Cache::open(isolated_config(dir.path()));
  REQUIRE(live.set("mine", "v"));
  live.flush();
  const std::string pid = std::to_string(::getpid());

  auto d = json(cachectl(with_root(dir.path(), {"--json", "status"})));
  CHECK(d["live"].GetBool());
  CHECK(d["read_only"].GetBool());
  CHECK(d["total_entries"].GetUint64() == 1);
  CHECK(cachectl(with_root(dir.path(), {"get", "mine"})).out == "v\n");
  CHECK(cachectl(with_root(dir.path(), {"verify"})).code == 0);
  for (const auto& args : std::vector<std::vector<std::string>>{
           {"set", "a", "b"}, {"rm", "mine"}, {"clear"}, {"verify", "--repair"}, {"compact"}}) {
    const Run r = cachectl(with_root(dir.path(), args));
    INFO(args[0]);
    CHECK(r.code == 3);
    CHECK(r.err.find("in use by process " + pid) != std::string::npos);
  }
  CHECK(live.get("mine") == "v");

  // A dead directory beside the live one: gc removes only it (dry run first).
  const auto dead = dir / "proc_999999999";
  std::filesystem::create_directory(dead);
  std::filesystem::create_directory(dead / "db");
  std::ofstream(dead / ".alive.lock") << "";
  d = json(cachectl(with_root(dir.path(), {"--json", "gc", "--dry-run"})));
  REQUIRE(d["would_remove"].GetArray().Size() == 1);
  CHECK(std::filesystem::exists(dead));
  d = json(cachectl(with_root(dir.path(), {"--json", "status"})));
  CHECK(d["processes"].GetArray().Size() == 2);
  CHECK(!d.HasMember("entries"));  // two caches and no --pid: only the list
  CHECK(cachectl(with_root(dir.path(), {"ls"})).code == 2);
  CHECK(cachectl(with_root(dir.path(), {"--pid", pid, "ls"})).out == "mine\n");
  d = json(cachectl(with_root(dir.path(), {"--json", "gc"})));
  CHECK(d["removed"].GetArray().Size() == 1);
  CHECK_FALSE(std::filesystem::exists(dead));
  CHECK(std::filesystem::exists(dir / ("proc_" + pid)));
}

TEST_CASE("cachectl: a shared cache with a live owner in another process") {
  TempDir dir;
  const auto root = dir / "shared";
  Child owner({"hold", root.string(), "shared"});
  REQUIRE(owner.wait_for_lines(1));
  const std::string pid = std::to_string(owner.pid());
  auto run = [&](std::vector<std::string> args) {
    return cachectl(with_root(root, std::move(args)));
  };

  Run r;
  auto d = json(run({"--json", "status"}));
  CHECK(std::string(d["strategy"].GetString()) == "shared");
  REQUIRE(d["owner_pid"].IsInt64());
  CHECK(d["owner_pid"].GetInt64() == owner.pid());
  CHECK(d["total_entries"].GetUint64() == 1);
  CHECK(run({"status"}).out.find("pid " + pid) != std::string::npos);

  CHECK(run({"get", "held"}).out == "yes\n");
  CHECK(run({"set", "from-cachectl", "1", "--category", "ctl"}).code == 0);
  CHECK(run({"ls"}).out == "from-cachectl\nheld\n");
  CHECK(json(run({"--json", "invalidate", "--category", "ctl"}))["invalidated"].GetUint64() == 1);
  CHECK(run({"verify"}).code == 0);
  CHECK(run({"verify", "--repair"}).code == 0);
  CHECK(run({"compact"}).code == 0);
  const auto file = dir / "dump.jsonl";
  CHECK(run({"export", file.string()}).code == 0);
  CHECK(lines(slurp(file)) == 1);  // the invalid entry is left out
  CHECK(json(run({"--json", "clear"}))["removed"].GetUint64() == 2);
  CHECK(json(run({"--json", "import", file.string()}))["imported"].GetUint64() == 1);
  CHECK(run({"stats", "--zero"}).code == 0);
  d = json(run({"--json", "stats"}));
  CHECK(d["set_count"].GetUint64() == 0);
  CHECK(d["total_entries"].GetUint64() == 1);
  // The owner served all of it: still the owner, still alive.
  d = json(run({"--json", "status"}));
  CHECK(d["owner_pid"].GetInt64() == owner.pid());
  // An owner that does not answer (stopped) costs one --timeout, then exit 3; never a hang.
  REQUIRE(owner.stop());
  const auto t0 = std::chrono::steady_clock::now();
  r = run({"--timeout", "300", "get", "held"});
  const auto waited = std::chrono::steady_clock::now() - t0;
  owner.signal(SIGCONT);
  CHECK(r.code == 3);
  CHECK(r.err.find("no answer from the cache's owner within 300 ms") != std::string::npos);
  CHECK(waited < std::chrono::seconds(5));
  CHECK(run({"get", "held"}).out == "yes\n");
  owner.close_stdin();
  CHECK(owner.wait() == 0);

  // With nobody serving, cachectl runs the store itself for the command.
  d = json(run({"--json", "status"}));
  CHECK(d["owner_pid"].IsNull());
  CHECK(d["total_entries"].GetUint64() == 1);
  CHECK(run({"get", "held"}).out == "yes\n");
}

TEST_CASE("cachectl: a damaged store is reported (exit 3) and left where it is") {
  TempDir dir;
  fill(dir.path());
  const auto procs = std::filesystem::directory_iterator(dir.path());
  std::filesystem::path db;
  for (const auto& e : procs)
    if (e.path().filename().string().starts_with("proc_")) db = e.path() / "db";
  REQUIRE(!db.empty());
  for (const auto& entry : std::filesystem::directory_iterator(db)) {
    const std::string name = entry.path().filename().string();
    if (name.starts_with("MANIFEST") || name == "CURRENT")
      std::ofstream(entry.path(), std::ios::trunc) << "this is not a manifest";
  }
  for (const auto& args : std::vector<std::vector<std::string>>{{"status"}, {"verify"}}) {
    const Run r = cachectl(with_root(dir.path(), args));
    INFO(args[0] << ": " << r.err);
    CHECK(r.code == 3);
    CHECK(r.err.find("cannot open the cache") != std::string::npos);
    CHECK(r.err.find("Corruption") != std::string::npos);
    CHECK(lines(r.err) == 1);
  }
  // Nothing was moved aside: the damaged files are still there for a look (or for the next
  // program, which moves them aside and starts empty).
  for (const auto& e : std::filesystem::directory_iterator(db.parent_path()))
    CHECK_FALSE(e.path().filename().string().starts_with("db.corrupt-"));
  CHECK(slurp(db / "CURRENT") == "this is not a manifest");
}

namespace {

// The table files RocksDB keeps for one column family of the store in `db` (read-only open).
std::vector<std::filesystem::path> family_files(const std::filesystem::path& db,
                                                const std::string& family) {
  std::vector<std::string> names;
  REQUIRE(rocksdb::DB::ListColumnFamilies(rocksdb::DBOptions(), db.string(), &names).ok());
  std::vector<rocksdb::ColumnFamilyDescriptor> cfs;
  for (const auto& n : names) cfs.emplace_back(n, rocksdb::ColumnFamilyOptions());
  std::vector<rocksdb::ColumnFamilyHandle*> handles;
  rocksdb::DB* raw = nullptr;
  REQUIRE(
      rocksdb::DB::OpenForReadOnly(rocksdb::DBOptions(), db.string(), cfs, &handles, &raw).ok());
  std::vector<std::filesystem::path> files;
  for (auto* h : handles) {
    if (h->GetName() == family) {
      rocksdb::ColumnFamilyMetaData meta;
      raw->GetColumnFamilyMetaData(h, &meta);
      for (const auto& level : meta.levels)
        for (const auto& f : level.files) files.push_back(db / f.relative_filename);
    }
    REQUIRE(raw->DestroyColumnFamilyHandle(h).ok());
  }
  delete raw;
  return files;
}

}  // namespace

TEST_CASE("cachectl: damage to the access family's table is found by verify, fixed by --repair") {
  TempDir dir;
  constexpr int kKeys = 5000;
  std::filesystem::path db;
  {
    Config cfg = isolated_config(dir.path());
    cfg.max_entries = 100000;
    cfg.max_size_bytes = 64 << 20;
    Cache c = Cache::open(cfg);
    for (int i = 0; i < kKeys; ++i)
      REQUIRE(c.set(fmt::format("key:{:05}", i), std::string(100, 'v')));
    db = c.directory() / "db";
  }
  const auto files = family_files(db, "access");
  REQUIRE(files.size() >= 1);
  for (const auto& f : files) {
    // Overwrite a stretch in the middle of the table: its data blocks fail their checksums.
    const auto size = std::filesystem::file_size(f);
    REQUIRE(size > 8192);
    std::fstream s(f, std::ios::binary | std::ios::in | std::ios::out);
    s.seekp(static_cast<std::streamoff>(size / 3));
    const std::string junk(512, '\xa5');
    s.write(junk.data(), static_cast<std::streamsize>(junk.size()));
  }
  Run r = cachectl(with_root(dir.path(), {"verify"}));
  INFO("verify: " << r.out << r.err);
  CHECK(r.code == 1);
  CHECK(r.out.find("access") != std::string::npos);
  CHECK(r.out.find("Corruption") != std::string::npos);
  r = cachectl(with_root(dir.path(), {"verify", "--repair"}));
  INFO("repair: " << r.out << r.err);
  CHECK(r.code == 0);
  CHECK(r.err.find("0 problems left") != std::string::npos);
  r = cachectl(with_root(dir.path(), {"verify"}));
  CHECK(r.code == 0);
  {
    Cache c = Cache::open(isolated_config(dir.path()));
    CHECK(c.keys().size() == kKeys);
    CHECK(c.get("key:04999") == std::string(100, 'v'));
    CHECK(store_problems(c).empty());
  }
}

TEST_CASE(
    "cachectl: stats name every counter as larder::Stats does, in JSON, Prometheus and text") {
  TempDir dir;
  fill(dir.path());
  const Run js = cachectl(with_root(dir.path(), {"--json", "stats"}));
  const auto d = json(js);
  const Run prom = cachectl(with_root(dir.path(), {"stats", "--format", "prometheus"}));
  const Run text = cachectl(with_root(dir.path(), {"stats"}));
  const std::string cache =
      "cache=\"" + (dir.path() / ("proc_" + std::to_string(::getpid()))).string() + "\"";
  for (const auto& info : stats::kCounterInfo) {
    const std::string name(info.name), metric(info.metric), label(info.label);
    INFO("counter " << name);
    CHECK(d.HasMember(name.c_str()));
    CHECK(text.out.find(name) != std::string::npos);
    // Prometheus: the guide's names (_total, one metric by result), with the JSON's value.
    CHECK(metric.ends_with("_total"));
    CHECK(prom.out.find("# HELP larder_" + metric + " ") != std::string::npos);
    CHECK(prom.out.find("# TYPE larder_" + metric + " counter\n") != std::string::npos);
    const std::string sample = "larder_" + metric + "{" + cache + (label.empty() ? "" : ",") +
                               label + "} " + std::to_string(d[name.c_str()].GetUint64()) + "\n";
    CHECK_MESSAGE(prom.out.find(sample) != std::string::npos, sample);
  }
  CHECK(prom.out.find("larder_gets_total{" + cache + ",result=\"hit\"}") != std::string::npos);
  // Every sample's metric has its # HELP and # TYPE; the names follow the guide.
  std::istringstream lines_in(prom.out);
  std::set<std::string> helped, typed, sampled;
  for (std::string line; std::getline(lines_in, line);) {
    if (line.starts_with("# HELP "))
      helped.insert(line.substr(7, line.find(' ', 7) - 7));
    else if (line.starts_with("# TYPE "))
      typed.insert(line.substr(7, line.find(' ', 7) - 7));
    else
      sampled.insert(line.substr(0, line.find('{')));
  }
  CHECK(sampled == helped);
  CHECK(sampled == typed);
  for (const char* metric : {"larder_entries", "larder_size_bytes", "larder_entries_by_status",
                             "larder_disk_bytes", "larder_info", "larder_degraded"})
    CHECK_MESSAGE(sampled.count(metric) == 1, metric);
  CHECK(prom.out.find("larder_entries_by_status{" + cache + ",status=\"fresh\"} 11\n") !=
        std::string::npos);
  CHECK(prom.out.find("larder_degraded{" + cache + "} 0\n") != std::string::npos);
  CHECK(prom.out.find(",policy=\"lfu\",version=\"") != std::string::npos);
  CHECK(prom.out.find("kind=\"sst\"") != std::string::npos);
  // --output: the same text, written by renaming a complete file over the old one.
  const auto file = dir / "larder.prom";
  std::ofstream(file) << "old";
  REQUIRE(cachectl(
              with_root(dir.path(), {"stats", "--format", "prometheus", "--output", file.string()}))
              .code == 0);
  const std::string written = slurp(file);
  CHECK(written.find("# TYPE larder_gets_total counter") != std::string::npos);
  CHECK(written.find("old") == std::string::npos);
  struct stat fst {};
  REQUIRE(::stat(file.c_str(), &fst) == 0);
  CHECK((fst.st_mode & 0777) == 0644);  // node-exporter runs as another user
  CHECK(std::distance(std::filesystem::directory_iterator(dir.path()),
                      std::filesystem::directory_iterator()) == 3);  // no temporary left
  CHECK(d["set_count"].GetUint64() == 11);
  for (const char* gauge : {"total_entries", "total_size_bytes", "fresh_entries", "stale_entries",
                            "expired_entries", "invalid_entries"})
    CHECK(d.HasMember(gauge));
  CHECK(d["last_zeroed"].IsNull());  // never zeroed: null in JSON, "never" in text
  CHECK(text.out.find("never") != std::string::npos);
}

TEST_CASE("cachectl: an s3fifo cache keeps its policy and evicts by it") {
  TempDir dir;
  Config cfg = isolated_config(dir.path());
  cfg.eviction_policy = EvictionPolicy::s3fifo;
  cfg.max_entries = 3;
  {
    Cache c = Cache::open(cfg);
    for (const char* k : {"k0", "k1", "k2"}) REQUIRE(c.set(k, "v"));
    REQUIRE(c.get("k0"));
    REQUIRE(c.get("k0"));
    REQUIRE(c.get("k1"));
  }
  auto run = [&](std::vector<std::string> args) {
    return cachectl(with_root(dir.path(), std::move(args)));
  };
  CHECK(std::string(json(run({"--json", "status"}))["policy"].GetString()) == "s3fifo");
  // S3-FIFO: S's head k0 (read twice) moves to M, k1 (read once) is evicted; LRU would evict
  // k2, FIFO k0.
  REQUIRE(run({"set", "k3", "v"}).code == 0);
  const std::string listed = run({"ls"}).out;
  CHECK(listed.find("k0") != std::string::npos);
  CHECK(listed.find("k1") == std::string::npos);
  CHECK(listed.find("k2") != std::string::npos);
  CHECK(listed.find("k3") != std::string::npos);
  Cache c = Cache::open(cfg);
  CHECK(store_problems(c).empty());
}

TEST_CASE("cachectl: set --if-absent, touch and incr, through a live owner") {
  TempDir dir;
  const auto root = dir / "shared";
  Child owner({"hold", root.string(), "shared"});  // it sets "held" = "yes"
  REQUIRE(owner.wait_for_lines(1));
  auto run = [&](std::vector<std::string> args) {
    return cachectl(with_root(root, std::move(args)));
  };
  Run r = run({"set", "--if-absent", "held", "other"});
  CHECK(r.code == 1);
  CHECK(r.err.find("a fresh entry exists") != std::string::npos);
  CHECK(run({"get", "held"}).out == "yes\n");
  CHECK(run({"set", "--if-absent", "new", "v"}).code == 0);
  CHECK(run({"get", "new"}).out == "v\n");

  CHECK(run({"incr", "hits"}).out == "1\n");
  CHECK(run({"incr", "hits", "41", "--category", "counters"}).out == "42\n");
  CHECK(run({"incr", "hits", "--", "-2"}).out == "40\n");
  CHECK(json(run({"--json", "incr", "hits"}))["value"].GetInt64() == 41);
  r = run({"incr", "held"});
  CHECK(r.code == 1);
  CHECK(r.err.find("not a decimal 64-bit integer") != std::string::npos);

  CHECK(run({"touch", "held", "--ttl", "0"}).code == 0);
  CHECK(json(run({"--json", "get", "--meta", "held"}))["expires_at"].IsNull());
  CHECK(run({"touch", "held", "--ttl", "2h"}).code == 0);
  const double left = json(run({"--json", "get", "--meta", "held"}))["ttl_remaining_s"].GetDouble();
  CHECK(left > 7000);
  CHECK(left <= 7200);
  // Sub-second TTLs: decimal seconds or milliseconds, kept and shown to the millisecond (age +
  // time left = the TTL, whatever time the commands take).
  auto ttl_of = [&](const char* key) {
    const auto d = json(run({"--json", "get", "--meta", key}));
    return d["age_s"].GetDouble() + d["ttl_remaining_s"].GetDouble();
  };
  CHECK(run({"set", "sub", "v", "--ttl", "30.5"}).code == 0);
  CHECK(ttl_of("sub") == doctest::Approx(30.5));
  CHECK(run({"set", "sub", "v", "--ttl", "90250ms"}).code == 0);
  CHECK(ttl_of("sub") == doctest::Approx(90.25));
  r = run({"touch", "sub", "--ttl", "1.5"});
  CHECK(r.code == 0);
  CHECK((r.out + r.err).find("expires in 1.5s") != std::string::npos);
  CHECK(ttl_of("sub") == doctest::Approx(1.5));
  CHECK(run({"set", "sub", "v", "--ttl", "nan"}).code == 2);
  CHECK(run({"set", "sub", "v", "--ttl", "-1"}).code == 2);
  CHECK(run({"touch", "missing", "--ttl", "1h"}).code == 1);
  CHECK(run({"touch", "held"}).code == 2);  // --ttl is required
  CHECK(run({"get", "held"}).out == "yes\n");
  owner.close_stdin();
  CHECK(owner.wait() == 0);
}

TEST_CASE("cachectl: init creates a cache; limits replace the programs' own until --reset") {
  TempDir dir;
  const auto root = dir / "new";
  auto run = [&](std::vector<std::string> args) {
    return cachectl(with_root(root, std::move(args)));
  };
  CHECK(run({"init", "--policy", "nope"}).code == 2);
  CHECK(run({"init", "--max-size", "12X"}).code == 2);
  CHECK_FALSE(std::filesystem::exists(root));
  REQUIRE(run({"init", "--policy", "fifo", "--max-entries", "3", "--max-size", "1M"}).code == 0);
  Run r = run({"init"});
  CHECK(r.code == 1);
  CHECK(r.err.find("already holds a larder cache") != std::string::npos);
  auto d = json(run({"--json", "status"}));
  CHECK(d["max_entries"].GetUint64() == 3);
  CHECK(d["max_size_bytes"].GetUint64() == 1u << 20);
  CHECK(std::string(d["policy"].GetString()) == "fifo");
  CHECK(std::string(d["limits_set_by"].GetString()) == "cachectl");

  // A program configured with other limits gets the ones set with cachectl.
  Config cfg;
  cfg.cache_root = root;
  cfg.strategy = Strategy::shared;
  cfg.eviction_policy = EvictionPolicy::fifo;
  cfg.max_entries = 100;
  {
    Cache c = Cache::open(cfg);
    for (int i = 0; i < 5; ++i) REQUIRE(c.set("k" + std::to_string(i), "v"));
    CHECK(c.keys() == std::vector<std::string>{"k2", "k3", "k4"});
  }
  // Lowering them evicts at once, through a live owner too.
  Child owner({"hold", root.string(), "shared"});  // it sets "held" (evicting k2)
  REQUIRE(owner.wait_for_lines(1));
  d = json(run({"--json", "limits", "--max-entries", "1"}));
  CHECK(d["evicted"].GetUint64() == 2);
  CHECK(d["max_entries"].GetUint64() == 1);
  CHECK(run({"ls"}).out == "held\n");
  CHECK(run({"limits"}).out.find("1 entries, 1.0 MiB (set with cachectl limits") == 0);
  owner.close_stdin();
  REQUIRE(owner.wait() == 0);
  {
    Cache c = Cache::open(cfg);
    REQUIRE(c.set("a", "v"));
    REQUIRE(c.set("b", "v"));
    CHECK(c.keys() == std::vector<std::string>{"b"});
  }
  CHECK(run({"limits", "--reset", "--max-entries", "5"}).code == 2);
  d = json(run({"--json", "limits", "--reset"}));
  CHECK(std::string(d["limits_set_by"].GetString()) == "config");
  {
    Cache c = Cache::open(cfg);  // its own 100 entries apply again
    REQUIRE(c.set("a", "v"));
    REQUIRE(c.set("c", "v"));
    CHECK(c.keys() == std::vector<std::string>{"a", "b", "c"});
  }
  CHECK(json(run({"--json", "status"}))["max_entries"].GetUint64() == 100);

  // process_isolated: init makes the root only; limits belong to each process's Config.
  const auto iso = dir / "iso";
  auto iso_run = [&](std::vector<std::string> args) {
    args.insert(args.begin(), {"--root", iso.string(), "--strategy", "process_isolated"});
    return cachectl(args);
  };
  CHECK(iso_run({"init", "--max-entries", "3"}).code == 2);
  CHECK(iso_run({"init"}).code == 0);
  CHECK(std::filesystem::exists(iso / "CACHEDIR.TAG"));
}

TEST_CASE("cachectl: --ns works in one namespace; status lists the namespaces") {
  TempDir dir;
  const auto root = dir / "shared";
  {
    Cache c = Cache::open(shared_config(root));
    REQUIRE(c.set("k", "unnamed"));
    Cache one = c.ns("one");
    REQUIRE(one.set("k", "in one"));
    REQUIRE(one.set("x:1", "1"));
    REQUIRE(c.ns("two").set("k", "in two"));
  }
  auto run = [&](std::vector<std::string> args) {
    return cachectl(with_root(root, std::move(args)));
  };
  CHECK(run({"ls"}).out == "k\n");
  CHECK(run({"--ns", "one", "ls"}).out == "k\nx:1\n");
  CHECK(run({"--ns", "one", "get", "k"}).out == "in one\n");
  CHECK(run({"get", "k"}).out == "unnamed\n");
  CHECK(run({"--ns", "one", "set", "new", "v"}).code == 0);
  CHECK(run({"--ns", "one", "incr", "n"}).out == "1\n");
  CHECK(run({"--ns", "one", "--json", "invalidate", "--pattern", "x:*"}).code == 0);
  auto d = json(run({"--json", "status"}));
  CHECK(d["namespaces"]["one"].GetUint64() == 4);
  CHECK(d["namespaces"]["two"].GetUint64() == 1);
  CHECK(run({"status"}).out.find("namespaces  one (4), two (1)") != std::string::npos);
  const auto file = dir / "one.jsonl";
  CHECK(run({"--ns", "one", "export", file.string()}).code == 0);
  CHECK(lines(slurp(file)) == 3);  // k, n, new (x:1 is invalid)
  CHECK(run({"--ns", "three", "import", file.string()}).code == 0);
  CHECK(run({"--ns", "three", "ls"}).out == "k\nn\nnew\n");
  CHECK(run({"--ns", "one", "rm", "k"}).code == 0);
  CHECK(run({"get", "k"}).out == "unnamed\n");
  CHECK(json(run({"--ns", "one", "--json", "clear"}))["removed"].GetUint64() == 3);
  CHECK(run({"--ns", "two", "get", "k"}).out == "in two\n");
  CHECK(run({"--ns", std::string(kMaxNamespaceBytes + 1, 'n'), "ls"}).code == 2);
}

#ifdef LARDER_REDIS_SERVER
TEST_CASE("cachectl: status shows the remote tier, reachable or not, with its counters") {
  TempDir dir;
  RedisServer redis(dir / "redis", {"--requirepass", "topsecret"});
  const auto root = dir / "cache";
  Config c = shared_config(root);
  c.remote = "redis+unix://:topsecret@" + redis.socket() + "?prefix=team";
  Cache owner = Cache::open(c);  // the owner: cachectl's calls go to it
  REQUIRE(owner.set("k", "v"));
  REQUIRE(owner.remove("k"));
  CHECK(owner.get("k") == std::nullopt);  // a local and a remote miss
  Run r = cachectl(with_root(root, {"status"}));
  INFO("status: " << r.out << r.err);
  CHECK(r.code == 0);
  CHECK(r.out.find("remote      redis+unix://***@" + redis.socket() +
                   "?db=0&prefix=team, reachable") != std::string::npos);
  CHECK(r.out.find("1 misses, 0 errors") != std::string::npos);
  CHECK(r.out.find("topsecret") == std::string::npos);
  r = cachectl(with_root(root, {"--json", "status"}));
  auto d = json(r);
  REQUIRE(d.HasMember("remote"));
  CHECK(d["remote"]["reachable"].GetBool());
  CHECK(d["remote_miss_count"].GetUint64() == 1);
  r = cachectl(with_root(root, {"stats", "--format", "prometheus"}));
  CHECK(r.out.find("larder_remote_gets_total{cache=") != std::string::npos);
  CHECK(r.out.find(",result=\"miss\"} 1\n# HELP larder_remote_errors_total") != std::string::npos);
  CHECK(r.out.find("# HELP larder_remote_errors_total") != std::string::npos);

  redis.kill();
  r = cachectl(with_root(root, {"status"}));
  CHECK(r.code == 0);
  CHECK(r.out.find("unreachable: ") != std::string::npos);
  d = json(cachectl(with_root(root, {"--json", "status"})));
  CHECK_FALSE(d["remote"]["reachable"].GetBool());
}
#endif
