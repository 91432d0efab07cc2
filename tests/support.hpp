// Test support: a per-test temporary directory, an injectable clock, and the two store kinds the
// shared test bodies run against. Thread-safety: TestClock may be read from many threads.
#pragma once

#include <signal.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <vector>

#include "api/access.hpp"
#include "core/backend.hpp"
#include "larder/larder.hpp"

namespace larder::test {

using api::backend_of;

// Waits up to 30 s for the child `pid`; kills it if it is still running then (a hang is a
// failure, not a stuck suite). Returns its wait status (-1 when it had to be killed).
inline int wait_bounded(pid_t pid) {
  for (int i = 0; i < 3000; ++i) {
    int status = 0;
    if (::waitpid(pid, &status, WNOHANG) == pid) return status;
    ::usleep(10'000);
  }
  ::kill(pid, SIGKILL);
  ::waitpid(pid, nullptr, 0);
  return -1;
}

// A line of /proc/<pid>/status as a number ("VmHWM" in kB, "Threads"), or -1.
inline long proc_status(long pid, const std::string& field) {
  std::ifstream in("/proc/" + std::to_string(pid) + "/status");
  std::string line;
  while (std::getline(in, line))
    if (line.rfind(field + ":", 0) == 0) return std::stol(line.substr(field.size() + 1));
  return -1;
}

// Sets this process's resident-set peak (VmHWM) to what is resident now (Linux: "5" to
// /proc/self/clear_refs), so that earlier tests' peaks do not hide the next one's. Returns
// whether it could.
inline bool reset_peak_resident() {
  std::ofstream clear("/proc/self/clear_refs");
  clear << "5";
  clear.flush();
  return static_cast<bool>(clear);
}

// How far this process's resident-set peak rose above what was resident before `f` ran, in
// bytes (0 when it could not be measured).
template <class F>
std::uint64_t peak_growth_bytes(F&& f) {
  reset_peak_resident();
  const long before = proc_status(::getpid(), "VmRSS");
  f();
  const long peak = proc_status(::getpid(), "VmHWM");
  return before >= 0 && peak > before ? static_cast<std::uint64_t>(peak - before) * 1024 : 0;
}

// A Config::log sink whose lines a test can wait for: the cache's own report that something
// happened (a background cleanup, a refused lease) is the event a test waits on instead of
// waiting a fixed time. Must outlive the caches that log into it.
class LogLines {
 public:
  std::function<void(LogLevel, std::string_view)> sink() {
    return [this](LogLevel, std::string_view line) {
      std::lock_guard lock(mu_);
      lines_.emplace_back(line);
      cv_.notify_all();
    };
  }
  // Waits until a line containing `part` was logged; false at `timeout`.
  bool wait_for(std::string_view part, std::chrono::milliseconds timeout) {
    std::unique_lock lock(mu_);
    return cv_.wait_for(lock, timeout, [&] {
      for (const auto& l : lines_)
        if (l.find(part) != std::string::npos) return true;
      return false;
    });
  }

 private:
  std::mutex mu_;
  std::condition_variable cv_;
  std::vector<std::string> lines_;
};

class TempDir {
 public:
  TempDir() {
    const char* base = std::getenv("TMPDIR");
    std::string tmpl =
        std::string(base != nullptr && *base != '\0' ? base : "/tmp") + "/larder-test-XXXXXX";
    if (::mkdtemp(tmpl.data()) == nullptr) throw std::runtime_error("mkdtemp failed");
    path_ = tmpl;
  }
  ~TempDir() {
    std::error_code ec;
    std::filesystem::permissions(path_, std::filesystem::perms::owner_all,
                                 std::filesystem::perm_options::add, ec);
    std::filesystem::remove_all(path_, ec);
  }
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;
  const std::filesystem::path& path() const { return path_; }
  std::filesystem::path operator/(const std::string& s) const { return path_ / s; }

 private:
  std::filesystem::path path_;
};

// Starts at a fixed, realistic time; advance() moves it.
class TestClock {
 public:
  TestClock()
      : ns_(std::make_shared<std::atomic<std::int64_t>>(1'800'000'000LL * 1'000'000'000LL)) {}
  std::function<std::chrono::system_clock::time_point()> fn() const {
    return as<std::chrono::system_clock>();
  }
  // The same time as a monotonic clock (Config::monotonic_clock): advance() moves both.
  std::function<std::chrono::steady_clock::time_point()> steady_fn() const {
    return as<std::chrono::steady_clock>();
  }
  // Both clocks of a config.
  void install(Config& c) const {
    c.clock = fn();
    c.monotonic_clock = steady_fn();
  }
  void advance(std::chrono::nanoseconds d) { ns_->fetch_add(d.count()); }
  std::chrono::system_clock::time_point now() const { return fn()(); }

 private:
  // This clock's time as a time point of clock C.
  template <class C>
  std::function<typename C::time_point()> as() const {
    auto ns = ns_;
    return [ns] {
      return typename C::time_point(
          std::chrono::duration_cast<typename C::duration>(std::chrono::nanoseconds(ns->load())));
    };
  }
  std::shared_ptr<std::atomic<std::int64_t>> ns_;
};

struct RocksStore {
  static constexpr const char* name = "rocksdb";
  static constexpr bool persistent = true;
  static Config config(const TempDir& dir, const TestClock& clock) {
    Config c;
    c.cache_root = dir.path();
    c.strategy = Strategy::process_isolated;
    c.cleanup_interval = std::chrono::seconds(0);
    clock.install(c);
    return c;
  }
};

struct MemoryStore {
  static constexpr const char* name = "memory";
  static constexpr bool persistent = false;
  static Config config(const TempDir& dir, const TestClock& clock) {
    Config c = RocksStore::config(dir, clock);
    c.strategy = Strategy::disabled;
    return c;
  }
};

// Fixture for the shared test bodies: one temp dir, one clock, a config of the store kind.
template <class S>
struct Fixture {
  TempDir dir;
  TestClock clock;
  Config config = S::config(dir, clock);
  Cache open() { return Cache::open(config); }
};

inline SetOptions ttl(std::int64_t seconds, std::string category = "default") {
  SetOptions o;
  o.ttl = std::chrono::seconds(seconds);
  o.category = std::move(category);
  return o;
}

// Totals found by visiting every stored entry, to compare with Stats' counters.
struct ScannedTotals {
  std::uint64_t entries = 0, bytes = 0;
  std::map<std::string, std::uint64_t> categories;
};
inline ScannedTotals scan_totals(Cache& c) {
  ScannedTotals t;
  for (const auto& k : c.keys()) {
    auto info = c.metadata(k);
    if (!info) continue;
    ++t.entries;
    t.bytes += info->size_bytes;
    t.categories[info->category]++;
  }
  return t;
}

// Problems engine::verify finds in the cache's store (empty when every invariant holds).
inline std::vector<std::string> store_problems(Cache& c) {
  engine::VerifyReport report;
  const kv::Status s = backend_of(c)->primary().verify(&report);
  if (!s.ok()) return {"verify failed: " + s.message};
  return report.problems;
}

}  // namespace larder::test
