#include "util/fork.hpp"

#include <pthread.h>
#include <unistd.h>

#include <array>
#include <atomic>

namespace larder::util {

namespace {

constexpr std::size_t kSlots = 256;
// fd + 1 per slot, 0 = empty (constant-initialized, so usable during static initialization).
std::array<std::atomic<int>, kSlots> g_fds{};
std::atomic<std::uint64_t> g_generation{0};

void in_child() {
  g_generation.fetch_add(1);
  for (auto& slot : g_fds) {
    const int stored = slot.exchange(0);
    if (stored > 0) ::close(stored - 1);
  }
}

void register_handler() {
  static const bool registered = [] {
    ::pthread_atfork(nullptr, nullptr, in_child);
    return true;
  }();
  (void)registered;
}

}  // namespace

std::uint64_t fork_generation() {
  register_handler();
  return g_generation.load(std::memory_order_relaxed);
}

bool close_in_forked_child(int fd) {
  register_handler();
  for (auto& slot : g_fds) {
    int expected = 0;
    if (slot.compare_exchange_strong(expected, fd + 1)) return true;
  }
  return false;
}

void forget_in_forked_child(int fd) {
  for (auto& slot : g_fds) {
    int expected = fd + 1;
    if (slot.compare_exchange_strong(expected, 0)) return;
  }
}

}  // namespace larder::util
