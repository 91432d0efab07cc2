// The shared strategy with real processes: an owner serving clients, takeover after SIGKILL and
// after a graceful close, a stopped owner, hostile peers, use_file_locking = false, fork, and the
// process_isolated directory lifecycle.
#include <doctest/doctest.h>

#include <fcntl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include <fstream>
#include <map>
#include <optional>
#include <set>
#include <sstream>
#include <thread>

#include "child.hpp"
#include "helper_values.hpp"
#include "shared/protocol.hpp"
#include "shared_support.hpp"
#include "stats/stats_file.hpp"
#include "support.hpp"

using namespace larder;
using namespace larder::test;
using namespace std::chrono_literals;

namespace {}  // namespace

TEST_CASE("shared: a client gets the owner's semantics, and takes over after a graceful close") {
  TempDir tmp;
  const auto root = tmp / "cache";
  Child owner({"hold", root.string(), "shared"});
  REQUIRE(owner.wait_for_lines(1));
  Cache c = Cache::open(shared_config(root));
  CHECK(backend_of(c) == nullptr);  // a client: the store is in the other process
  CHECK_FALSE(c.degraded());
  CHECK(owner_pid(root) == owner.pid());

  CHECK(c.get("held") == "yes");
  CHECK(c.set("a", "1", ttl(3600, "letters")));
  CHECK(c.set("b", "2", ttl(3600, "letters")));
  CHECK(c.set("n:1", "x", ttl(0, "nums")));
  SetOptions with_meta;
  with_meta.metadata = {{"source", "test"}};
  CHECK(c.set("m", "v", with_meta));
  CHECK_FALSE(c.set("", "empty key refused"));
  CHECK(c.exists("a"));
  const auto e = c.get_entry("a");
  REQUIRE(e);
  CHECK(e->value == "1");
  CHECK(e->info.category == "letters");
  CHECK(e->info.expires_at.has_value());
  CHECK(e->info.access_count >= 1);
  const auto info = c.metadata("m");
  REQUIRE(info);
  CHECK(info->metadata.at("source") == "test");
  CHECK(c.keys() == std::vector<std::string>{"a", "b", "held", "m", "n:1"});
  CHECK(c.keys_in_category("letters") == std::vector<std::string>{"a", "b"});
  CHECK(c.invalidate("a"));
  CHECK_FALSE(c.get("a"));
  CHECK(c.metadata("a")->status == EntryStatus::invalid);
  CHECK(c.invalidate_pattern("n:*") == 1);
  CHECK_THROWS_AS(c.invalidate_pattern(""), std::invalid_argument);
  CHECK(c.cleanup() == 2);
  CHECK(c.set_many({{"x", "1"}, {"y", "2"}}) == std::vector<bool>{true, true});
  const auto values = c.get_many({"x", "nope", "y"});
  REQUIRE(values.size() == 3);
  CHECK(values[0] == "1");
  CHECK_FALSE(values[1]);
  CHECK(values[2] == "2");
  CHECK(c.remove("x"));
  CHECK_FALSE(c.remove("x"));
  CHECK(c.clear_category("letters") == 1);
  CHECK(c.get_or_compute("computed", [] { return std::string("42"); }) == "42");

  // Every process's counters, seen from the client: the owner's set plus ours.
  const Stats s = c.stats();
  CHECK(s.set_count == 8);
  CHECK(s.hit_count == 4);   // held, get_entry a, x, y
  CHECK(s.miss_count == 3);  // a (invalid), nope, computed
  CHECK(s.delete_count == 2);
  CHECK(s.invalidation_count == 2);
  CHECK(s.total_entries == c.keys().size());

  // A graceful close hands over: the next call finds nobody serving and takes the store.
  owner.close_stdin();
  const int status = owner.wait();
  REQUIRE(WIFEXITED(status));
  CHECK(WEXITSTATUS(status) == 0);
  CHECK(c.get("computed") == "42");
  CHECK(backend_of(c) != nullptr);
  CHECK(owner_pid(root) == ::getpid());
  CHECK(store_problems(c).empty());
}

TEST_CASE(
    "shared: owners killed with SIGKILL lose no acknowledged write; totals and statistics add up") {
  TempDir tmp;
  const auto root = tmp / "cache";
  constexpr int kWorkers = 6;
  constexpr int kKills = 3;
  constexpr long kOps = 6000;
  std::vector<std::unique_ptr<Child>> workers;
  for (int i = 0; i < kWorkers; ++i)
    workers.push_back(std::make_unique<Child>(std::vector<std::string>{
        "hammer", root.string(), std::to_string(i), std::to_string(kOps)}));
  std::set<int> killed;
  auto index_of = [&](long pid) {
    for (int i = 0; i < kWorkers; ++i)
      if (workers[static_cast<std::size_t>(i)]->pid() == pid) return i;
    return -1;
  };
  for (int attempt = 0; static_cast<int>(killed.size()) < kKills && attempt < 20; ++attempt) {
    // Let every worker still running make progress, then kill whoever owns the store.
    for (int i = 0; i < kWorkers; ++i)
      if (!killed.count(i)) {
        auto& w = *workers[static_cast<std::size_t>(i)];
        w.wait_for_lines(w.line_count() + 200, 20s);
      }
    const int victim = index_of(owner_pid(root));
    if (victim < 0 || killed.count(victim)) continue;  // between owners: look again
    workers[static_cast<std::size_t>(victim)]->signal(SIGKILL);
    const int status = workers[static_cast<std::size_t>(victim)]->wait();
    if (WIFSIGNALED(status)) killed.insert(victim);  // else it had finished: not a kill
  }
  REQUIRE(static_cast<int>(killed.size()) == kKills);
  for (int i = 0; i < kWorkers; ++i) {
    if (killed.count(i)) continue;
    const int status = workers[static_cast<std::size_t>(i)]->wait();
    REQUIRE(WIFEXITED(status));
    CHECK(WEXITSTATUS(status) == 0);
  }

  // What the workers reported.
  std::map<std::string, std::vector<long>> tried;  // key -> set indexes attempted, in order
  std::map<std::string, long> acked;               // key -> last acknowledged set index
  std::map<std::string, long> worker_of;
  long gets = 0, hits = 0, set_calls = 0, set_acks = 0;
  for (int i = 0; i < kWorkers; ++i) {
    for (const std::string& line : workers[static_cast<std::size_t>(i)]->lines()) {
      std::istringstream in(line);
      std::string tag, key;
      long n = 0;
      in >> tag;
      if (tag == "t" || tag == "s") {
        in >> key >> n;
        worker_of[key] = i;
        if (tag == "t") {
          tried[key].push_back(n);
          ++set_calls;
        } else {
          acked[key] = n;
          ++set_acks;
        }
      } else if (tag == "g" && (in >> n)) {
        gets += n;
      } else if (tag == "h" && (in >> n)) {
        hits += n;
      }
    }
  }
  REQUIRE(set_acks > 1000);

  std::optional<Cache> opened(Cache::open(shared_config(root)));
  Cache& c = *opened;
  REQUIRE(backend_of(c) != nullptr);  // every worker is gone: this process owns the store
  const Stats s = c.stats();
  // Every acknowledged write is there with its exact value; the only other value allowed is
  // one that was attempted later (its reply lost in a kill, or a set that failed cleanly).
  std::size_t wrong = 0;
  for (const auto& [key, last] : acked) {
    const auto value = c.get(key);
    bool ok = false;
    for (long j : tried[key])
      if (j >= last && value == hammer_value(worker_of[key], j)) ok = true;
    if (!ok) ++wrong;
  }
  CHECK(wrong == 0);
  const ScannedTotals scanned = scan_totals(c);
  CHECK(s.total_entries == scanned.entries);
  CHECK(s.total_size_bytes == scanned.bytes);
  CHECK(store_problems(c).empty());

  // Statistics: every operation of every process, the killed ones included, is in the totals.
  // A request whose reply was lost in a kill is retried, so it may count twice: at most one per
  // worker per kill (a batch of five reads counts five).
  const long slack = static_cast<long>(kKills) * kWorkers * 5;
  CHECK(static_cast<long>(s.set_count) >= set_acks);
  CHECK(static_cast<long>(s.set_count) <= set_calls + slack);
  const long reads = static_cast<long>(s.hit_count + s.miss_count);
  CHECK(reads >= gets);
  CHECK(reads <= gets + slack);
  CHECK(static_cast<long>(s.hit_count) >= hits);
  CHECK(static_cast<long>(s.hit_count) <= hits + slack);
  MESSAGE("workers: ", set_acks, " acknowledged sets of ", set_calls, ", ", gets,
          " reads; statistics: ", s.set_count, " sets, ", reads, " reads");

  // The statistics file holds the same sums once this last process closes.
  const std::uint64_t verify_reads = acked.size();
  opened.reset();
  stats::Snapshot file;
  std::string error;
  REQUIRE(stats::load_stats(root / stats::kStatsFileName, std::chrono::system_clock::now(), &file,
                            &error) == stats::LoadResult::loaded);
  CHECK(file.set_count == s.set_count);
  CHECK(file.hit_count + file.miss_count == s.hit_count + s.miss_count + verify_reads);
  CHECK(file.contributors.empty());
  CHECK(std::filesystem::is_empty(root / ".stats"));
}

TEST_CASE("shared: the owner evicts by s3fifo for its clients, counting their hits") {
  TempDir tmp;
  const auto root = tmp / "cache";
  Child owner({"hold", root.string(), "shared", "s3fifo", "3"});  // it sets "held"
  REQUIRE(owner.wait_for_lines(1));
  Config cfg = shared_config(root);
  cfg.eviction_policy = EvictionPolicy::s3fifo;
  cfg.max_entries = 3;
  Cache c = Cache::open(cfg);
  REQUIRE(backend_of(c) == nullptr);  // a client
  REQUIRE(c.get("held") == "yes");
  REQUIRE(c.get("held") == "yes");  // f = 2 in the owner's index
  REQUIRE(c.set("k0", "v"));
  REQUIRE(c.set("k1", "v"));
  // S's head "held" moves to M, k0 is evicted (LRU would evict "held", the least recent).
  REQUIRE(c.set("k2", "v"));
  CHECK(c.exists("held"));
  CHECK_FALSE(c.exists("k0"));
  CHECK(c.exists("k1"));
  CHECK(c.exists("k2"));
  CHECK(c.stats().eviction_count == 1);
}

TEST_CASE("shared: a stopped owner does not hang its clients, which recover after SIGCONT") {
  TempDir tmp;
  const auto root = tmp / "cache";
  Child owner({"hold", root.string(), "shared"});
  REQUIRE(owner.wait_for_lines(1));
  Config cfg = shared_config(root);
  cfg.lock_timeout = 200ms;
  // The fail-fast window is timed by the monotonic clock: this one moves only when told.
  TestClock clock;
  cfg.monotonic_clock = clock.steady_fn();
  Cache c = Cache::open(cfg);
  REQUIRE(c.set("k", "v"));
  REQUIRE(owner.stop());
  const auto t0 = std::chrono::steady_clock::now();
  CHECK_FALSE(c.get("k"));
  const auto waited = std::chrono::steady_clock::now() - t0;
  CHECK(waited >= 200ms);
  CHECK(waited < 3s);  // bounded by lock_timeout (generous margin for a loaded machine)
  CHECK(c.degraded());
  CHECK(c.last_error().find("after 200 ms") != std::string::npos);
  // Within the next lock_timeout, calls fail at once instead of waiting again.
  const auto t1 = std::chrono::steady_clock::now();
  CHECK_FALSE(c.set("k2", "v2"));
  CHECK(std::chrono::steady_clock::now() - t1 < 150ms);
  owner.signal(SIGCONT);
  // The owner answers again, but the window has not passed: still refused without asking it.
  for (int i = 0; i < 20; ++i) CHECK_FALSE(c.get("k"));
  clock.advance(200ms);  // the window passes: the next call asks the owner again
  bool back = false;
  for (int i = 0; i < 200 && !back; ++i) {
    back = c.get("k") == "v";
    if (!back) std::this_thread::sleep_for(25ms);  // waiting for the other process to resume
  }
  CHECK(back);
  CHECK_FALSE(c.degraded());
  CHECK(c.stats().error_count >= 2);  // the timeout and the fast failure
}

TEST_CASE("shared: garbage and oversized frames drop only their own connection") {
  TempDir tmp;
  const auto root = tmp / "cache";
  Child owner({"hold", root.string(), "shared"});
  REQUIRE(owner.wait_for_lines(1));
  Cache c = Cache::open(shared_config(root));
  REQUIRE(c.set("k", "v"));
  const auto socket = root / ".larder.sock";

  int fd = raw_connect(socket);
  REQUIRE(fd >= 0);
  CHECK(send_and_read(fd, frame("this is not a request")) == 0);  // closed, no reply
  ::close(fd);
  fd = raw_connect(socket);
  REQUIRE(fd >= 0);
  CHECK(send_and_read(fd, std::string("\xff\xff\xff\x7f", 4)) == 0);  // 2 GiB announced
  ::close(fd);
  // A well-formed request on a raw connection is answered (the control for the cases above).
  const shared::Request q{7, shared::op::Get{"k"}};
  fd = raw_connect(socket);
  REQUIRE(fd >= 0);
  CHECK(send_and_read(fd, frame(shared::encode(q))) > 4);
  ::close(fd);

  CHECK(c.get("k") == "v");  // the client was not disturbed
  CHECK(c.set("k2", "v2"));
  CHECK_FALSE(c.degraded());
  CHECK(c.stats().error_count == 2);  // the owner counted the two bad connections
}

TEST_CASE("shared: the owner serves only its own user") {
  if (::geteuid() != 0) {
    MESSAGE("skipped: needs root to run a peer as another user");
    return;
  }
  TempDir tmp;
  const auto root = tmp / "cache";
  Child owner({"hold", root.string(), "shared"});
  REQUIRE(owner.wait_for_lines(1));
  const auto socket = root / ".larder.sock";
  struct stat st {};
  REQUIRE(::stat(socket.c_str(), &st) == 0);
  CHECK((st.st_mode & 0777) == 0600);
  // Open the file-permission layer on purpose so that the peer check is what is tested.
  ::chmod(tmp.path().c_str(), 0711);
  ::chmod(root.c_str(), 0711);
  ::chmod(socket.c_str(), 0666);
  const shared::Request q{1, shared::op::Get{"held"}};
  const std::string request = frame(shared::encode(q));  // prepared before fork
  auto run_peer = [&](bool as_nobody) {
    const pid_t pid = ::fork();
    REQUIRE(pid >= 0);
    if (pid == 0) {
      if (as_nobody && (::setgid(65534) != 0 || ::setuid(65534) != 0)) ::_exit(10);
      const int fd = raw_connect(socket);
      if (fd < 0) ::_exit(11);
      const long got = send_and_read(fd, request);
      ::_exit(got == 0 ? 0 : got > 0 ? 1 : 12);
    }
    int status = 0;
    ::waitpid(pid, &status, 0);
    return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  };
  CHECK(run_peer(true) == 0);   // uid nobody: connection closed without a reply
  CHECK(run_peer(false) == 1);  // root: answered
}

TEST_CASE("shared without file locking: a store held by another process degrades, naming it") {
  TempDir tmp;
  const auto root = tmp / "cache";
  Child owner({"hold", root.string(), "shared"});
  REQUIRE(owner.wait_for_lines(1));
  Config cfg = shared_config(root);
  cfg.use_file_locking = false;
  Cache c = Cache::open(cfg);
  CHECK(c.degraded());
  CHECK(c.last_error().find("held by pid " + std::to_string(owner.pid())) != std::string::npos);
  CHECK(c.set("k", "v"));  // works on memory
  CHECK(c.get("k") == "v");
}

TEST_CASE("shared: a forked child of the owner can open the cache again as a client") {
  TempDir tmp;
  const auto root = tmp / "cache";
  auto parent = std::make_unique<Cache>(Cache::open(shared_config(root)));
  REQUIRE(backend_of(*parent) != nullptr);
  REQUIRE(parent->set("parent-key", "parent-value"));
  const pid_t pid = ::fork();
  REQUIRE(pid >= 0);
  if (pid == 0) {
    int code = 0;
    if (!parent->degraded()) code |= 1;        // the inherited handle is unusable here
    if (parent->get("parent-key")) code |= 2;  // and never reaches the parent's store
    parent.reset();                            // leaks, closes nothing of the parent's
    Cache own = Cache::open(shared_config(root));
    if (backend_of(own) != nullptr) code |= 4;  // the parent still owns the store
    if (own.get("parent-key") != "parent-value") code |= 8;
    if (!own.set("child-key", "child-value")) code |= 16;
    std::exit(code);  // must not hang in RocksDB's static destructors
  }
  const int status = wait_bounded(pid);
  REQUIRE(WIFEXITED(status));
  CHECK(WEXITSTATUS(status) == 0);
  CHECK(parent->get("child-key") == "child-value");
  CHECK_FALSE(parent->degraded());
  CHECK(store_problems(*parent).empty());
}

TEST_CASE(
    "process_isolated: directories of processes that are gone are collected, live ones kept") {
  TempDir tmp;
  const auto root = tmp / "cache";
  Child live({"hold", root.string(), "process_isolated"});
  Child dead({"hold", root.string(), "process_isolated"});
  Child dead2({"hold", root.string(), "process_isolated"});
  REQUIRE(live.wait_for_lines(1));
  REQUIRE(dead.wait_for_lines(1));
  REQUIRE(dead2.wait_for_lines(1));
  dead.signal(SIGKILL);
  dead.wait();
  dead2.signal(SIGKILL);
  dead2.wait();
  Config cfg = shared_config(root);
  cfg.strategy = Strategy::process_isolated;
  Cache own = Cache::open(cfg);  // collects only directories idle for a day: none here
  // It adopted one of the dead processes' directories; the other is the collector's.
  const auto dir_of = [&](const Child& c) { return root / ("proc_" + std::to_string(c.pid())); };
  REQUIRE((own.directory() == dir_of(dead) || own.directory() == dir_of(dead2)));
  const auto dead_dir = own.directory() == dir_of(dead) ? dir_of(dead2) : dir_of(dead);
  const auto live_dir = dir_of(live);
  REQUIRE(std::filesystem::exists(dead_dir));
  // A directory without a liveness lock that is younger than the grace period is left alone.
  std::filesystem::create_directories(root / "proc_999999999");

  CHECK(collect_dead_process_dirs(root, 0s, true) == std::vector<std::filesystem::path>{dead_dir});
  CHECK(std::filesystem::exists(dead_dir));            // dry run
  CHECK(collect_dead_process_dirs(root, 1h).empty());  // too recent
  CHECK(collect_dead_process_dirs(root, 0s) == std::vector<std::filesystem::path>{dead_dir});
  CHECK_FALSE(std::filesystem::exists(dead_dir));
  CHECK(std::filesystem::exists(live_dir));
  CHECK(std::filesystem::exists(own.directory()));
  CHECK(std::filesystem::exists(root / "proc_999999999"));
  CHECK(own.set("k", "v"));
  live.close_stdin();
  live.wait();
  // The live process has closed now: its directory is collectable, ours still is not.
  CHECK(collect_dead_process_dirs(root, 0s) == std::vector<std::filesystem::path>{live_dir});
  CHECK(own.get("k") == "v");
}

TEST_CASE(
    "process_isolated: a new process finds what a process that is gone stored; live "
    "processes keep their own directories") {
  TempDir tmp;
  const auto root = tmp / "cache";
  {
    Child first({"hold", root.string(), "process_isolated"});
    REQUIRE(first.wait_for_lines(1));  // it stored held = yes
    first.close_stdin();
    REQUIRE(WIFEXITED(first.wait_at_most(30s)));
  }
  Config cfg = shared_config(root);
  cfg.strategy = Strategy::process_isolated;
  Cache again = Cache::open(cfg);
  CHECK(again.get("held") == "yes");  // the default strategy kept it between runs
  REQUIRE(again.remove("held"));
  // A process starting while this one runs gets a directory of its own.
  Child concurrent({"hold", root.string(), "process_isolated"});
  REQUIRE(concurrent.wait_for_lines(1));
  CHECK(again.directory() != root / ("proc_" + std::to_string(concurrent.pid())));
  CHECK_FALSE(again.get("held"));  // its set went to its own directory
  concurrent.close_stdin();
  REQUIRE(WIFEXITED(concurrent.wait_at_most(30s)));
}

namespace {

// Every file under `root` with its size and modification time: equal snapshots mean that
// nothing on disk changed.
std::map<std::string, std::pair<std::uintmax_t, std::int64_t>> disk_snapshot(
    const std::filesystem::path& root) {
  std::map<std::string, std::pair<std::uintmax_t, std::int64_t>> out;
  for (const auto& e : std::filesystem::recursive_directory_iterator(root)) {
    struct stat st {};
    REQUIRE(::lstat(e.path().c_str(), &st) == 0);
    out[e.path().string()] = {static_cast<std::uintmax_t>(st.st_size),
                              st.st_mtim.tv_sec * 1'000'000'000LL + st.st_mtim.tv_nsec};
  }
  return out;
}

}  // namespace

TEST_CASE("read_only: a view reads, refuses every write and changes nothing on disk") {
  TempDir tmp;
  const auto root = tmp / "cache";
  {
    Config cfg = shared_config(root);
    cfg.max_entries = 7;
    Cache writer = Cache::open(cfg);
    REQUIRE(writer.set("k", "v", ttl(3600, "cat")));
    REQUIRE(writer.set("n", "5"));
  }
  const auto before = disk_snapshot(root);
  Config cfg = shared_config(root);
  cfg.read_only = true;
  cfg.max_entries = 1;  // not imposed: the store's own limit (7) is used
  {
    Cache view = Cache::open(cfg);
    CHECK_FALSE(view.degraded());
    CHECK(view.get("k") == "v");
    CHECK(view.get_entry("k")->info.category == "cat");
    CHECK(view.get_many({"k", "n"}) == std::vector<std::optional<std::string>>{"v", "5"});
    CHECK(view.keys() == std::vector<std::string>{"k", "n"});
    CHECK_FALSE(view.set("x", "1"));
    CHECK_FALSE(view.add("x", "1"));
    CHECK_FALSE(view.touch("k", 1s));
    CHECK_FALSE(view.incr("n"));
    CHECK_FALSE(view.set_all({{"x", "1"}}));
    CHECK_FALSE(view.remove("k"));
    CHECK_FALSE(view.invalidate("k"));
    CHECK(view.invalidate_pattern("*") == 0);
    CHECK(view.invalidate_category("cat") == 0);
    CHECK(view.clear_category("cat") == 0);
    CHECK(view.clear() == 0);
    CHECK(view.cleanup() == 0);
    view.flush();
    const Stats s = view.stats();
    CHECK(s.total_entries == 2);
    CHECK(s.error_count == 0);  // refusals are not failures
    CHECK(view.get("k") == "v");
  }
  CHECK(disk_snapshot(root) == before);

  // A live owner in another process: the view reads its store beside it.
  Child owner({"hold", root.string(), "shared"});  // it sets "held"
  REQUIRE(owner.wait_for_lines(1));
  {
    Cache view = Cache::open(cfg);
    CHECK(view.get("held") == "yes");
    CHECK_FALSE(view.set("x", "1"));
  }
  owner.close_stdin();
  REQUIRE(owner.wait() == 0);
  Cache again = Cache::open(shared_config(root));
  CHECK_FALSE(again.exists("x"));
  CHECK(again.get("n") == "5");

  // A root without a store: a degraded memory view, and nothing is created.
  Config missing = cfg;
  missing.cache_root = tmp / "nothing-here";
  Cache none = Cache::open(missing);
  CHECK(none.degraded());
  CHECK(none.last_error().find("nothing-here") != std::string::npos);
  CHECK_FALSE(none.set("x", "1"));
  CHECK_FALSE(std::filesystem::exists(tmp / "nothing-here"));

  Config isolated = cfg;
  isolated.strategy = Strategy::process_isolated;
  CHECK_THROWS_WITH_AS(Cache::open(isolated), doctest::Contains("read_only"), ConfigError);
}
