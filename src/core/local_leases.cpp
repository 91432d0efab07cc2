// LocalService's compute leases (get_or_compute across processes), event reads and accessors.
// See local_service.cpp.
#include <unistd.h>

#include <cerrno>
#include <csignal>
#include <fstream>

#include "core/backend.hpp"
#include "core/op_scope.hpp"
#include "core/service.hpp"

namespace larder::core {

using namespace detail;

namespace {

// True when process `pid` is gone (a lease it held is void): no such process, or a zombie
// (killed, not yet reaped by its parent).
bool process_gone(std::int64_t pid) {
  if (pid <= 0) return false;
  if (::kill(static_cast<pid_t>(pid), 0) != 0) return errno == ESRCH;
  std::ifstream stat(fmt::format("/proc/{}/stat", pid));
  std::string line;
  if (!std::getline(stat, line)) return false;
  // "pid (comm) S ...": the state follows the last ')' (comm may hold spaces and parentheses).
  const auto close = line.rfind(')');
  return close != std::string::npos && close + 2 < line.size() &&
         (line[close + 2] == 'Z' || line[close + 2] == 'X');
}

constexpr std::size_t kMaxLeases = 100'000;
constexpr std::int64_t kMaxLeaseMs = 24LL * 3600 * 1000;

}  // namespace

bool LocalService::acquire_lease(std::string_view key, std::int64_t holder, std::int64_t timeout_ms,
                                 std::int64_t* wait_ms) {
  const auto now = backend_->monotonic_clock().now();
  std::lock_guard lock(leases_mu_);
  if (leases_.size() >= kMaxLeases)
    std::erase_if(leases_, [&](const auto& kv) { return kv.second.expires <= now; });
  auto [it, fresh] = leases_.try_emplace(std::string(key));
  Lease& l = it->second;
  if (!fresh && l.holder != holder && l.expires > now && !process_gone(l.holder)) {
    *wait_ms = std::chrono::duration_cast<std::chrono::milliseconds>(l.expires - now).count();
    if (!l.refused)
      backend_->log().logf(util::Level::debug,
                           "compute lease on '{}' is held by process {}: process {} waits", key,
                           l.holder, holder);
    l.refused = true;
    return false;
  }
  if (fresh && leases_.size() > kMaxLeases) {  // every lease live: refuse rather than grow
    leases_.erase(it);
    *wait_ms = 10;
    return false;
  }
  l.holder = holder;
  l.refused = false;
  // At most a day: a peer's number must not overflow the clock.
  l.expires = now + std::chrono::milliseconds(std::clamp<std::int64_t>(timeout_ms, 1, kMaxLeaseMs));
  *wait_ms = 0;
  return true;
}

void LocalService::release_lease(std::string_view key, std::int64_t holder) {
  std::lock_guard lock(leases_mu_);
  if (auto it = leases_.find(std::string(key)); it != leases_.end() && it->second.holder == holder)
    leases_.erase(it);
}

EventBatch LocalService::events_since(std::uint64_t from, std::size_t max) {
  return backend_->events().read(from, max);
}

bool LocalService::degraded() const {
  return backend_->degraded();
}
std::string LocalService::last_error() const {
  return backend_->last_error();
}
std::filesystem::path LocalService::directory() const {
  return backend_->resolved().dir;
}
const Config& LocalService::config() const {
  return backend_->resolved().config;
}
bool LocalService::inherited() const {
  return backend_->inherited();
}

}  // namespace larder::core
