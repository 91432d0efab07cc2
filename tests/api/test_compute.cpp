// get_or_compute across processes (compute leases granted by a shared cache's owner) and
// stale-while-revalidate.
#include <doctest/doctest.h>

#include <algorithm>
#include <condition_variable>
#include <cstdlib>
#include <fstream>
#include <mutex>
#include <set>
#include <sstream>
#include <thread>

#include <fmt/format.h>

#include "child.hpp"
#include "shared_support.hpp"
#include "support.hpp"

using namespace larder;
using namespace larder::test;
using namespace std::chrono_literals;

namespace {

std::vector<std::string> file_lines(const std::filesystem::path& p) {
  std::ifstream in(p);
  std::vector<std::string> out;
  for (std::string line; std::getline(in, line);) out.push_back(line);
  return out;
}

}  // namespace

TEST_CASE("get_or_compute: four processes miss one key at once; it is computed once") {
  TempDir tmp;
  const auto root = tmp / "cache";
  const auto calls = tmp / "calls";
  Child owner({"hold", root.string(), "shared"});
  REQUIRE(owner.wait_for_lines(1));
  std::vector<std::unique_ptr<Child>> procs;
  for (int i = 0; i < 4; ++i) {
    procs.push_back(std::make_unique<Child>(
        std::vector<std::string>{"compute", root.string(), calls.string(), "300", "30000"}));
    REQUIRE(procs.back()->wait_for_lines(1));
  }
  for (auto& p : procs) p->close_stdin();  // go
  std::set<std::string> values;
  for (auto& p : procs) {
    REQUIRE(p->wait_at_most(60s) == 0);
    REQUIRE(p->lines().size() == 3);  // ready, value, took
    values.insert(p->lines()[1]);
  }
  CHECK(file_lines(calls).size() == 1);  // one compute
  CHECK(values.size() == 1);             // everyone got its value
  CHECK(*values.begin() == "value v" + file_lines(calls)[0]);
}

TEST_CASE("serve_stale: of four processes on a stale entry, one computes, three get it at once") {
  // The owner is this process, with a test clock that writes the entry 15 s in the past and
  // then catches up with real time (the children's clock): stale without waiting.
  TempDir tmp;
  TestClock clock;
  clock.advance(std::chrono::system_clock::now() - 15s - clock.now());
  const auto root = tmp / "cache";
  const auto calls = tmp / "calls";
  Config cfg;
  cfg.cache_root = root;
  cfg.strategy = Strategy::shared;
  cfg.max_entries = 0;
  cfg.max_size_bytes = 0;
  cfg.cleanup_interval = 0s;
  clock.install(cfg);
  Cache owner = Cache::open(cfg);
  REQUIRE(owner.set("computed", "old", ttl(10)));
  clock.advance(15s);  // stale (until 20 s), for this process and the children alike
  REQUIRE(owner.metadata("computed")->status == EntryStatus::stale);
  std::vector<std::unique_ptr<Child>> procs;
  for (int i = 0; i < 4; ++i) {
    procs.push_back(std::make_unique<Child>(std::vector<std::string>{
        "compute", root.string(), calls.string(), "3000", "30000", "stale"}));
    REQUIRE(procs.back()->wait_for_lines(1));
  }
  for (auto& p : procs) p->close_stdin();  // go
  int stale_fast = 0, computed = 0;
  for (auto& p : procs) {
    REQUIRE(p->wait_at_most(60s) == 0);
    const auto lines = p->lines();
    REQUIRE(lines.size() == 3);
    const long took = std::stol(lines[2].substr(5));
    if (lines[1] == "value old") {
      CHECK(took < 1500);  // well under the 3 s compute
      ++stale_fast;
    } else {
      CHECK(lines[1].rfind("value v", 0) == 0);
      ++computed;
    }
  }
  CHECK(file_lines(calls).size() == 1);  // one compute across the processes
  CHECK(computed == 1);
  CHECK(stale_fast == 3);
  CHECK(owner.get("computed") == "v" + file_lines(calls)[0]);  // its result replaced the entry
}

TEST_CASE("get_or_compute: a leaseholder killed mid-compute loses its lease at once") {
  TempDir tmp;
  const auto root = tmp / "cache";
  const auto calls = tmp / "calls";
  ::setenv("LARDER_TEST_OWNER_LOG", "1", 1);  // the owner prints its log lines
  Child owner({"hold", root.string(), "shared"});
  ::unsetenv("LARDER_TEST_OWNER_LOG");
  REQUIRE(owner.wait_for_line_with("ready"));
  // A computes for 60 s under a 20 s lease; B starts once A holds the lease.
  Child a({"compute", root.string(), calls.string(), "60000", "20000"});
  REQUIRE(a.wait_for_lines(1));
  a.close_stdin();
  for (int i = 0; i < 1000 && file_lines(calls).empty(); ++i) std::this_thread::sleep_for(10ms);
  REQUIRE(file_lines(calls).size() == 1);
  Child b({"compute", root.string(), calls.string(), "0", "20000"});
  REQUIRE(b.wait_for_lines(1));
  b.close_stdin();
  // B asked for the lease and was refused: it waits for A's value rather than computing.
  REQUIRE(owner.wait_for_line_with(fmt::format("process {} waits", b.pid())));
  CHECK(b.line_count() == 1);
  CHECK(file_lines(calls).size() == 1);
  const auto killed = std::chrono::steady_clock::now();
  a.signal(SIGKILL);
  REQUIRE(b.wait_at_most(30s) == 0);
  const auto waited = std::chrono::steady_clock::now() - killed;
  const auto lines = file_lines(calls);
  REQUIRE(lines.size() == 2);  // B computed
  CHECK(b.lines()[1] == "value v" + lines[1]);
  // Well before A's 20 s lease ran out (the owner saw A's process gone).
  CHECK(waited < 10s);
}

TEST_CASE("get_or_compute: a lease that is not released ends at its timeout") {
  TempDir tmp;
  Config cfg = shared_config(tmp / "cache");
  Cache c = Cache::open(cfg);
  auto service = Cache::Access::service(c);
  std::int64_t wait = 0;
  // Another live process (our parent) holds the key: we wait for its lease, then compute.
  REQUIRE(service->acquire_lease("k", ::getppid(), 300, &wait));
  const auto t0 = std::chrono::steady_clock::now();
  ComputeOptions co;
  co.lease_timeout = 5s;
  CHECK(c.get_or_compute(
            "k", [] { return std::string("mine"); }, {}, co) == "mine");
  const auto waited = std::chrono::steady_clock::now() - t0;
  CHECK(waited >= 250ms);
  CHECK(waited < 4s);
  CHECK(service->acquire_lease("k", ::getpid(), 1000, &wait));  // released after the compute
}

TEST_CASE("get_or_compute with serve_stale returns a stale entry at once; one caller refreshes") {
  TempDir tmp;
  TestClock clock;
  Config cfg = MemoryStore::config(tmp, clock);
  Cache c = Cache::open(cfg);
  REQUIRE(c.set("k", "old", ttl(10)));
  clock.advance(10s);  // stale
  ComputeOptions co;
  co.serve_stale = true;
  auto service = Cache::Access::service(c);
  std::int64_t wait = 0;
  // While another process holds the lease, callers get the stale value at once.
  REQUIRE(service->acquire_lease("k", ::getppid(), 60'000, &wait));
  int calls = 0;
  auto compute = [&] {
    ++calls;
    return std::string("new");
  };
  CHECK(c.get_or_compute("k", compute, ttl(10), co) == "old");
  CHECK(calls == 0);
  service->release_lease("k", ::getppid());
  // The caller that gets the lease recomputes.
  CHECK(c.get_or_compute("k", compute, ttl(10), co) == "new");
  CHECK(calls == 1);
  CHECK(c.get("k") == "new");
  // Without serve_stale a stale entry is a miss: computed again.
  clock.advance(10s);
  CHECK(c.get_or_compute("k", compute, ttl(10)) == "new");
  CHECK(calls == 2);
  // Expired entries are not served stale.
  clock.advance(100s);
  CHECK(c.get_or_compute(
            "k", [] { return std::string("fresh"); }, ttl(10), co) == "fresh");
  CHECK_THROWS_AS(c.get_or_compute("k", compute, {}, ComputeOptions{false, -1ms}),
                  std::invalid_argument);
}

// A client whose owner does not answer (SIGSTOP) cannot see anyone's lease: it computes after
// its own lock_timeout instead of polling for the whole lease_timeout (it waited 20 s before).
TEST_CASE("get_or_compute: with the owner stopped, a client computes without waiting for a lease") {
  TempDir tmp;
  const auto root = tmp / "cache";
  Child owner({"hold", root.string(), "shared"});
  REQUIRE(owner.wait_for_lines(1));
  Config cfg = shared_config(root);
  cfg.lock_timeout = 200ms;
  Cache c = Cache::open(cfg);
  REQUIRE(backend_of(c) == nullptr);  // a client
  REQUIRE(owner.stop());
  ComputeOptions co;
  co.lease_timeout = 20s;
  const auto t0 = std::chrono::steady_clock::now();
  CHECK(c.get_or_compute(
            "k", [] { return std::string("computed"); }, {}, co) == "computed");
  const auto waited = std::chrono::steady_clock::now() - t0;
  owner.signal(SIGCONT);
  CHECK(waited < 10s);
}

namespace {
struct SharedStore {
  static Config config(const TempDir& dir, const TestClock& clock) {
    Config c = RocksStore::config(dir, clock);
    c.strategy = Strategy::shared;
    return c;
  }
};
}  // namespace

// The compute lease was keyed by the process id, so every thread of a process was granted it:
// four threads on a stale entry all computed (4 times) and all waited for their compute.
TEST_CASE_TEMPLATE(
    "serve_stale: of four threads on a stale entry, one computes, three get it at once", S,
    MemoryStore, RocksStore, SharedStore) {
  Fixture<S> f;
  Cache c = f.open();
  REQUIRE(c.set("k", "old", ttl(10)));
  f.clock.advance(10s);  // stale
  ComputeOptions co;
  co.serve_stale = true;
  std::mutex mu;
  std::condition_variable cv;
  bool release = false;
  int returned_old = 0;
  std::atomic<int> calls{0};
  auto compute = [&] {
    calls++;
    std::unique_lock lock(mu);
    cv.wait(lock, [&] { return release; });  // the compute lasts until the three have returned
    return std::string("new");
  };
  std::vector<std::string> results(4);
  std::vector<std::thread> threads;
  for (int i = 0; i < 4; ++i)
    threads.emplace_back([&, i] {
      results[i] = c.get_or_compute("k", compute, ttl(10), co);
      std::lock_guard lock(mu);
      if (results[i] == "old") ++returned_old;
      cv.notify_all();
    });
  {
    // Waits on what the fix makes happen: three callers back with the stale value while the
    // compute still runs (bounded: without the fix none comes back before the release).
    std::unique_lock lock(mu);
    CHECK(cv.wait_for(lock, 20s, [&] { return returned_old == 3; }));
    CHECK(calls.load() == 1);
    release = true;
  }
  cv.notify_all();
  for (auto& t : threads) t.join();
  CHECK(calls.load() == 1);
  CHECK(std::count(results.begin(), results.end(), "old") == 3);
  CHECK(std::count(results.begin(), results.end(), "new") == 1);
  CHECK(c.get("k") == "new");
}

TEST_CASE("get_or_compute: a negative lease_timeout is refused, naming the option") {
  TempDir tmp;
  Config cfg;
  cfg.cache_root = tmp / "cache";
  cfg.strategy = Strategy::disabled;
  Cache c = Cache::open(cfg);
  ComputeOptions co;
  co.lease_timeout = std::chrono::milliseconds(-1);
  try {
    (void)c.get_or_compute(
        "k", [] { return std::string("v"); }, {}, co);
    FAIL("no exception");
  } catch (const std::invalid_argument& e) {
    CHECK(std::string(e.what()) == "lease_timeout: must not be negative (got -1ms)");
  }
  CHECK_FALSE(c.get("k"));  // nothing computed or stored
}
