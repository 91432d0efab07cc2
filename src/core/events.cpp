#include "core/events.hpp"

#include <algorithm>

namespace larder::core {

void EventLog::on_event(engine::EventKind kind, std::string_view key) {
  std::lock_guard lock(mu_);
  ring_.push_back({kind, std::string(key)});
  key_bytes_ += key.size();
  while (ring_.size() > kMaxEvents || key_bytes_ > kMaxKeyBytes) {
    key_bytes_ -= ring_.front().key.size();
    ring_.pop_front();
    ++first_;
  }
}

EventBatch EventLog::read(std::uint64_t from, std::size_t max) {
  wanted_.store(true, std::memory_order_relaxed);
  std::lock_guard lock(mu_);
  const std::uint64_t end = first_ + ring_.size();
  EventBatch b;
  if (from == kEventsFromNow) {
    b.next = end;
    return b;
  }
  if (from > end) from = first_;  // another log than the one `from` came from
  if (from < first_) {
    b.dropped = first_ - from;
    from = first_;
  }
  const std::size_t n = static_cast<std::size_t>(std::min<std::uint64_t>(end - from, max));
  b.events.reserve(n);
  for (std::size_t i = 0; i < n; ++i) {
    const Item& it = ring_[static_cast<std::size_t>(from - first_) + i];
    b.events.push_back({static_cast<Event::Kind>(it.kind), it.key});
  }
  b.next = from + n;
  return b;
}

}  // namespace larder::core
