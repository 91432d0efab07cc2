// The public Cache: argument checks and the default TTL, then a call on the Service behind the
// handle (core/service.hpp): local for isolated, disabled and unlocked shared caches, the shared
// node (shared/node.hpp) for shared caches with file locking. Also the registry that gives two
// opens of one directory in one process the same Service.
#include <unistd.h>
#include <algorithm>

#include <atomic>
#include <condition_variable>
#include <map>
#include <mutex>
#include <set>
#include <stdexcept>
#include <thread>

#include <fmt/format.h>

#include "api/access.hpp"
#include "api/config.hpp"
#include "api/value_signer.hpp"
#include "core/backend.hpp"
#include "core/config.hpp"
#include "core/isolated.hpp"
#include "core/log.hpp"
#include "core/service.hpp"
#include "larder/larder.hpp"
#include "shared/node.hpp"
#include "stats/counters.hpp"
#include "util/glob.hpp"

namespace larder {

using core::Service;
using core::SetRequest;

class Cache::Impl {
 public:
  Impl(std::shared_ptr<Service> s, std::shared_ptr<api::ValueSigner> signer,
       std::chrono::milliseconds default_ttl, std::string prefix = {},
       stats::Counters* ns = nullptr)
      : service(std::move(s)),
        signer(std::move(signer)),
        default_ttl(default_ttl),
        prefix(std::move(prefix)),
        ns(ns) {}
  std::shared_ptr<Service> service;
  // Signs values whose decoding would run code (shared by the handles of one open).
  std::shared_ptr<api::ValueSigner> signer;
  std::chrono::milliseconds default_ttl;
  // The namespace's key prefix (core::ns_prefix); empty for the unnamed namespace.
  std::string prefix;
  // A named namespace's operations through this process's handles (Service::ns_counters).
  stats::Counters* ns;

  // A key this handle can hold: 1 to kMaxKeyBytes bytes.
  static bool valid_key(std::string_view key) { return core::valid_user_key(key); }
  // The key as stored (core::stored_key).
  std::string stored(std::string_view key) const { return core::stored_key(prefix, key); }
  // Runs f(stored key), without copying the key when it is stored as it is.
  template <class F>
  auto with_key(std::string_view key, F&& f) const {
    if (prefix.empty() && !key.starts_with('\0')) return f(key);
    const std::string k = stored(key);
    return f(std::string_view(k));
  }
  // The key as the namespace's user knows it.
  std::string user_key(std::string_view stored_key) const {
    return std::string(core::user_key(prefix, stored_key));
  }
  void strip(std::vector<std::string>& keys) const {
    for (auto& k : keys)
      if (!prefix.empty() || k.starts_with('\0')) k = user_key(k);
  }
  void count(stats::Counter c, std::uint64_t n = 1) const {
    if (ns == nullptr || n == 0) return;
    switch (c) {
#define LARDER_NS_COUNT(member, field, metric, label, help) \
  case stats::Counter::member:                              \
    ns->member += n;                                        \
    break;
      LARDER_COUNTERS(LARDER_NS_COUNT)
#undef LARDER_NS_COUNT
    }
  }

  // A SetRequest for a key and options that passed the checks.
  SetRequest request(std::string_view key, std::string_view value,
                     const SetOptions& options) const {
    SetRequest q;
    q.key = stored(key);
    q.value = std::string(value);
    q.ttl_ms = options.ttl ? options.ttl->count() : default_ttl.count();
    q.category = options.category;
    q.metadata = options.metadata;
    return q;
  }
};

namespace {

void check_ttl(const SetOptions& options) {
  if (options.ttl && options.ttl->count() < 0)
    throw std::invalid_argument(
        fmt::format("ttl: must not be negative (got {}ms)", options.ttl->count()));
}

using core::valid_category;

}  // namespace

namespace api {

using core::Backend;
using core::LocalService;
using core::Resolved;

std::shared_ptr<Service> open_service(const Resolved& r) {
  if (r.dir.empty()) return std::make_shared<LocalService>(Backend::open(r));
  const bool node =
      r.config.strategy == Strategy::shared && r.config.use_file_locking && !r.read_only;
  // Leaked on purpose: services may be destroyed during static destruction.
  static auto* mu = new std::mutex;
  static auto* registry = new std::map<std::string, std::weak_ptr<Service>>;
  std::lock_guard lock(*mu);
  // A read-only view (cachectl) never shares with a writable open of the same directory.
  const std::string key = fmt::format("{}{}",
                                      node          ? "node:"
                                      : r.read_only ? "ro:"
                                                    : "dir:",
                                      r.dir.string());
  if (auto it = registry->find(key); it != registry->end()) {
    if (auto existing = it->second.lock(); existing && !existing->inherited()) {
      const Config& a = existing->config();
      const Config& b = r.config;
      if (a.max_entries != b.max_entries || a.max_size_bytes != b.max_size_bytes ||
          a.eviction_policy != b.eviction_policy || a.stale_factor != b.stale_factor)
        core::make_logger(b.log).logf(
            util::Level::warn,
            "{} is already open in this process; the second open shares it "
            "and its limits, policy and stale factor",
            r.dir.string());
      return existing;
    }
  }
  std::shared_ptr<Service> s;
  if (node)
    s = shared::open_node(r);
  else
    s = std::make_shared<LocalService>(Backend::open(r));
  (*registry)[key] = s;
  return s;
}

std::shared_ptr<core::Backend> backend_of(const Cache& cache) {
  return Cache::Access::service(cache)->backend();
}

}  // namespace api

const std::shared_ptr<core::Service>& Cache::Access::service(const Cache& cache) {
  return cache.impl_->service;
}

Cache::Cache(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
Cache::Cache(Cache&&) noexcept = default;
Cache& Cache::operator=(Cache&&) noexcept = default;
Cache::~Cache() = default;

Cache Cache::open(const Config& config) {
  const core::Resolved r = api::resolve(config);
  auto signer = std::make_shared<api::ValueSigner>(
      r.root.empty() ? std::filesystem::path() : r.root / "value.key",
      r.remote ? r.remote->secret : std::string(),
      [log = core::make_logger(config.log)](std::string_view m) { log.log(util::Level::warn, m); });
  return Cache(std::make_unique<Impl>(api::open_service(r), std::move(signer), config.default_ttl));
}

bool Cache::set(std::string_view key, std::string_view value, const SetOptions& options) {
  check_ttl(options);
  if (!impl_->valid_key(key)) return false;
  const SetRequest q = impl_->request(key, value, options);
  const bool ok = core::valid_set(q) && impl_->service->set(q);
  if (ok) impl_->count(stats::Counter::set);
  return ok;
}

std::vector<bool> Cache::set_many(const std::vector<std::pair<std::string, std::string>>& items,
                                  const SetOptions& options) {
  check_ttl(options);
  std::vector<bool> out(items.size(), false);
  if (!valid_category(options.category)) return out;
  std::vector<SetRequest> requests;
  std::vector<std::size_t> index;
  requests.reserve(items.size());
  for (std::size_t i = 0; i < items.size(); ++i) {
    if (!Impl::valid_key(items[i].first)) continue;
    SetRequest q = impl_->request(items[i].first, items[i].second, options);
    if (!core::valid_set(q)) continue;
    requests.push_back(std::move(q));
    index.push_back(i);
  }
  const std::vector<bool> stored = impl_->service->set_many(requests);
  for (std::size_t j = 0; j < stored.size() && j < index.size(); ++j) {
    out[index[j]] = stored[j];
    if (stored[j]) impl_->count(stats::Counter::set);
  }
  return out;
}

bool Cache::add(std::string_view key, std::string_view value, const SetOptions& options) {
  check_ttl(options);
  if (!impl_->valid_key(key)) return false;
  const SetRequest q = impl_->request(key, value, options);
  const bool ok = core::valid_set(q) && impl_->service->add(q);
  if (ok) impl_->count(stats::Counter::set);
  return ok;
}

bool Cache::touch(std::string_view key, std::chrono::milliseconds ttl) {
  if (ttl.count() < 0)
    throw std::invalid_argument(fmt::format("ttl: must not be negative (got {}ms)", ttl.count()));
  return impl_->valid_key(key) && impl_->with_key(key, [&](std::string_view k) {
    return impl_->service->touch(k, ttl.count());
  });
}

std::optional<std::int64_t> Cache::incr(std::string_view key, std::int64_t delta,
                                        const SetOptions& options) {
  check_ttl(options);
  if (!impl_->valid_key(key)) return std::nullopt;
  const SetRequest q = impl_->request(key, {}, options);
  if (!core::valid_set(q)) return std::nullopt;
  auto v = impl_->service->incr(q, delta);
  if (v) impl_->count(stats::Counter::set);
  return v;
}

bool Cache::compare_and_set(std::string_view key, std::string_view expected, std::string_view value,
                            const SetOptions& options) {
  check_ttl(options);
  if (!impl_->valid_key(key)) return false;
  const SetRequest q = impl_->request(key, value, options);
  const bool ok = core::valid_set(q) && impl_->service->compare_and_set(q, expected);
  if (ok) impl_->count(stats::Counter::set);
  return ok;
}

std::optional<Entry> Cache::get_entry_and_touch(std::string_view key,
                                                std::chrono::milliseconds ttl) {
  if (ttl.count() < 0)
    throw std::invalid_argument(fmt::format("ttl: must not be negative (got {}ms)", ttl.count()));
  std::optional<Entry> e = impl_->with_key(
      key, [&](std::string_view k) { return impl_->service->get_and_touch(k, ttl.count()); });
  if (e) e->info.key = impl_->user_key(e->info.key);
  impl_->count(e ? stats::Counter::hit : stats::Counter::miss);
  return e;
}

std::optional<std::string> Cache::get_and_touch(std::string_view key,
                                                std::chrono::milliseconds ttl) {
  std::optional<Entry> e = get_entry_and_touch(key, ttl);
  if (!e) return std::nullopt;
  return std::move(e->value);
}

bool Cache::set_all(const std::vector<std::pair<std::string, std::string>>& items,
                    const SetOptions& options) {
  check_ttl(options);
  std::vector<SetRequest> requests;
  requests.reserve(items.size());
  for (const auto& [key, value] : items) {
    if (!impl_->valid_key(key)) return false;  // all or nothing
    requests.push_back(impl_->request(key, value, options));
    if (!core::valid_set(requests.back())) return false;
  }
  if (!impl_->service->set_all(requests)) return false;
  std::set<std::string_view> distinct;
  for (const auto& [key, value] : items) distinct.insert(key);
  impl_->count(stats::Counter::set, distinct.size());
  return true;
}

// Reads pass invalid keys on: they miss in the store and are counted as misses like any other.
std::optional<std::string> Cache::get(std::string_view key) {
  std::optional<std::string> v =
      impl_->with_key(key, [&](std::string_view k) { return impl_->service->get(k); });
  impl_->count(v ? stats::Counter::hit : stats::Counter::miss);
  return v;
}

std::vector<std::optional<std::string>> Cache::get_many(const std::vector<std::string>& keys) {
  std::vector<std::optional<std::string>> out;
  if (impl_->prefix.empty() && std::none_of(keys.begin(), keys.end(), [](const std::string& k) {
        return k.starts_with('\0');
      })) {
    out = impl_->service->get_many(keys);
  } else {
    std::vector<std::string> stored;
    stored.reserve(keys.size());
    for (const auto& k : keys) stored.push_back(impl_->stored(k));
    out = impl_->service->get_many(stored);
  }
  for (const auto& v : out) impl_->count(v ? stats::Counter::hit : stats::Counter::miss);
  return out;
}

std::string Cache::get_or(std::string_view key, std::string_view fallback) {
  auto v = get(key);
  return v ? std::move(*v) : std::string(fallback);
}

std::optional<Entry> Cache::get_entry(std::string_view key, bool include_stale) {
  std::optional<Entry> e = impl_->with_key(
      key, [&](std::string_view k) { return impl_->service->get_entry(k, include_stale); });
  if (e) e->info.key = impl_->user_key(e->info.key);
  impl_->count(e ? stats::Counter::hit : stats::Counter::miss);
  return e;
}

bool Cache::exists(std::string_view key) {
  return impl_->valid_key(key) &&
         impl_->with_key(key, [&](std::string_view k) { return impl_->service->exists(k); });
}

std::optional<EntryInfo> Cache::metadata(std::string_view key) {
  if (!impl_->valid_key(key)) return std::nullopt;
  auto info = impl_->with_key(key, [&](std::string_view k) { return impl_->service->metadata(k); });
  if (info) info->key = impl_->user_key(info->key);
  return info;
}

bool Cache::remove(std::string_view key) {
  const bool ok = impl_->valid_key(key) && impl_->with_key(key, [&](std::string_view k) {
    return impl_->service->remove(k);
  });
  if (ok) impl_->count(stats::Counter::del);
  return ok;
}

std::size_t Cache::clear() {
  const std::size_t n = impl_->service->clear(impl_->prefix);
  impl_->count(stats::Counter::del, n);
  return n;
}

std::size_t Cache::clear_category(std::string_view category) {
  const std::size_t n = impl_->service->clear_category(category, impl_->prefix);
  impl_->count(stats::Counter::del, n);
  return n;
}

bool Cache::invalidate(std::string_view key) {
  const bool ok = impl_->valid_key(key) && impl_->with_key(key, [&](std::string_view k) {
    return impl_->service->invalidate(k);
  });
  if (ok) impl_->count(stats::Counter::invalidation);
  return ok;
}

std::size_t Cache::invalidate_category(std::string_view category) {
  const std::size_t n = impl_->service->invalidate_category(category, impl_->prefix);
  impl_->count(stats::Counter::invalidation, n);
  return n;
}

std::size_t Cache::invalidate_pattern(std::string_view glob) {
  if (glob.empty()) throw std::invalid_argument("invalidate_pattern: the pattern is empty");
  const std::size_t n = impl_->service->invalidate_pattern(glob, impl_->prefix);
  impl_->count(stats::Counter::invalidation, n);
  return n;
}

std::vector<std::string> Cache::keys() {
  std::vector<std::string> out = impl_->service->keys(impl_->prefix);
  impl_->strip(out);
  return out;
}

std::vector<std::string> Cache::keys_in_category(std::string_view category) {
  std::vector<std::string> out = impl_->service->keys_in_category(category, impl_->prefix);
  impl_->strip(out);
  return out;
}

Cache Cache::ns(std::string_view name, std::optional<std::chrono::milliseconds> default_ttl) {
  if (name.empty() || name.size() > kMaxNamespaceBytes || name.find('\0') != std::string_view::npos)
    throw std::invalid_argument(
        fmt::format("ns: a namespace name is 1 to {} bytes without NUL (got {} bytes)",
                    kMaxNamespaceBytes, name.size()));
  if (default_ttl && default_ttl->count() < 0)
    throw std::invalid_argument(
        fmt::format("ns: default_ttl must not be negative (got {}ms)", default_ttl->count()));
  Service& service = *impl_->service;
  return Cache(std::make_unique<Impl>(impl_->service, impl_->signer,
                                      default_ttl.value_or(impl_->default_ttl),
                                      core::ns_prefix(name), &service.ns_counters(name)));
}

std::size_t Cache::cleanup() {
  return impl_->service->cleanup();
}

Stats Cache::stats() {
  if (impl_->prefix.empty()) return impl_->service->stats();
  // A named namespace: its entries now (a scan of its keys) and the operations made through its
  // handles in this process.
  Stats s;
  impl_->ns->copy_to(s);
  const std::vector<std::string> keys = impl_->service->keys(impl_->prefix);
  constexpr std::size_t kPage = 1024;
  for (std::size_t i = 0; i < keys.size(); i += kPage) {
    const std::vector<std::string> page(
        keys.begin() + static_cast<std::ptrdiff_t>(i),
        keys.begin() + static_cast<std::ptrdiff_t>(std::min(keys.size(), i + kPage)));
    for (const auto& e : impl_->service->inspect(page, false)) {
      if (!e) continue;
      ++s.total_entries;
      s.total_size_bytes += e->info.size_bytes;
      ++s.categories[e->info.category];
      switch (e->info.status) {
        case EntryStatus::fresh:
          ++s.fresh_entries;
          break;
        case EntryStatus::stale:
          ++s.stale_entries;
          break;
        case EntryStatus::expired:
          ++s.expired_entries;
          break;
        case EntryStatus::invalid:
          ++s.invalid_entries;
          break;
      }
    }
  }
  return s;
}

void Cache::flush() {
  impl_->service->flush();
}

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
  const auto give_up = std::chrono::steady_clock::now() + o.lease_timeout;
  auto pause = std::chrono::milliseconds(2);
  for (;;) {
    // Another flight may have finished between our miss and now: look again, uncounted.
    if (auto v = service.peek(stored_key)) return std::move(*v);
    std::int64_t wait_ms = 0;
    const bool granted = service.acquire_lease(stored_key, pid, timeout_ms, &wait_ms);
    // Unreachable owner (wait_ms < 0): waiting would only add its timeouts to ours.
    if (granted || wait_ms < 0 || std::chrono::steady_clock::now() >= give_up)
      return compute_and_store(service, stored_key, granted, compute, store);
    const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
        give_up - std::chrono::steady_clock::now());
    std::this_thread::sleep_for(std::max(
        std::chrono::milliseconds(1), std::min({pause, std::chrono::milliseconds(wait_ms), left})));
    pause = std::min(pause * 2, std::chrono::milliseconds(50));
  }
}

}  // namespace

std::string Cache::get_or_compute(std::string_view key, const std::function<std::string()>& compute,
                                  const SetOptions& options, const ComputeOptions& co) {
  check_ttl(options);
  if (co.lease_timeout.count() < 0)
    throw std::invalid_argument(
        fmt::format("lease_timeout: must not be negative (got {}ms)", co.lease_timeout.count()));
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

// ---------------------------------------------------------------- subscriptions

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

bool Cache::degraded() const {
  return impl_->service->degraded();
}
std::string Cache::last_error() const {
  return impl_->service->last_error();
}
std::filesystem::path Cache::directory() const {
  return impl_->service->directory();
}

std::string Cache::value_tag(std::string_view bytes) {
  return impl_->signer->tag(bytes);
}

bool Cache::value_tag_valid(std::string_view bytes, std::string_view tag) {
  return impl_->signer->valid(bytes, tag);
}

void Cache::report_untrusted_value(std::string_view key, std::string_view why) {
  Service& s = *impl_->service;
  if (!impl_->signer->first_report()) {
    s.count_error({});  // counted; said once per cache
    return;
  }
  s.count_error(fmt::format(
      "'{}': {}; not decoded, read as a miss (said once per cache; error_count counts them){}", key,
      why,
      impl_->signer->has_shared_secret()
          ? ""
          : ". To share such values between machines, give every machine's remote URL the same "
            "secret_file"));
}

void Cache::count_decode_error(std::string_view key, std::string_view what) {
  impl_->service->count_error(
      fmt::format("get_object('{}'): stored bytes do not decode: {}", key, what));
}

// ---------------------------------------------------------------- value types

double EntryInfo::age_seconds() const {
  return std::chrono::duration<double>(observed_at - created_at).count();
}

std::optional<double> EntryInfo::remaining_ttl_seconds() const {
  if (!expires_at) return std::nullopt;
  return std::chrono::duration<double>(*expires_at - observed_at).count();
}

double Stats::hit_rate() const {
  const std::uint64_t reads = hit_count + miss_count;
  return reads == 0 ? 0.0 : 100.0 * static_cast<double>(hit_count) / static_cast<double>(reads);
}

double Stats::miss_rate() const {
  const std::uint64_t reads = hit_count + miss_count;
  return reads == 0 ? 0.0 : 100.0 * static_cast<double>(miss_count) / static_cast<double>(reads);
}

// ---------------------------------------------------------------- helpers

Cache& global_cache() {
  static std::mutex mu;
  static Cache* cache = nullptr;  // destroyed by the atexit hook below
  std::lock_guard lock(mu);
  if (cache == nullptr) {
    cache = new Cache(Cache::open(Config::from_env()));
    std::atexit([] {
      delete cache;
      cache = nullptr;
    });
  }
  return *cache;
}

Cache create_default_cache(Strategy strategy, bool use_file_locking) {
  Config c;
  c.strategy = strategy;
  c.use_file_locking = use_file_locking;
  return Cache::open(c);
}

std::vector<std::filesystem::path> collect_dead_process_dirs(
    const std::filesystem::path& cache_root, std::chrono::seconds min_age, bool dry_run,
    const std::function<void(LogLevel, std::string_view)>& log) {
  const util::Logger logger = core::make_logger(log);
  const std::filesystem::path root = cache_root.empty() ? api::default_root() : cache_root;
  return core::collect_dead_process_dirs(
      root, min_age, dry_run ? core::Collect::list_only : core::Collect::remove, &logger);
}

Cache create_memory_cache(std::uint64_t max_size_bytes, std::uint64_t max_entries,
                          std::chrono::milliseconds default_ttl) {
  Config c;
  c.strategy = Strategy::disabled;
  c.max_size_bytes = max_size_bytes;
  c.max_entries = max_entries;
  c.default_ttl = default_ttl;
  return Cache::open(c);
}

}  // namespace larder
