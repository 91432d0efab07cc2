// The operation counters, defined once. LARDER_COUNTERS lists each counter with its larder::Stats
// field name (the name a user reads in Stats, .cache_stats.json, the wire protocol and cachectl's
// text and JSON), its Prometheus metric and label (Prometheus's naming guide: `larder_gets_total
// {result="hit"}`) and what it counts. Everything that lists the counters is generated from it:
// the Counter enum, the in-memory and counter-file layout (Counters), the statistics file's
// fields, the protocol's order, cachectl's outputs.
//
// The order is persisted (counter files, format 1; the `contributors` arrays of the statistics
// file): append new counters at the end, never reorder. Adding a counter: one line here, one
// field in larder::Stats (a missing field fails to compile), and the code that counts it.
//
// A Counters object may live in a memory-mapped counter file (counter_file.hpp), so that its
// values outlive the process even when it is killed: lock-free 64-bit atomics (kCounterCount) in
// this order. Thread-safety: every member is an atomic.
#pragma once

#include <array>
#include <atomic>
#include <cstddef>
#include <cstdint>
#include <string_view>
#include <type_traits>

namespace larder::stats {

// X(member, Stats field, Prometheus metric, its label, what it counts). The Prometheus names
// follow its naming guide (counters end in _total; hits and misses are one metric by result).
#define LARDER_COUNTERS(X)                                                                         \
  X(hit, hit_count, "gets_total", "result=\"hit\"",                                                \
    "reads (get, get_many, get_entry, get_or_compute) that returned an entry")                     \
  X(miss, miss_count, "gets_total", "result=\"miss\"",                                             \
    "reads that returned nothing (absent, not fresh, or failed)")                                  \
  X(set, set_count, "sets_total", "",                                                              \
    "entries stored (set, set_many items, get_or_compute results)")                                \
  X(del, delete_count, "deletes_total", "", "entries removed by remove, clear and clear_category") \
  X(eviction, eviction_count, "evictions_total", "",                                               \
    "live entries removed to keep max_entries / max_size_bytes")                                   \
  X(expiration, expiration_count, "expirations_total", "",                                         \
    "expired entries removed by cleanup or limit enforcement")                                     \
  X(invalidation, invalidation_count, "invalidations_total", "",                                   \
    "entries marked invalid (once each)")                                                          \
  X(error, error_count, "errors_total", "",                                                        \
    "failures: I/O errors, corrupt records or files, timeouts, refusals")                          \
  X(cleanup, cleanup_count, "cleanups_total", "", "cleanup runs (cleanup() and the periodic one)") \
  X(remote_hit, remote_hit_count, "remote_gets_total", "result=\"hit\"",                           \
    "local misses the remote tier answered")                                                       \
  X(remote_miss, remote_miss_count, "remote_gets_total", "result=\"miss\"",                        \
    "local misses the remote tier did not have either")                                            \
  X(remote_error, remote_error_count, "remote_errors_total", "",                                   \
    "calls that needed the remote tier and could not use it (down, slow, refusing)")

enum class Counter : std::uint8_t {
#define LARDER_COUNTER_ENUM(member, field, metric, label, help) member,
  LARDER_COUNTERS(LARDER_COUNTER_ENUM)
#undef LARDER_COUNTER_ENUM
};

inline constexpr std::size_t kCounterCount = 0
#define LARDER_COUNTER_ONE(member, field, metric, label, help) +1
    LARDER_COUNTERS(LARDER_COUNTER_ONE)
#undef LARDER_COUNTER_ONE
    ;
// The persisted order (counter files written by earlier versions).
static_assert(static_cast<int>(Counter::hit) == 0 && static_cast<int>(Counter::cleanup) == 8 &&
              static_cast<int>(Counter::remote_error) == 11 && kCounterCount == 12);

constexpr std::size_t index(Counter c) {
  return static_cast<std::size_t>(c);
}

using CounterValues = std::array<std::uint64_t, kCounterCount>;

struct CounterInfo {
  std::string_view name;    // the larder::Stats field
  std::string_view metric;  // the Prometheus metric, without the larder_ prefix
  std::string_view label;   // its label that tells this counter apart ("" when none)
  std::string_view help;    // what it counts
};
inline constexpr std::array<CounterInfo, kCounterCount> kCounterInfo = {{
#define LARDER_COUNTER_INFO(member, field, metric, label, help) {#field, metric, label, help},
    LARDER_COUNTERS(LARDER_COUNTER_INFO)
#undef LARDER_COUNTER_INFO
}};

// Calls f(Counter, name, field) for every counter field of `s`, in order: any struct with the
// Stats field names (larder::Stats, stats::Snapshot), const or not.
template <class S, class F>
void for_each_counter(S& s, F&& f) {
#define LARDER_COUNTER_VISIT(member, field, metric, label, help) \
  f(Counter::member, std::string_view(#field), s.field);
  LARDER_COUNTERS(LARDER_COUNTER_VISIT)
#undef LARDER_COUNTER_VISIT
}

struct Counters {
#define LARDER_COUNTER_MEMBER(member, field, metric, label, help) \
  std::atomic<std::uint64_t> member{0};
  LARDER_COUNTERS(LARDER_COUNTER_MEMBER)
#undef LARDER_COUNTER_MEMBER

  CounterValues values() const {
    return {
#define LARDER_COUNTER_LOAD(member, field, metric, label, help) member.load(),
        LARDER_COUNTERS(LARDER_COUNTER_LOAD)
#undef LARDER_COUNTER_LOAD
    };
  }

  // Copies the counters into any struct with the Stats field names.
  template <class T>
  void copy_to(T& s) const {
    assign(values(), s);
  }

  template <class T>
  static void assign(const CounterValues& v, T& s) {
    for_each_counter(
        s, [&](Counter c, std::string_view, std::uint64_t& field) { field = v[index(c)]; });
  }

  template <class T>
  static CounterValues of(const T& s) {
    CounterValues v{};
    for_each_counter(
        s, [&](Counter c, std::string_view, const std::uint64_t& field) { v[index(c)] = field; });
    return v;
  }
};

static_assert(std::atomic<std::uint64_t>::is_always_lock_free);
static_assert(std::is_standard_layout_v<Counters>);
static_assert(sizeof(Counters) == kCounterCount * sizeof(std::uint64_t));

}  // namespace larder::stats
