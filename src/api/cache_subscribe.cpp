// Cache::subscribe: a thread per subscription that reads the service's change events and calls
// the subscriber (Subscription ends it).
#include <atomic>
#include <condition_variable>
#include <mutex>
#include <thread>

#include "api/cache_impl.hpp"
#include "larder/larder.hpp"
#include "util/glob.hpp"

namespace larder {

struct Subscription::State {
  std::mutex mu;
  std::condition_variable cv;
  bool stop = false;
  std::atomic<std::uint64_t> dropped{0};
  std::thread thread;

  // Reads the log until stopped, delivering matching events.
  void run(std::shared_ptr<Service> service, std::uint64_t next, std::string scope,
           std::string glob, std::function<void(const Event&)> callback,
           std::chrono::milliseconds idle) {
    for (;;) {
      {
        std::unique_lock lock(mu);
        if (stop) return;
      }
      core::EventBatch b = service->events_since(next, 1024);
      next = b.next;
      dropped += b.dropped;
      for (Event& e : b.events) {
        if (!core::in_scope(e.key, scope)) continue;
        e.key = std::string(core::user_key(scope, e.key));
        if (!util::glob_match(glob, e.key)) continue;
        try {
          callback(e);
        } catch (...) {  // ignored, as documented
        }
      }
      if (b.events.size() < 1024) {
        std::unique_lock lock(mu);
        cv.wait_for(lock, idle, [&] { return stop; });
      }
    }
  }
};

Subscription::Subscription(std::shared_ptr<State> state) : state_(std::move(state)) {}
Subscription::Subscription(Subscription&&) noexcept = default;
Subscription& Subscription::operator=(Subscription&& other) noexcept {
  if (this != &other) {
    cancel();
    state_ = std::move(other.state_);
  }
  return *this;
}
Subscription::~Subscription() {
  cancel();
}

void Subscription::cancel() {
  if (!state_) return;
  {
    std::lock_guard lock(state_->mu);
    state_->stop = true;
  }
  state_->cv.notify_all();
  if (state_->thread.joinable()) state_->thread.join();
  state_.reset();
}

std::uint64_t Subscription::dropped() const {
  return state_ ? state_->dropped.load() : 0;
}

Subscription Cache::subscribe(std::function<void(const Event&)> callback, std::string_view glob) {
  if (glob.empty()) throw std::invalid_argument("subscribe: the pattern is empty");
  if (!callback) throw std::invalid_argument("subscribe: no callback");
  auto state = std::make_shared<Subscription::State>();
  // A client reads the owner's log over the socket: less often.
  const auto idle =
      impl_->service->backend() ? std::chrono::milliseconds(10) : std::chrono::milliseconds(20);
  // Where the log ends now: every change after subscribe() returns is delivered.
  const std::uint64_t from = impl_->service->events_since(core::kEventsFromNow, 0).next;
  state->thread = std::thread([state_ptr = state.get(), service = impl_->service, from,
                               scope = impl_->prefix, g = std::string(glob),
                               cb = std::move(callback), idle]() mutable {
    state_ptr->run(std::move(service), from, std::move(scope), std::move(g), std::move(cb), idle);
  });
  return Subscription(std::move(state));
}

}  // namespace larder
