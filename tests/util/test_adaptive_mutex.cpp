#include <doctest/doctest.h>

#include <atomic>
#include <mutex>
#include <thread>
#include <vector>

#include "util/adaptive_mutex.hpp"

using larder::util::AdaptiveMutex;

TEST_CASE("AdaptiveMutex: excludes, and try_lock fails while it is held") {
  AdaptiveMutex mu;
  {
    std::unique_lock held(mu);
    std::atomic<bool> got{true};
    std::thread other([&] {
      got = mu.try_lock();
      if (got) mu.unlock();
    });
    other.join();
    CHECK_FALSE(got.load());
  }
  CHECK(mu.try_lock());  // free again
  mu.unlock();

  // Threads that wait past the spin (the holder sleeps) and threads that get it while spinning
  // all see every other thread's writes: the count is exact.
  std::uint64_t count = 0;  // guarded by mu, deliberately not atomic
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t)
    threads.emplace_back([&, t] {
      for (int i = 0; i < 20000; ++i) {
        std::lock_guard lock(mu);
        ++count;
        if (t == 0 && i % 5000 == 0)
          std::this_thread::yield();  // a holder that lets go of its core
      }
    });
  for (auto& th : threads) th.join();
  CHECK(count == 80000);
}
