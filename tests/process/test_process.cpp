// Real processes: a writer killed with SIGKILL leaves a store that reopens with every
// acknowledged write and exact totals.
#include <doctest/doctest.h>

#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdio>
#include <fstream>
#include <map>
#include <mutex>

#include "helper_values.hpp"
#include "shared_support.hpp"
#include "support.hpp"

using namespace larder;
using namespace larder::test;

namespace {

// Runs the helper writing keys [first, first + count) and kills it with SIGKILL after `kill_after`
// acknowledgements. Returns the acknowledged indexes in order.
std::vector<long> write_and_kill(const std::filesystem::path& root, long first, long count,
                                 long kill_after, long max_entries = 0) {
  int fds[2];
  REQUIRE(::pipe(fds) == 0);
  const pid_t pid = ::fork();
  REQUIRE(pid >= 0);
  if (pid == 0) {
    ::dup2(fds[1], STDOUT_FILENO);
    ::close(fds[0]);
    ::close(fds[1]);
    const std::string f = std::to_string(first), c = std::to_string(count),
                      m = std::to_string(max_entries);
    ::execl(LARDER_TEST_HELPER, LARDER_TEST_HELPER, "write", root.c_str(), f.c_str(), c.c_str(),
            m.c_str(), static_cast<char*>(nullptr));
    ::_exit(127);
  }
  ::close(fds[1]);
  FILE* in = ::fdopen(fds[0], "r");
  std::vector<long> acked;
  char line[128];
  while (static_cast<long>(acked.size()) < kill_after &&
         std::fgets(line, sizeof line, in) != nullptr) {
    long n = 0;
    if (std::sscanf(line, "ack %ld", &n) == 1) acked.push_back(n);
  }
  ::kill(pid, SIGKILL);
  // Acknowledgements already in the pipe count too: they were acknowledged before the kill.
  while (std::fgets(line, sizeof line, in) != nullptr) {
    long n = 0;
    if (std::sscanf(line, "ack %ld", &n) == 1) acked.push_back(n);
  }
  std::fclose(in);
  int status = 0;
  ::waitpid(pid, &status, 0);
  CHECK(WIFSIGNALED(status));
  CHECK(WTERMSIG(status) == SIGKILL);
  return acked;
}

}  // namespace

TEST_CASE("SIGKILL of a writer loses no acknowledged write and leaves exact totals") {
  TempDir tmp;
  std::map<std::string, std::string> expected;  // the last acknowledged value of each key
  std::map<std::string, std::string> expected_cat;
  long next = 0;
  for (int round = 0; round < 3; ++round) {
    // Keys repeat across rounds (key-(i % 5000)), so overwrites are part of the test.
    const auto acked = write_and_kill(tmp.path(), next, 100000, 1500 + round * 700);
    REQUIRE(acked.size() >= 1500);
    for (long i : acked) {
      expected[helper_key(i)] = helper_value(i);
      expected_cat[helper_key(i)] = helper_category(i);
    }
    next = acked.back() + 1 + 3000;  // skip ahead so some keys are overwritten next round
  }
  Config cfg = shared_config(tmp.path());
  Cache c = Cache::open(cfg);
  REQUIRE_FALSE(c.degraded());
  std::size_t wrong = 0;
  for (const auto& [k, v] : expected) {
    if (c.get(k) != v) ++wrong;
  }
  CHECK(wrong == 0);
  // Totals are exact: equal to what a scan finds (one unacknowledged write may have landed).
  const ScannedTotals scanned = scan_totals(c);
  const Stats s = c.stats();
  CHECK(s.total_entries == scanned.entries);
  CHECK(s.total_size_bytes == scanned.bytes);
  CHECK(s.categories == scanned.categories);
  CHECK(scanned.entries >= expected.size());
  CHECK(scanned.entries <= expected.size() + 3);
  CHECK(store_problems(c).empty());
}

TEST_CASE("SIGKILL while every set evicts leaves a consistent store within its limits") {
  TempDir tmp;
  long next = 0;
  for (int round = 0; round < 3; ++round) {
    const auto acked = write_and_kill(tmp.path(), next, 100000, 2000 + round * 500, 700);
    REQUIRE_FALSE(acked.empty());
    next = acked.back() + 1;
  }
  Config cfg;
  cfg.cache_root = tmp.path();
  cfg.strategy = Strategy::shared;
  cfg.max_entries = 700;
  cfg.cleanup_interval = std::chrono::seconds(0);
  Cache c = Cache::open(cfg);
  REQUIRE_FALSE(c.degraded());
  CHECK(store_problems(c).empty());
  const Stats s = c.stats();
  CHECK(s.total_entries == 700);
  // LRU under sequential writes keeps the newest keys: the last acknowledged one is there.
  CHECK(c.get(helper_key(next - 1)) == helper_value(next - 1));
}

TEST_CASE("a forked child never touches the parent's store through an inherited cache") {
  TempDir tmp;
  Config cfg;
  cfg.cache_root = tmp.path();
  cfg.strategy = Strategy::process_isolated;
  cfg.cleanup_interval = std::chrono::seconds(0);
  auto parent = std::make_unique<Cache>(Cache::open(cfg));
  REQUIRE(parent->set("parent-key", "parent-value"));
  const pid_t pid = ::fork();
  REQUIRE(pid >= 0);
  if (pid == 0) {
    // Child: the inherited handle works on memory and reports why; destroying it leaks the
    // parent's store instead of closing it; a new open gets the child's own directory.
    int code = 0;
    if (!parent->degraded()) code |= 1;
    if (parent->get("parent-key")) code |= 2;  // the parent's data is not reachable from here
    if (!parent->set("child-key", "child-value")) code |= 4;
    if (parent->get("child-key") != "child-value") code |= 8;
    parent->flush();
    parent.reset();
    // RocksDB cannot run here (its threads stayed in the parent): the child's own cache is a
    // memory cache that says why.
    Cache own = Cache::open(cfg);
    if (!own.degraded() || own.last_error().find("fork") == std::string::npos) code |= 16;
    if (own.directory().filename() != "proc_" + std::to_string(::getpid())) code |= 32;
    if (!own.set("k", "v") || own.get("k") != "v") code |= 64;
    std::exit(code);  // exit(), not _exit(): it must not hang in RocksDB's static destructors
  }
  const int status = wait_bounded(pid);
  REQUIRE(WIFEXITED(status));
  CHECK(WEXITSTATUS(status) == 0);
  CHECK(parent->get("parent-key") == "parent-value");
  CHECK_FALSE(parent->get("child-key"));
  CHECK_FALSE(parent->degraded());
  CHECK(store_problems(*parent).empty());
}

TEST_CASE("a write-ahead log damaged in the middle: the data lost at open is reported") {
  TempDir tmp;
  const auto acked = write_and_kill(tmp.path(), 0, 100000, 8000);
  REQUIRE(acked.size() >= 8000);
  // Damage the middle of the (only) log: RocksDB's point-in-time recovery stops there.
  std::filesystem::path log;
  for (const auto& e : std::filesystem::directory_iterator(tmp.path() / "db"))
    if (e.path().extension() == ".log" && e.file_size() > (1u << 20)) log = e.path();
  REQUIRE_FALSE(log.empty());
  {
    std::fstream f(log, std::ios::in | std::ios::out | std::ios::binary);
    f.seekp(static_cast<std::streamoff>(std::filesystem::file_size(log) / 2));
    const std::string junk(128, '\xad');
    f.write(junk.data(), static_cast<std::streamsize>(junk.size()));
  }
  std::vector<std::string> errors;
  std::mutex mu;
  Config cfg = shared_config(tmp.path());
  cfg.log = [&](LogLevel level, std::string_view m) {
    std::lock_guard lock(mu);
    if (level == LogLevel::error) errors.emplace_back(m);
  };
  Cache c = Cache::open(cfg);
  CHECK_FALSE(c.degraded());          // what survived is served
  CHECK(c.keys().size() < 5000);      // and some acknowledged writes are gone...
  CHECK(c.stats().error_count >= 1);  // ...which is counted,
  CHECK(c.last_error().find("data lost") != std::string::npos);  // said,
  std::lock_guard lock(mu);
  CHECK_FALSE(errors.empty());  // and logged
}
