#include "util/mapping_guard.hpp"

#include <signal.h>
#include <sys/mman.h>

#include <atomic>
#include <cstdint>
#include <mutex>

namespace larder::util {

namespace {

struct Slot {
  std::atomic<std::uintptr_t> start{0};
  std::atomic<std::size_t> bytes{0};
  std::atomic<bool> lost{false};
};

Slot g_slots[kMaxGuardedMappings];
struct sigaction g_previous {};
std::once_flag g_install;

void on_sigbus(int sig, siginfo_t* info, void* context) {
  const auto addr = reinterpret_cast<std::uintptr_t>(info->si_addr);
  for (Slot& s : g_slots) {
    const std::uintptr_t start = s.start.load(std::memory_order_acquire);
    const std::size_t bytes = s.bytes.load(std::memory_order_acquire);
    if (start == 0 || addr < start || addr >= start + bytes) continue;
    // The file under this mapping shrank: put zero pages in its place and let the access retry.
    void* m = ::mmap(reinterpret_cast<void*>(start), bytes, PROT_READ | PROT_WRITE,
                     MAP_FIXED | MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (m != MAP_FAILED) {
      s.lost.store(true, std::memory_order_release);
      return;
    }
    break;
  }
  // Not ours: whoever handled SIGBUS before, else the default action (the access faults again).
  if ((g_previous.sa_flags & SA_SIGINFO) != 0 && g_previous.sa_sigaction != nullptr) {
    g_previous.sa_sigaction(sig, info, context);
    return;
  }
  if (g_previous.sa_handler != SIG_DFL && g_previous.sa_handler != SIG_IGN &&
      g_previous.sa_handler != nullptr) {
    g_previous.sa_handler(sig);
    return;
  }
  struct sigaction dfl {};
  dfl.sa_handler = SIG_DFL;
  ::sigemptyset(&dfl.sa_mask);
  ::sigaction(SIGBUS, &dfl, nullptr);
}

void install() {
  struct sigaction sa {};
  sa.sa_sigaction = on_sigbus;
  sa.sa_flags = SA_SIGINFO | SA_ONSTACK;
  ::sigemptyset(&sa.sa_mask);
  ::sigaction(SIGBUS, &sa, &g_previous);
}

}  // namespace

std::mutex g_slots_mu;  // guard / unguard; the handler only reads the atomics

bool guard_mapping(void* addr, std::size_t bytes) {
  std::call_once(g_install, install);
  std::lock_guard lock(g_slots_mu);
  for (Slot& s : g_slots) {
    if (s.start.load() != 0) continue;
    s.bytes.store(bytes, std::memory_order_release);
    s.lost.store(false, std::memory_order_release);
    s.start.store(reinterpret_cast<std::uintptr_t>(addr), std::memory_order_release);
    return true;
  }
  return false;
}

void unguard_mapping(void* addr) {
  std::lock_guard lock(g_slots_mu);
  for (Slot& s : g_slots) {
    if (s.start.load() != reinterpret_cast<std::uintptr_t>(addr)) continue;
    s.start.store(0, std::memory_order_release);
    return;
  }
}

bool mapping_lost(const void* addr) {
  const auto a = reinterpret_cast<std::uintptr_t>(addr);
  for (const Slot& s : g_slots)
    if (s.start.load() == a) return s.lost.load();
  return false;
}

}  // namespace larder::util
