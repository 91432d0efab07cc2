// Operation counters of one process for one cache directory. The engine counts evictions,
// expirations and invalidations; the layer above it hits, misses, sets, deletes, errors and
// cleanups. A Counters object may live in a memory-mapped counter file (counter_file.hpp), so
// that its values outlive the process even when it is killed: the layout is therefore fixed
// (nine lock-free 64-bit atomics in this order, format 1) and must only ever be appended to.
//
// Thread-safety: every member is an atomic.
#pragma once

#include <array>
#include <atomic>
#include <cstddef>
#include <cstdint>
#include <type_traits>

namespace larder::stats {

inline constexpr std::size_t kCounterCount = 9;
using CounterValues = std::array<std::uint64_t, kCounterCount>;

struct Counters {
  std::atomic<std::uint64_t> hit{0}, miss{0}, set{0}, del{0}, eviction{0}, expiration{0},
      invalidation{0}, error{0}, cleanup{0};

  CounterValues values() const {
    return {hit.load(),        miss.load(),         set.load(),   del.load(),    eviction.load(),
            expiration.load(), invalidation.load(), error.load(), cleanup.load()};
  }

  // Copies the counters into any struct with the public names (Stats, stats::Snapshot).
  template <class T>
  void copy_to(T& s) const {
    assign(values(), s);
  }

  template <class T>
  static void assign(const CounterValues& v, T& s) {
    s.hit_count = v[0];
    s.miss_count = v[1];
    s.set_count = v[2];
    s.delete_count = v[3];
    s.eviction_count = v[4];
    s.expiration_count = v[5];
    s.invalidation_count = v[6];
    s.error_count = v[7];
    s.cleanup_count = v[8];
  }

  template <class T>
  static CounterValues of(const T& s) {
    return {s.hit_count,          s.miss_count,     s.set_count,
            s.delete_count,       s.eviction_count, s.expiration_count,
            s.invalidation_count, s.error_count,    s.cleanup_count};
  }
};

static_assert(std::atomic<std::uint64_t>::is_always_lock_free);
static_assert(std::is_standard_layout_v<Counters>);
static_assert(sizeof(Counters) == kCounterCount * sizeof(std::uint64_t));

}  // namespace larder::stats
