// larder-test-helper: the child process of the multi-process tests.
//   write ROOT FIRST COUNT [MAX_ENTRIES]
//       opens ROOT with the shared strategy (no limits, or MAX_ENTRIES with LRU), sets keys
//       FIRST..FIRST+COUNT-1 with the values of helper_value(), and prints "ack N" after each set
//       that returned true, so the parent knows which writes were acknowledged before it kills
//       this process.
//   hammer ROOT ID COUNT
//       COUNT mixed operations on the shared cache ROOT over the keys w<ID>-<0..199>: sets print
//       "t KEY I" before and "s KEY I" after a set that returned true; reads print "g N" (N reads
//       done) and "h N" (N of them hits). The value of set I is hammer_value(ID, I).
//   hold ROOT STRATEGY
//       opens ROOT (shared or process_isolated), sets "held" = "yes", prints "ready <pid>" and
//       waits until stdin closes.
//   counts ROOT ID
//       on the shared cache ROOT: 100 sets of c<ID>-<i>, 100 gets of them, 50 gets of keys never
//       set, then a normal close. Prints "done H" with the hits it saw.
//   diskfull ROOT STRATEGY BALLAST
//       opens ROOT (shared or process_isolated), sets 64 KB values until 10 sets in a row are
//       refused ("acked N" / "refused N"), reads every acknowledged key back ("hits N"), removes
//       the file BALLAST to free space and sets again until one is stored ("recovered") or 200
//       tries fail ("not recovered"). Prints "degraded 0|1" after opening; then advances its
//       clock until the cache is not degraded ("store 0|1"), sets a key and reopens the cache
//       to read it back ("persisted 0|1"). Exit 0 unless something threw.
//   unwritable ROOT
//       as uid 65534 (when root): opens a process_isolated cache in ROOT, makes its store's
//       directory unwritable and goes on as diskfull does, making it writable instead of
//       removing a ballast file.
//   atomic ROOT ID COUNT
//       on the shared cache ROOT: prints "ready", waits until stdin has a line or closes, then
//       add("winner", ID) ("add 0|1"), COUNT incr("counter") ("incr N": N of them returned a
//       value) and COUNT compare_and_set increments of "cas" ("cas N": N went through).
//   remote-atomic ROOT URL ID COUNT
//       a process_isolated cache in ROOT with the remote tier URL (a machine of its own): prints
//       "ready", waits until stdin has a line or closes, then add("lock:job", ID) ("add 0|1") and
//       COUNT incr("builds"), printing the values returned ("values V1 V2 ...", 50 a line) and
//       how many there were ("incr N"), then COUNT / 5 compare_and_set increments of "cas"
//       ("cas N").
//   compute ROOT FILE SLEEP_MS LEASE_MS [stale]
//       on the shared cache ROOT: prints "ready", waits until stdin has a line or closes, then
//       get_or_compute("computed") with a lease timeout of LEASE_MS (and serve_stale with
//       "stale"), whose compute appends "<pid>" to FILE, sleeps SLEEP_MS and returns "v<pid>".
//       Prints "value V" and "took MS" (the call's duration).
//   events ROOT GLOB N
//       on the shared cache ROOT: subscribes to GLOB, prints "ready", then prints each event as
//       "KIND KEY" (KIND: set, remove, invalidate, evict, expire) until N were seen.
//   replay ROOT POLICY TRACE
//       opens a process_isolated cache in ROOT (POLICY lru|lfu|fifo, 60 entries, 4000 bytes, no
//       ttl) and replays TRACE (lines "KEY SIZE": a get, and on a miss a set of SIZE bytes),
//       then flushes, prints "replayed" and waits until stdin closes (the parent kills it).
#include <unistd.h>

#include <sys/stat.h>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "core/config.hpp"
#include "helper_values.hpp"
#include "larder/larder.hpp"

namespace {

larder::Config shared_config(const char* root) {
  larder::Config cfg;
  cfg.cache_root = root;
  cfg.strategy = larder::Strategy::shared;
  cfg.max_entries = 0;
  cfg.max_size_bytes = 0;
  cfg.cleanup_interval = std::chrono::seconds(0);
  return cfg;
}

void say(const std::string& line) {
  std::fputs((line + "\n").c_str(), stdout);
  std::fflush(stdout);
}

int write_mode(int argc, char** argv) {
  larder::Config cfg = shared_config(argv[2]);
  cfg.max_entries = argc == 6 ? std::strtoull(argv[5], nullptr, 10) : 0;
  larder::Cache cache = larder::Cache::open(cfg);
  if (cache.degraded()) {
    std::fprintf(stderr, "degraded: %s\n", cache.last_error().c_str());
    return 3;
  }
  const long first = std::atol(argv[3]);
  const long count = std::atol(argv[4]);
  for (long i = first; i < first + count; ++i) {
    larder::SetOptions o;
    o.ttl = std::chrono::seconds(i % 3 == 0 ? 0 : 3600);
    o.category = larder::test::helper_category(i);
    if (cache.set(larder::test::helper_key(i), larder::test::helper_value(i), o))
      say("ack " + std::to_string(i));
  }
  return 0;
}

int hammer_mode(char** argv) {
  larder::Cache cache = larder::Cache::open(shared_config(argv[2]));
  const long id = std::atol(argv[3]);
  const long count = std::atol(argv[4]);
  for (long i = 0; i < count; ++i) {
    const std::string key = larder::test::hammer_key(id, i);
    if (i % 50 == 49) {
      std::vector<std::string> keys;
      for (long j = 0; j < 5; ++j) keys.push_back(larder::test::hammer_key(id, i + j * 7));
      long hits = 0;
      for (const auto& v : cache.get_many(keys)) hits += v ? 1 : 0;
      say("g 5");
      say("h " + std::to_string(hits));
    } else if (i % 4 == 3) {
      const bool hit = cache.get(key).has_value();
      say("g 1");
      if (hit) say("h 1");
    } else {
      say("t " + key + " " + std::to_string(i));
      if (cache.set(key, larder::test::hammer_value(id, i)))
        say("s " + key + " " + std::to_string(i));
    }
  }
  return 0;
}

// hold ROOT STRATEGY [POLICY MAX_ENTRIES]
int hold_mode(int argc, char** argv) {
  larder::Config cfg = shared_config(argv[2]);
  if (std::string(argv[3]) == "process_isolated") cfg.strategy = larder::Strategy::process_isolated;
  if (argc == 6) {
    cfg.eviction_policy =
        larder::core::policy_from_string(argv[4]).value_or(larder::EvictionPolicy::lru);
    cfg.max_entries = std::strtoull(argv[5], nullptr, 10);
  }
  // The remote tier's tests give the holder one (tests/remote/test_remote.cpp).
  if (const char* remote = std::getenv("LARDER_TEST_REMOTE")) cfg.remote = remote;
  // Tests that wait on something the owner does see its log lines, after "ready".
  if (std::getenv("LARDER_TEST_OWNER_LOG") != nullptr)
    cfg.log = [](larder::LogLevel, std::string_view line) { say("log " + std::string(line)); };
  larder::Cache cache = larder::Cache::open(cfg);
  if (!cache.set("held", "yes")) return 3;
  say("ready " + std::to_string(::getpid()));
  char buffer[64];
  while (::read(STDIN_FILENO, buffer, sizeof buffer) > 0) {
  }
  return 0;
}

int replay_mode(char** argv) {
  larder::Config cfg;
  cfg.cache_root = argv[2];
  cfg.strategy = larder::Strategy::process_isolated;
  const std::string policy = argv[3];
  cfg.eviction_policy =
      larder::core::policy_from_string(policy).value_or(larder::EvictionPolicy::lru);
  cfg.max_entries = 60;
  cfg.max_size_bytes = 4000;
  cfg.default_ttl = std::chrono::seconds(0);
  cfg.cleanup_interval = std::chrono::seconds(0);
  larder::Cache cache = larder::Cache::open(cfg);
  std::ifstream trace(argv[4]);
  std::string key;
  std::size_t size = 0;
  while (trace >> key >> size)
    if (!cache.get(key)) (void)cache.set(key, std::string(size, 'x'));
  cache.flush();
  say("replayed");
  char buffer[64];
  while (::read(STDIN_FILENO, buffer, sizeof buffer) > 0) {
  }
  return 0;
}

int counts_mode(char** argv) {
  long hits = 0;
  {
    larder::Cache cache = larder::Cache::open(shared_config(argv[2]));
    const std::string id = argv[3];
    for (int i = 0; i < 100; ++i) (void)cache.set("c" + id + "-" + std::to_string(i), "v");
    for (int i = 0; i < 100; ++i) hits += cache.get("c" + id + "-" + std::to_string(i)) ? 1 : 0;
    for (int i = 0; i < 50; ++i) hits += cache.get("absent" + id + "-" + std::to_string(i)) ? 1 : 0;
  }
  say("done " + std::to_string(hits));
  return 0;
}

// The helper's clock: real time plus an offset the diskfull mode advances to reach the
// breaker's next probe without waiting for it.
std::atomic<std::int64_t> g_clock_offset_s{0};

// Fills the cache until 10 sets in a row are refused, reads back what was acknowledged, calls
// `make_room` and checks that the cache writes again and that its store opens (see the modes).
int fill_refuse_recover(larder::Config cfg, const std::function<void(larder::Cache&)>& block,
                        const std::function<void()>& make_room) {
  cfg.clock = [] {
    return std::chrono::system_clock::now() + std::chrono::seconds(g_clock_offset_s.load());
  };
  cfg.monotonic_clock = [] {
    return std::chrono::steady_clock::now() + std::chrono::seconds(g_clock_offset_s.load());
  };
  // The cache's last log lines, said when it does not recover (the reason, in a failed test).
  auto recent = std::make_shared<std::pair<std::mutex, std::vector<std::string>>>();
  cfg.log = [recent](larder::LogLevel, std::string_view line) {
    std::lock_guard lock(recent->first);
    if (recent->second.size() == 8) recent->second.erase(recent->second.begin());
    recent->second.emplace_back(line);
  };
  std::string stored_key;
  {
    larder::Cache cache = larder::Cache::open(cfg);
    say(std::string("degraded ") + (cache.degraded() ? "1" : "0"));
    block(cache);
    const std::string value(64 * 1024, 'v');
    long acked = 0, refused = 0, in_a_row = 0;
    for (long i = 0; i < 4000 && in_a_row < 10; ++i) {
      if (cache.set("k" + std::to_string(i), value)) {
        ++acked;
        in_a_row = 0;
      } else {
        ++refused;
        ++in_a_row;
      }
    }
    say("acked " + std::to_string(acked));
    say("refused " + std::to_string(refused));
    long hits = 0;
    for (long i = 0; i < acked + refused; ++i) hits += cache.get("k" + std::to_string(i)) ? 1 : 0;
    say("hits " + std::to_string(hits));
    make_room();
    bool recovered = false;
    // The clock moves 5 s per attempt (past any breaker delay within a few attempts); no
    // sleeping: a store that needs no more than the freed space writes at once.
    for (int i = 0; i < 200 && !recovered; ++i) {
      if (cache.set("after" + std::to_string(i), "small")) {
        say("recovered " + std::to_string(i));
        recovered = true;
      } else {
        g_clock_offset_s += 5;
      }
    }
    if (!recovered) {
      say("not recovered; last error: " + cache.last_error());
      std::lock_guard lock(recent->first);
      for (const auto& line : recent->second) say("log " + line);
    }
    // A cache that could not create its store at open serves from memory; once space is back,
    // the breaker's probe (every 30 s of the cache's clock) opens the store.
    for (int i = 0; i < 20 && cache.degraded(); ++i) {
      g_clock_offset_s += 31;
      (void)cache.get("probe");
    }
    say(std::string("store ") + (cache.degraded() ? "0" : "1"));
    if (!cache.degraded() && cache.set("on-store", "persisted")) stored_key = "on-store";
  }
  if (!stored_key.empty()) {
    larder::Cache again = larder::Cache::open(cfg);
    say(std::string("persisted ") + (again.get(stored_key) == "persisted" ? "1" : "0"));
  }
  return 0;
}

int diskfull_mode(char** argv) {
  larder::Config cfg = shared_config(argv[2]);
  if (std::string(argv[3]) == "process_isolated") cfg.strategy = larder::Strategy::process_isolated;
  std::fprintf(stderr, "diskfull: open\n");
  const std::string ballast = argv[4];
  return fill_refuse_recover(
      cfg, [](larder::Cache&) {}, [&] { ::unlink(ballast.c_str()); });
}

// Runs as uid 65534 (when started as root); makes the store's directory unwritable (mode 0500)
// while filling, then writable again.
int unwritable_mode(char** argv) {
  if (::geteuid() == 0 && (::setgid(65534) != 0 || ::setuid(65534) != 0)) return 10;
  larder::Config cfg = shared_config(argv[2]);
  cfg.strategy = larder::Strategy::process_isolated;
  std::filesystem::path db;
  return fill_refuse_recover(
      cfg,
      [&](larder::Cache& c) {
        db = c.directory() / "db";
        ::chmod(db.c_str(), 0500);
      },
      [&] { ::chmod(db.c_str(), 0700); });
}

// COUNT increments of the decimal value under "cas" by compare_and_set: read it, swap in one
// more, read again when another process swapped first. How many went through.
long cas_increments(larder::Cache& cache, long count) {
  long done = 0;
  for (long tries = 0; done < count && tries < count * 10'000; ++tries) {
    const auto v = cache.get("cas");
    if (!v) {
      (void)cache.add("cas", "0");
      continue;
    }
    if (cache.compare_and_set("cas", *v, std::to_string(std::stol(*v) + 1))) ++done;
  }
  return done;
}

int atomic_mode(char** argv) {
  larder::Cache cache = larder::Cache::open(shared_config(argv[2]));
  say("ready");
  char buffer[8];
  (void)!::read(STDIN_FILENO, buffer, sizeof buffer);  // a line, or EOF: go
  say(std::string("add ") + (cache.add("winner", argv[3]) ? "1" : "0"));
  const long count = std::strtol(argv[4], nullptr, 10);
  long ok = 0;
  for (long i = 0; i < count; ++i) ok += cache.incr("counter").has_value() ? 1 : 0;
  say("incr " + std::to_string(ok));
  say("cas " + std::to_string(cas_increments(cache, count)));
  return 0;
}

int compute_mode(char** argv) {
  larder::Cache cache = larder::Cache::open(shared_config(argv[2]));
  const std::string file = argv[3];
  const long sleep_ms = std::strtol(argv[4], nullptr, 10);
  larder::ComputeOptions co;
  co.lease_timeout = std::chrono::milliseconds(std::strtol(argv[5], nullptr, 10));
  co.serve_stale = argv[6] != nullptr && std::string(argv[6]) == "stale";
  say("ready");
  char buffer[8];
  (void)!::read(STDIN_FILENO, buffer, sizeof buffer);  // a line, or EOF: go
  const auto start = std::chrono::steady_clock::now();
  const std::string v = cache.get_or_compute(
      "computed",
      [&] {
        std::ofstream(file, std::ios::app) << ::getpid() << "\n";
        std::this_thread::sleep_for(std::chrono::milliseconds(sleep_ms));
        return "v" + std::to_string(::getpid());
      },
      {}, co);
  say("value " + v);
  say("took " + std::to_string(std::chrono::duration_cast<std::chrono::milliseconds>(
                                   std::chrono::steady_clock::now() - start)
                                   .count()));
  return 0;
}

int events_mode(char** argv) {
  larder::Cache cache = larder::Cache::open(shared_config(argv[2]));
  const long want = std::strtol(argv[4], nullptr, 10);
  std::mutex mu;
  std::condition_variable cv;
  long seen = 0;
  larder::Subscription sub = cache.subscribe(
      [&](const larder::Event& e) {
        static const char* const kinds[] = {"set", "remove", "invalidate", "evict", "expire"};
        say(std::string(kinds[static_cast<int>(e.kind)]) + " " + e.key);
        std::lock_guard lock(mu);
        ++seen;
        cv.notify_all();
      },
      argv[3]);
  say("ready");
  std::unique_lock lock(mu);
  return cv.wait_for(lock, std::chrono::seconds(60), [&] { return seen >= want; }) ? 0 : 4;
}

}  // namespace

int remote_atomic_mode(char** argv) {
  larder::Config cfg = shared_config(argv[2]);
  cfg.strategy = larder::Strategy::process_isolated;
  cfg.remote = argv[3];
  larder::Cache cache = larder::Cache::open(cfg);
  say("ready");
  char buffer[8];
  (void)!::read(STDIN_FILENO, buffer, sizeof buffer);  // a line, or EOF: go
  say(std::string("add ") + (cache.add("lock:job", argv[4]) ? "1" : "0"));
  const long count = std::strtol(argv[5], nullptr, 10);
  long ok = 0;
  std::string values = "values";
  for (long i = 0; i < count; ++i) {
    if (const auto v = cache.incr("builds")) {
      ++ok;
      values += " " + std::to_string(*v);
    }
    if ((i + 1) % 50 == 0 || i + 1 == count) {  // short lines
      say(values);
      values = "values";
    }
  }
  say("incr " + std::to_string(ok));
  say("cas " + std::to_string(cas_increments(cache, count / 5)));
  return 0;
}

int main(int argc, char** argv) {
  const std::string mode = argc > 1 ? argv[1] : "";
  if (mode == "write" && (argc == 5 || argc == 6)) return write_mode(argc, argv);
  if (mode == "hammer" && argc == 5) return hammer_mode(argv);
  if (mode == "hold" && (argc == 4 || argc == 6)) return hold_mode(argc, argv);
  if (mode == "diskfull" && argc == 5) return diskfull_mode(argv);
  if (mode == "remote-atomic" && argc == 6) return remote_atomic_mode(argv);
  if (mode == "unwritable" && argc == 3) return unwritable_mode(argv);
  if (mode == "counts" && argc == 4) return counts_mode(argv);
  if (mode == "replay" && argc == 5) return replay_mode(argv);
  if (mode == "atomic" && argc == 5) return atomic_mode(argv);
  if (mode == "compute" && (argc == 6 || argc == 7)) return compute_mode(argv);
  if (mode == "events" && argc == 5) return events_mode(argv);
  std::fprintf(
      stderr,
      "usage: larder-test-helper write ROOT FIRST COUNT [MAX_ENTRIES]\n"
      "       larder-test-helper hammer ROOT ID COUNT\n"
      "       larder-test-helper hold ROOT shared|process_isolated [POLICY MAX_ENTRIES]\n");
  return 2;
}
