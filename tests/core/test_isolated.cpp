// The process_isolated directory lifecycle (core/isolated.hpp): liveness locks, adopting a dead
// process's directory, collecting. Whole processes: tests/process/test_shared.cpp.
#include <doctest/doctest.h>

#include <atomic>
#include <thread>
#include <vector>

#include "core/isolated.hpp"
#include "support.hpp"

using namespace larder;
using namespace larder::test;
using namespace std::chrono_literals;

TEST_CASE("isolated: a directory being given its liveness lock is never adopted meanwhile") {
  // Another process scanning for a dead process's directory must not take one whose lock file
  // has appeared but is not locked yet: it would take a live process's directory (seen in CI:
  // two processes started together, one used the other's directory).
  TempDir tmp;
  const auto root = tmp / "cache";
  std::filesystem::create_directories(root);
  std::atomic<bool> stop{false};
  std::vector<std::filesystem::path> adopted;
  std::vector<util::LockFile> adopted_locks;
  std::thread adopter([&] {
    while (!stop.load()) {
      util::LockFile lock;
      if (auto dir = core::adopt_dead_process_dir(root, &lock); !dir.empty()) {
        adopted.push_back(dir);
        adopted_locks.push_back(std::move(lock));  // held, as a process using it would
      }
    }
  });
  // Each directory, once locked, moves out of the root, so the adopter keeps looking at the one
  // being set up.
  const auto done = tmp / "done";
  std::filesystem::create_directories(done);
  std::vector<util::LockFile> ours;
  int failed = 0;
  for (int i = 0; i < 1000; ++i) {
    const std::string name = "proc_" + std::to_string(100000 + i);
    std::filesystem::create_directory(root / name);
    util::LockFile lock;
    if (!core::lock_process_dir(root / name, 0ms, &lock)) ++failed;
    ours.push_back(std::move(lock));
    std::error_code ec;
    std::filesystem::rename(root / name, done / name, ec);
  }
  stop = true;
  adopter.join();
  CHECK(adopted.empty());
  CHECK(failed == 0);
  // Once its holder is gone, a directory is adopted as before.
  std::filesystem::rename(done / "proc_100000", root / "proc_100000");
  ours.front().close();
  util::LockFile lock;
  CHECK(core::adopt_dead_process_dir(root, &lock) == root / "proc_100000");
}
