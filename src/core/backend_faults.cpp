// core::Backend's fault handling (backend.hpp): the engine of each operation, the circuit breaker
// that bypasses a failing store (memory serves, the keys written meanwhile are removed from the
// store when it recovers) and the refusal of writes by a store that cannot write (full disk).
#include <string>
#include <vector>

#include <fmt/format.h>

#include "core/backend.hpp"

namespace larder::core {

using kv::Code;

Backend::Lease Backend::begin() {
  if (inherited()) return {fallback_.get(), false};
  if (!breaker_.open()) return {primary_.get(), true};
  if (!breaker_.refusing(mono_.now_ns()) && try_recover()) return {primary_.get(), true};
  return {fallback_.get(), false};
}

bool Backend::try_recover() {
  std::lock_guard lock(breaker_mu_);
  if (!breaker_.open()) return true;
  if (breaker_.refusing(mono_.now_ns())) return false;
  // Probe the store by removing what was written to memory meanwhile: the store must not serve
  // values older than those.
  // A store that failed may need resuming or reopening before it works again (RocksDB keeps a
  // background error until then): without this the breaker never closed.
  kv::Status s = primary_->recover_store();
  std::size_t n = 0;
  if (!s.ok()) {
  } else if (touched_all_) {
    s = primary_->clear(&n);
  } else {
    std::vector<std::string> keys(touched_.begin(), touched_.end());
    if (keys.empty()) keys.emplace_back("\x01larder-probe");
    s = primary_->remove_keys(keys, &n);
  }
  if (!s.ok()) {
    breaker_.failure(mono_.now_ns());
    log_.logf(util::Level::warn, "store still failing ({}); retrying in {}s", s.message,
              kBreakerRecovery.count());
    return false;
  }
  std::size_t cleared = 0;
  (void)fallback_->clear(&cleared);
  const std::uint64_t kept = bypassed_writes_.exchange(0);
  if (kept > 0) {
    log_.logf(util::Level::warn,
              "{} writes made while the store was bypassed were kept in memory only and are "
              "gone now (their keys were removed from the store)",
              kept);
    set_last_error(
        fmt::format("{} writes made while the store was bypassed were not persisted", kept));
  }
  touched_.clear();
  touched_all_ = false;
  breaker_.success();
  log_.log(util::Level::info, "store recovered; circuit breaker closed");
  return true;
}

void Backend::finish(const Lease& lease, const kv::Status& s, std::string_view what,
                     std::span<const std::string> written) {
  if (!lease.primary && !written.empty()) {
    std::lock_guard lock(breaker_mu_);
    for (std::size_t i = 1; i < written.size() && !touched_all_; ++i) {
      if (touched_.size() >= kMaxTouched)
        touched_all_ = true;
      else
        touched_.emplace(written[i]);
    }
  }
  finish(lease, s, what, written.empty() ? std::string_view() : std::string_view(written[0]));
}

void Backend::finish(const Lease& lease, const kv::Status& s, std::string_view what,
                     std::string_view written, Wrote scope) {
  const bool all_written = scope == Wrote::everything;
  if (!lease.primary && (!written.empty() || all_written)) {
    bypassed_writes_.fetch_add(1);
    std::lock_guard lock(breaker_mu_);
    if (all_written || touched_.size() >= kMaxTouched)
      touched_all_ = true;
    else
      touched_.emplace(written);
  }
  if (!s.failed()) {
    if (lease.primary && s.ok()) breaker_.clear_failures();
    return;
  }
  counters_->error++;
  const bool write = !written.empty() || all_written;
  if (lease.primary && write && s.code == Code::io_error) {
    // A store that cannot write (full disk, EROFS, EIO) still serves reads: refuse writes, do not
    // bypass it, and let the housekeeper make it writable again.
    if (!writes_failing_.exchange(true)) {
      log_.logf(util::Level::error, "{} failed, refusing writes until the store recovers: {}", what,
                s.message);
      set_last_error(fmt::format("{} failed: {}", what, s.message));
      {
        std::lock_guard lock(hk_mu_);
        hk_recover_ = true;
      }
      hk_cv_.notify_one();
    } else {
      log_.logf(util::Level::debug, "{} refused: {}", what, s.message);
      // Space may be back: try now (bounded by the spacing), so the next write goes through.
      const std::int64_t now = now_ns();
      std::int64_t due = inline_recovery_at_ns_.load();
      if (now >= due && inline_recovery_at_ns_.compare_exchange_strong(
                            due, now + std::chrono::nanoseconds(kInlineRecoverySpacing).count()))
        recover_writes();
    }
    return;
  }
  log_.logf(util::Level::warn, "{} failed: {}", what, s.message);
  if (!lease.primary || s.code != Code::io_error) return;
  set_last_error(fmt::format("{} failed: {}", what, s.message));
  if (breaker_.open()) return;  // (a call on the store that began before it opened)
  {
    std::lock_guard lock(breaker_mu_);
    if (breaker_.failure(mono_.now_ns())) {
      set_last_error(fmt::format("store bypassed after {} consecutive failures; last: {}",
                                 kBreakerThreshold, s.message));
      log_.logf(util::Level::error, "circuit breaker open: using memory for {}s",
                kBreakerRecovery.count());
    }
  }
}

void Backend::recover_writes() {
  std::unique_lock lock(recovery_mu_, std::try_to_lock);
  if (!lock.owns_lock() || !writes_failing_.load()) return;  // another thread is at it, or done
  const kv::Status s = primary_->recover_store();
  if (!s.ok()) {
    log_.logf(util::Level::debug, "store still refuses writes: {}", s.message);
    return;
  }
  writes_failing_.store(false);
  breaker_.clear_failures();
  log_.log(util::Level::info, "store takes writes again");
}

}  // namespace larder::core
