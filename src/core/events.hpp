// The event log behind Cache::subscribe: every change the engine commits (set, remove,
// invalidate, evict, expire), numbered in commit order, in a bounded ring. Subscribers read it
// from where they left off (a shared cache's clients through the owner): writers never wait for
// them, and a subscriber that falls behind the ring loses the oldest events, counted.
//
// Thread-safety: every member function may be called from many threads at once.
#pragma once

#include <atomic>
#include <cstdint>
#include <deque>
#include <mutex>
#include <string>
#include <string_view>
#include <vector>

#include "engine/engine.hpp"
#include "larder/larder.hpp"

namespace larder::core {

// What one read of the log returns.
struct EventBatch {
  std::vector<Event> events;  // in commit order
  std::uint64_t next = 0;     // the sequence number to read from next
  std::uint64_t dropped = 0;  // events before `events` the reader will never see
};

// Asks read() to start at the end of the log (no past events).
inline constexpr std::uint64_t kEventsFromNow = ~std::uint64_t{0};

class EventLog final : public engine::EventSink {
 public:
  // The ring keeps at most this many events and this many key bytes; older ones are dropped.
  static constexpr std::size_t kMaxEvents = 65'536;
  static constexpr std::size_t kMaxKeyBytes = 16u << 20;

  bool wants_events() const override { return wanted_.load(std::memory_order_relaxed); }
  void on_event(engine::EventKind kind, std::string_view key) override;

  // At most `max` events from sequence number `from` on (kEventsFromNow: none, only where the
  // log ends). From then on the log records events. A `from` past the end (a log that started
  // again, e.g. in a new owner) reads from its oldest event.
  EventBatch read(std::uint64_t from, std::size_t max);

 private:
  struct Item {
    engine::EventKind kind;
    std::string key;
  };
  std::atomic<bool> wanted_{false};
  std::mutex mu_;
  std::deque<Item> ring_;      // under mu_
  std::uint64_t first_ = 0;    // sequence number of ring_.front(); under mu_
  std::size_t key_bytes_ = 0;  // under mu_
};

}  // namespace larder::core
