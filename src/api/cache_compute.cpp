// Cache::get_or_compute: one computation per key at a time — in this process (flights, one per
// Service), across the processes of a shared cache (leases from the owner) — and stale values
// served while one caller recomputes (ComputeOptions::serve_stale).
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <condition_variable>
#include <map>
#include <mutex>
#include <thread>

#include <fmt/format.h>

#include "api/cache_impl.hpp"
#include "core/backend.hpp"
#include "larder/larder.hpp"
#include "util/clock.hpp"

namespace larder {

using api::check_ttl;

std::string Cache::get_or_compute(std::string_view key, const std::function<std::string()>& compute,
                                  const SetOptions& options) {
  return get_or_compute(key, compute, options, ComputeOptions{});
}

namespace {

// compute() and store() its value, then end the lease on `stored_key` if `leased` (also when
// compute throws, which is passed on).
std::string compute_and_store(Service& service, const std::string& stored_key, bool leased,
                              const std::function<std::string()>& compute,
                              const std::function<void(const std::string&)>& store) {
  std::string value;
  try {
    value = compute();
    store(value);
  } catch (...) {
    if (leased) service.release_lease(stored_key, ::getpid());
    throw;
  }
  if (leased) service.release_lease(stored_key, ::getpid());
  return value;
}

// Computes `key`'s value once across processes: under a compute lease from the Service (the
// shared owner's table), or with the value another process stored meanwhile. Waits at most
// about lease_timeout for another holder (whose lease ends at once when its process dies), then
// computes without one.
std::string compute_leased(Service& service, const std::string& stored_key,
                           const std::function<std::string()>& compute,
                           const std::function<void(const std::string&)>& store,
                           const ComputeOptions& o) {
  const std::int64_t pid = ::getpid();
  const std::int64_t timeout_ms = std::max<std::int64_t>(o.lease_timeout.count(), 1);
  const util::MonotonicClock clock(service.config().monotonic_clock);
  const auto give_up = clock.now() + o.lease_timeout;
  auto pause = std::chrono::milliseconds(2);
  for (;;) {
    // Another flight may have finished between our miss and now: look again, uncounted.
    if (auto v = service.peek(stored_key)) return std::move(*v);
    std::int64_t wait_ms = 0;
    const bool granted = service.acquire_lease(stored_key, pid, timeout_ms, &wait_ms);
    // Unreachable owner (wait_ms < 0): waiting would only add its timeouts to ours.
    if (granted || wait_ms < 0 || clock.now() >= give_up)
      return compute_and_store(service, stored_key, granted, compute, store);
    const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
        clock.until(give_up, o.lease_timeout));
    std::this_thread::sleep_for(std::max(
        std::chrono::milliseconds(1), std::min({pause, std::chrono::milliseconds(wait_ms), left})));
    pause = std::min(pause * 2, std::chrono::milliseconds(50));
  }
}

}  // namespace

std::string Cache::get_or_compute(std::string_view key, const std::function<std::string()>& compute,
                                  const SetOptions& options, const ComputeOptions& co) {
  check_ttl(options);
  check_ttl(co.lease_timeout, "lease_timeout");
  if (auto v = get(key)) return std::move(*v);
  Service& service = *impl_->service;
  const std::string flight_key = impl_->stored(key);
  auto store = [&](const std::string& value) { set(key, value, options); };
  // A stale entry (serve_stale): returned at once by every caller but the one leading this
  // process's flight for the key, which recomputes it when its process gets the lease (one
  // compute across threads and processes) and returns the new value; without the lease it
  // returns the stale value too. Callers that find no stale entry wait for the flight.
  std::optional<std::string> stale;
  if (co.serve_stale && impl_->valid_key(key)) {
    auto found = service.inspect({flight_key}, true);
    if (!found.empty() && found[0] && found[0]->info.status == EntryStatus::stale)
      stale = std::move(found[0]->value);
  }
  bool leader = false;
  auto flight = service.join_flight(flight_key, &leader);
  if (!leader) {
    if (stale) return std::move(*stale);
    std::unique_lock lock(flight->mu);
    flight->cv.wait(lock, [&] { return flight->done; });
    if (flight->error) std::rethrow_exception(flight->error);
    return flight->value;
  }
  std::string value;
  std::exception_ptr error;
  try {
    if (!impl_->valid_key(key)) {
      value = compute();  // a key no store can hold: computed every time, nothing cached
    } else if (auto fresh = stale ? service.peek(flight_key) : std::nullopt) {
      value = std::move(*fresh);  // a flight that ended after our look refreshed it
    } else if (stale) {
      std::int64_t wait_ms = 0;
      if (service.acquire_lease(flight_key, ::getpid(),
                                std::max<std::int64_t>(co.lease_timeout.count(), 1), &wait_ms))
        value = compute_and_store(service, flight_key, true, compute, store);
      else
        value = std::move(*stale);  // another process recomputes it
    } else {
      value = compute_leased(service, flight_key, compute, store, co);
    }
  } catch (...) {
    error = std::current_exception();
  }
  service.end_flight(flight_key);
  {
    std::lock_guard lock(flight->mu);
    flight->done = true;
    flight->value = value;
    flight->error = error;
  }
  flight->cv.notify_all();
  if (error) std::rethrow_exception(error);
  return value;
}

}  // namespace larder
