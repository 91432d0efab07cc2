// The public Cache: argument checks, hit/miss accounting and fault handling over a shared
// Backend. Every public function here is noexcept in spirit for I/O: failures become misses or
// false, counted and logged by Backend::finish.
#include <mutex>
#include <stdexcept>

#include <fmt/format.h>

#include "core/backend.hpp"
#include "core/config.hpp"
#include "larder/larder.hpp"
#include "util/glob.hpp"

namespace larder {

using core::Backend;
using engine::Engine;

class Cache::Impl {
 public:
  Impl(std::shared_ptr<Backend> b, std::chrono::seconds default_ttl)
      : backend(std::move(b)), default_ttl(default_ttl) {}
  std::shared_ptr<Backend> backend;
  std::chrono::seconds default_ttl;

  template <class F>
  kv::Status run(std::string_view what, F&& f, std::string_view written = {}, bool all = false) {
    const Backend::Op op = backend->begin();
    const kv::Status s = f(*op.engine);
    backend->finish(op, s, what, written, all);
    return s;
  }

  // A read that found `key`'s entry undecodable: counted and logged by run(); remove it so the
  // next read is a plain miss.
  void drop_if_corrupt(const kv::Status& s, std::string_view key) {
    if (s.code != kv::Code::corruption) return;
    const Backend::Op op = backend->begin();
    backend->finish(op, op.engine->drop_corrupt(key), "dropping a corrupt entry", key);
  }

  EntryInfo make_info(std::string_view key, const engine::Found& f, const engine::AccessRecord& a,
                      std::int64_t now_ns) const {
    using std::chrono::nanoseconds;
    using std::chrono::system_clock;
    auto tp = [](std::int64_t ns) {
      return system_clock::time_point(
          std::chrono::duration_cast<system_clock::duration>(nanoseconds(ns)));
    };
    EntryInfo info;
    info.key = std::string(key);
    info.category = f.header.category;
    info.status = f.status;
    info.size_bytes = f.size;
    info.created_at = tp(f.header.created_ns);
    info.last_accessed = tp(a.last_access_ns);
    if (f.header.ttl_s > 0)
      info.expires_at = info.created_at + std::chrono::seconds(f.header.ttl_s);
    info.access_count = a.access_count;
    info.metadata = f.header.metadata;
    info.observed_at = tp(now_ns);
    return info;
  }

  static bool valid_key(std::string_view key) { return !key.empty() && key.size() <= kMaxKeyBytes; }
};

namespace {

// Counts a public operation when it ends, so a statistics write it triggers includes it.
class OpCount {
 public:
  explicit OpCount(Backend& b) : b_(b) {}
  ~OpCount() { b_.note_op(); }
  OpCount(const OpCount&) = delete;
  OpCount& operator=(const OpCount&) = delete;

 private:
  Backend& b_;
};

void check_ttl(const SetOptions& options) {
  if (options.ttl && options.ttl->count() < 0)
    throw std::invalid_argument(
        fmt::format("ttl: must not be negative (got {}s)", options.ttl->count()));
}

}  // namespace

Cache::Cache(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
Cache::Cache(Cache&&) noexcept = default;
Cache& Cache::operator=(Cache&&) noexcept = default;
Cache::~Cache() = default;

Cache Cache::open(const Config& config) {
  const core::Resolved r = core::resolve(config);
  return Cache(std::make_unique<Impl>(Backend::open_shared(r), config.default_ttl));
}

bool Cache::set(std::string_view key, std::string_view value, const SetOptions& options) {
  check_ttl(options);
  Backend& b = *impl_->backend;
  const OpCount op_count(b);
  if (!Impl::valid_key(key) || options.category.size() > kMaxCategoryBytes ||
      options.category.find('\0') != std::string::npos) {
    b.log().logf(LogLevel::debug, "set refused: empty or too long key, or bad category");
    return false;
  }
  const std::int64_t ttl = options.ttl ? options.ttl->count() : impl_->default_ttl.count();
  engine::SetOutcome outcome = engine::SetOutcome::full;
  const kv::Status s = impl_->run(
      "set",
      [&](Engine& e) {
        return e.set(key, value, ttl, options.category, options.metadata, b.now_ns(), &outcome);
      },
      key);
  if (!s.ok()) return false;
  if (outcome != engine::SetOutcome::stored) {
    b.log().logf(LogLevel::debug, "set of '{}' refused: {}", key,
                 outcome == engine::SetOutcome::too_large
                     ? "value larger than max_size_bytes"
                     : "cache full of live entries (ttl policy)");
    return false;
  }
  b.counters().set++;
  return true;
}

std::optional<std::string> Cache::get(std::string_view key) {
  Backend& b = *impl_->backend;
  const OpCount op_count(b);
  if (!Impl::valid_key(key)) {
    b.counters().miss++;
    return std::nullopt;
  }
  const std::int64_t now = b.now_ns();
  engine::Found f;
  Engine* used = nullptr;
  const kv::Status s = impl_->run("get", [&](Engine& e) {
    used = &e;
    return e.read(key, now, true, &f);
  });
  if (s.ok() && f.status == EntryStatus::fresh) {
    used->record_access(key, now);
    b.counters().hit++;
    return std::move(f.value);
  }
  impl_->drop_if_corrupt(s, key);
  b.counters().miss++;
  return std::nullopt;
}

std::string Cache::get_or(std::string_view key, std::string_view fallback) {
  auto v = get(key);
  return v ? std::move(*v) : std::string(fallback);
}

std::optional<Entry> Cache::get_entry(std::string_view key, bool include_stale) {
  Backend& b = *impl_->backend;
  const OpCount op_count(b);
  if (!Impl::valid_key(key)) {
    b.counters().miss++;
    return std::nullopt;
  }
  const std::int64_t now = b.now_ns();
  engine::Found f;
  engine::AccessRecord a;
  bool hit = false;
  const kv::Status s = impl_->run("get_entry", [&](Engine& e) {
    kv::Status st = e.read(key, now, true, &f);
    if (!st.ok() || (f.status != EntryStatus::fresh && !include_stale)) return st;
    e.record_access(key, now);
    st = e.access_of(key, &a);
    if (st.not_found()) st = kv::Status::Ok();  // removed meanwhile: report what was read
    hit = st.ok();
    return st;
  });
  if (!s.ok() || !hit) {
    impl_->drop_if_corrupt(s, key);
    b.counters().miss++;
    return std::nullopt;
  }
  b.counters().hit++;
  Entry entry;
  entry.info = impl_->make_info(key, f, a, now);
  entry.value = std::move(f.value);
  return entry;
}

bool Cache::exists(std::string_view key) {
  if (!Impl::valid_key(key)) return false;
  Backend& b = *impl_->backend;
  engine::Found f;
  const std::int64_t now = b.now_ns();
  const kv::Status s = impl_->run("exists", [&](Engine& e) { return e.read(key, now, false, &f); });
  return s.ok() && f.status == EntryStatus::fresh;
}

std::optional<EntryInfo> Cache::metadata(std::string_view key) {
  if (!Impl::valid_key(key)) return std::nullopt;
  Backend& b = *impl_->backend;
  engine::Found f;
  engine::AccessRecord a;
  const std::int64_t now = b.now_ns();
  const kv::Status s = impl_->run("metadata", [&](Engine& e) {
    kv::Status st = e.read(key, now, false, &f);
    if (st.ok()) st = e.access_of(key, &a);
    return st;
  });
  if (!s.ok()) return std::nullopt;
  return impl_->make_info(key, f, a, now);
}

bool Cache::remove(std::string_view key) {
  Backend& b = *impl_->backend;
  const OpCount op_count(b);
  if (!Impl::valid_key(key)) return false;
  bool removed = false;
  const kv::Status s = impl_->run(
      "remove", [&](Engine& e) { return e.remove(key, &removed); }, key);
  if (s.ok() && removed) b.counters().del++;
  return s.ok() && removed;
}

std::size_t Cache::clear() {
  Backend& b = *impl_->backend;
  const OpCount op_count(b);
  std::size_t n = 0;
  const kv::Status s = impl_->run(
      "clear", [&](Engine& e) { return e.clear(&n); }, {}, true);
  if (!s.ok()) return 0;
  b.counters().del += n;
  return n;
}

std::size_t Cache::clear_category(std::string_view category) {
  Backend& b = *impl_->backend;
  const OpCount op_count(b);
  std::size_t n = 0;  // on failure: what was removed before it
  impl_->run(
      "clear_category",
      [&](Engine& e) {
        std::vector<std::string> keys;
        kv::Status st = e.keys_in_category(category, &keys);
        return st.ok() ? e.remove_keys(keys, &n) : st;
      },
      {}, true);
  b.counters().del += n;
  return n;
}

bool Cache::invalidate(std::string_view key) {
  Backend& b = *impl_->backend;
  const OpCount op_count(b);
  if (!Impl::valid_key(key)) return false;
  std::size_t n = 0;
  const kv::Status s = impl_->run(
      "invalidate", [&](Engine& e) { return e.invalidate_keys({std::string(key)}, &n); }, key);
  return s.ok() && n == 1;
}

std::size_t Cache::invalidate_category(std::string_view category) {
  const OpCount op_count(*impl_->backend);
  std::size_t n = 0;
  impl_->run(
      "invalidate_category",
      [&](Engine& e) {
        std::vector<std::string> keys;
        kv::Status st = e.keys_in_category(category, &keys);
        return st.ok() ? e.invalidate_keys(keys, &n) : st;
      },
      {}, true);
  return n;
}

std::size_t Cache::invalidate_pattern(std::string_view glob) {
  if (glob.empty()) throw std::invalid_argument("invalidate_pattern: the pattern is empty");
  const OpCount op_count(*impl_->backend);
  std::size_t n = 0;
  const std::string prefix = util::glob_literal_prefix(glob);
  impl_->run(
      "invalidate_pattern",
      [&](Engine& e) {
        std::vector<std::string> keys;
        kv::Status st = e.keys(prefix, &keys);
        if (!st.ok()) return st;
        std::erase_if(keys, [&](const std::string& k) { return !util::glob_match(glob, k); });
        return e.invalidate_keys(keys, &n);
      },
      {}, true);
  return n;
}

std::vector<std::string> Cache::keys() {
  std::vector<std::string> out;
  impl_->run("keys", [&](Engine& e) { return e.keys({}, &out); });
  return out;
}

std::vector<std::string> Cache::keys_in_category(std::string_view category) {
  std::vector<std::string> out;
  impl_->run("keys_in_category", [&](Engine& e) { return e.keys_in_category(category, &out); });
  return out;
}

std::size_t Cache::cleanup() {
  Backend& b = *impl_->backend;
  std::size_t n = 0;
  const kv::Status s = impl_->run("cleanup", [&](Engine& e) { return e.cleanup(b.now_ns(), &n); });
  if (s.ok()) b.counters().cleanup++;
  b.save_stats();
  return n;
}

Stats Cache::stats() {
  Backend& b = *impl_->backend;
  Stats st;
  b.counters().copy_to(st);
  engine::StatusCounts counts;
  impl_->run("stats", [&](Engine& e) {
    st.total_entries = e.entries();
    st.total_size_bytes = e.bytes();
    st.categories = e.categories();
    return e.status_counts(b.now_ns(), &counts);
  });
  st.fresh_entries = counts.fresh;
  st.stale_entries = counts.stale;
  st.expired_entries = counts.expired;
  st.invalid_entries = counts.invalid;
  return st;
}

void Cache::flush() {
  Backend& b = *impl_->backend;
  impl_->run("flush", [&](Engine& e) { return e.flush_access(); });
  b.save_stats();
}

std::string Cache::get_or_compute(std::string_view key, const std::function<std::string()>& compute,
                                  const SetOptions& options) {
  check_ttl(options);
  if (auto v = get(key)) return std::move(*v);
  Backend& b = *impl_->backend;
  bool leader = false;
  auto flight = b.join_flight(key, &leader);
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
    engine::Found f;
    const std::int64_t now = b.now_ns();
    const kv::Status s =
        impl_->run("get_or_compute", [&](Engine& e) { return e.read(key, now, true, &f); });
    if (s.ok() && f.status == EntryStatus::fresh) {
      value = std::move(f.value);
    } else {
      value = compute();
      set(key, value, options);
    }
  } catch (...) {
    error = std::current_exception();
  }
  b.end_flight(key);
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

std::shared_ptr<core::Backend> backend_of(const Cache& cache) {
  return cache.impl_->backend;
}

bool Cache::degraded() const {
  return impl_->backend->degraded();
}
std::string Cache::last_error() const {
  return impl_->backend->last_error();
}
std::filesystem::path Cache::directory() const {
  return impl_->backend->resolved().dir;
}

void Cache::count_decode_error(std::string_view key, std::string_view what) {
  Backend& b = *impl_->backend;
  b.counters().error++;
  b.log().logf(LogLevel::warn, "get_object('{}'): stored bytes do not decode: {}", key, what);
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
