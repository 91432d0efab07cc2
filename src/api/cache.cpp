// The public Cache: argument checks and the default TTL, then a call on the Service behind the
// handle (core/service.hpp): local for isolated, disabled and unlocked shared caches, the shared
// node (shared/node.hpp) for shared caches with file locking. Also the registry that gives two
// opens of one directory in one process the same Service.
#include <map>
#include <mutex>
#include <stdexcept>

#include <fmt/format.h>

#include "api/access.hpp"
#include "api/config.hpp"
#include "core/backend.hpp"
#include "core/config.hpp"
#include "core/isolated.hpp"
#include "core/log.hpp"
#include "core/service.hpp"
#include "larder/larder.hpp"
#include "shared/node.hpp"

namespace larder {

using core::Service;
using core::SetRequest;

class Cache::Impl {
 public:
  Impl(std::shared_ptr<Service> s, std::chrono::seconds default_ttl)
      : service(std::move(s)), default_ttl(default_ttl) {}
  std::shared_ptr<Service> service;
  std::chrono::seconds default_ttl;

  static bool valid_key(std::string_view key) { return core::valid_key(key); }

  // A SetRequest for a key and options that passed the checks.
  SetRequest request(std::string_view key, std::string_view value,
                     const SetOptions& options) const {
    SetRequest q;
    q.key = std::string(key);
    q.value = std::string(value);
    q.ttl_s = options.ttl ? options.ttl->count() : default_ttl.count();
    q.category = options.category;
    q.metadata = options.metadata;
    return q;
  }
};

namespace {

void check_ttl(const SetOptions& options) {
  if (options.ttl && options.ttl->count() < 0)
    throw std::invalid_argument(
        fmt::format("ttl: must not be negative (got {}s)", options.ttl->count()));
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
  return Cache(std::make_unique<Impl>(api::open_service(r), config.default_ttl));
}

bool Cache::set(std::string_view key, std::string_view value, const SetOptions& options) {
  check_ttl(options);
  const SetRequest q = impl_->request(key, value, options);
  return core::valid_set(q) && impl_->service->set(q);
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
    SetRequest q = impl_->request(items[i].first, items[i].second, options);
    if (!core::valid_set(q)) continue;
    requests.push_back(std::move(q));
    index.push_back(i);
  }
  const std::vector<bool> stored = impl_->service->set_many(requests);
  for (std::size_t j = 0; j < stored.size() && j < index.size(); ++j) out[index[j]] = stored[j];
  return out;
}

bool Cache::add(std::string_view key, std::string_view value, const SetOptions& options) {
  check_ttl(options);
  const SetRequest q = impl_->request(key, value, options);
  return core::valid_set(q) && impl_->service->add(q);
}

bool Cache::touch(std::string_view key, std::chrono::seconds ttl) {
  if (ttl.count() < 0)
    throw std::invalid_argument(fmt::format("ttl: must not be negative (got {}s)", ttl.count()));
  return Impl::valid_key(key) && impl_->service->touch(key, ttl.count());
}

std::optional<std::int64_t> Cache::incr(std::string_view key, std::int64_t delta,
                                        const SetOptions& options) {
  check_ttl(options);
  const SetRequest q = impl_->request(key, {}, options);
  if (!core::valid_set(q)) return std::nullopt;
  return impl_->service->incr(q, delta);
}

bool Cache::set_all(const std::vector<std::pair<std::string, std::string>>& items,
                    const SetOptions& options) {
  check_ttl(options);
  std::vector<SetRequest> requests;
  requests.reserve(items.size());
  for (const auto& [key, value] : items) {
    requests.push_back(impl_->request(key, value, options));
    if (!core::valid_set(requests.back())) return false;  // all or nothing
  }
  return impl_->service->set_all(requests);
}

// Reads pass invalid keys on: they miss in the store and are counted as misses like any other.
std::optional<std::string> Cache::get(std::string_view key) {
  return impl_->service->get(key);
}

std::vector<std::optional<std::string>> Cache::get_many(const std::vector<std::string>& keys) {
  return impl_->service->get_many(keys);
}

std::string Cache::get_or(std::string_view key, std::string_view fallback) {
  auto v = get(key);
  return v ? std::move(*v) : std::string(fallback);
}

std::optional<Entry> Cache::get_entry(std::string_view key, bool include_stale) {
  return impl_->service->get_entry(key, include_stale);
}

bool Cache::exists(std::string_view key) {
  return Impl::valid_key(key) && impl_->service->exists(key);
}

std::optional<EntryInfo> Cache::metadata(std::string_view key) {
  if (!Impl::valid_key(key)) return std::nullopt;
  return impl_->service->metadata(key);
}

bool Cache::remove(std::string_view key) {
  return Impl::valid_key(key) && impl_->service->remove(key);
}

std::size_t Cache::clear() {
  return impl_->service->clear();
}

std::size_t Cache::clear_category(std::string_view category) {
  return impl_->service->clear_category(category);
}

bool Cache::invalidate(std::string_view key) {
  return Impl::valid_key(key) && impl_->service->invalidate(key);
}

std::size_t Cache::invalidate_category(std::string_view category) {
  return impl_->service->invalidate_category(category);
}

std::size_t Cache::invalidate_pattern(std::string_view glob) {
  if (glob.empty()) throw std::invalid_argument("invalidate_pattern: the pattern is empty");
  return impl_->service->invalidate_pattern(glob);
}

std::vector<std::string> Cache::keys() {
  return impl_->service->keys();
}

std::vector<std::string> Cache::keys_in_category(std::string_view category) {
  return impl_->service->keys_in_category(category);
}

std::size_t Cache::cleanup() {
  return impl_->service->cleanup();
}

Stats Cache::stats() {
  return impl_->service->stats();
}

void Cache::flush() {
  impl_->service->flush();
}

std::string Cache::get_or_compute(std::string_view key, const std::function<std::string()>& compute,
                                  const SetOptions& options) {
  check_ttl(options);
  if (auto v = get(key)) return std::move(*v);
  Service& service = *impl_->service;
  bool leader = false;
  auto flight = service.join_flight(key, &leader);
  if (!leader) {
    std::unique_lock lock(flight->mu);
    flight->cv.wait(lock, [&] { return flight->done; });
    if (flight->error) std::rethrow_exception(flight->error);
    return flight->value;
  }
  std::string value;
  std::exception_ptr error;
  try {
    // Another flight may have finished between our miss and joining: look again, uncounted.
    if (auto v = Impl::valid_key(key) ? service.peek(key) : std::nullopt) {
      value = std::move(*v);
    } else {
      value = compute();
      set(key, value, options);
    }
  } catch (...) {
    error = std::current_exception();
  }
  service.end_flight(key);
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

bool Cache::degraded() const {
  return impl_->service->degraded();
}
std::string Cache::last_error() const {
  return impl_->service->last_error();
}
std::filesystem::path Cache::directory() const {
  return impl_->service->directory();
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
                          std::chrono::seconds default_ttl) {
  Config c;
  c.strategy = Strategy::disabled;
  c.max_size_bytes = max_size_bytes;
  c.max_entries = max_entries;
  c.default_ttl = default_ttl;
  return Cache::open(c);
}

}  // namespace larder
