// util::AdaptiveMutex: a mutex that spins for a short while before it sleeps.
//
// Why it exists: a std::mutex waiter sleeps in the kernel at once and is woken by a system call
// of the holder. Where the critical section is a microsecond or two (the engine's set), two
// threads that take turns pay a sleep and a wake-up each turn; in a virtual machine that costs
// far more than the section itself (two threads setting into the memory store ran at 0.25-0.47
// of one thread, 24 % of the samples in the kernel's interrupt enabling). Spinning first hands
// the mutex over without the kernel whenever the holder lets go within the spin.
//
// The spin is bounded (kSpins pause instructions, a few microseconds): a holder that keeps the
// mutex longer (a page of a long invalidation, a flush) costs a waiter one short spin, then the
// usual sleep. Not fair, as std::mutex is not.
//
// Thread-safety: as std::mutex (meets Lockable; use it with std::lock_guard / unique_lock).
#pragma once

#include <mutex>

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#endif

namespace larder::util {

class AdaptiveMutex {
 public:
  // Pause instructions before a waiter sleeps.
  static constexpr int kSpins = 256;

  void lock() {
    for (int i = 0; i < kSpins; ++i) {
      if (mu_.try_lock()) return;
      pause();
    }
    mu_.lock();
  }
  // true when the mutex was free and is now held; false at once otherwise.
  bool try_lock() { return mu_.try_lock(); }
  void unlock() { mu_.unlock(); }

 private:
  static void pause() {
#if defined(__x86_64__) || defined(__i386__)
    _mm_pause();
#elif defined(__aarch64__)
    asm volatile("yield");
#endif
  }
  std::mutex mu_;
};

}  // namespace larder::util
