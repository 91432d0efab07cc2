// The public Cache's data calls and helpers: argument checks and the default TTL, then a call on
// the Service behind the handle (core/service.hpp): local for isolated, disabled and unlocked
// shared caches, the shared node (shared/node.hpp) for shared caches with file locking. The
// registry of open services is in registry.cpp, get_or_compute in cache_compute.cpp,
// subscriptions in cache_subscribe.cpp.
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
#include "api/cache_impl.hpp"
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

using api::check_ttl;
using core::valid_category;

const std::shared_ptr<core::Service>& Cache::Access::service(const Cache& cache) {
  return cache.impl_->service;
}

Cache::Cache(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
Cache::Cache(Cache&&) noexcept = default;
Cache& Cache::operator=(Cache&&) noexcept = default;
Cache::~Cache() = default;

Cache Cache::open(const Config& config) {
  const core::Resolved r = api::resolve(config);
  return Access::wrap(api::open_service(r), r, config.default_ttl);
}

Cache Cache::Access::wrap(std::shared_ptr<core::Service> service, const core::Resolved& r,
                          std::chrono::milliseconds default_ttl) {
  auto signer = std::make_shared<api::ValueSigner>(
      r.root.empty() ? std::filesystem::path() : r.root / "value.key",
      r.remote ? r.remote->secret : std::string(),
      [log = core::make_logger(r.config.log)](std::string_view m) {
        log.log(util::Level::warn, m);
      });
  return Cache(std::make_unique<Impl>(std::move(service), std::move(signer), default_ttl));
}

bool Cache::set(std::string_view key, std::string_view value, const SetOptions& options) {
  check_ttl(options);
  if (!impl_->valid_key(key)) return false;
  const bool ok = impl_->with_key(key, [&](std::string_view k) {
    const core::SetView v{k, value, options.ttl ? options.ttl->count() : impl_->default_ttl.count(),
                          options.category, &options.metadata};
    return core::valid_set(v) && impl_->service->set(v);
  });
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
  check_ttl(ttl);
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
  check_ttl(ttl);
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
