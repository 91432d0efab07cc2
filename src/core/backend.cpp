// core::Backend (backend.hpp): opening the store (with its directory, locks, counter file and
// the fallbacks when it cannot be opened), remote fills, the remote tier, statistics and the
// housekeeper. Fault handling is in backend_faults.cpp.
#include "core/backend.hpp"
#include "core/cache_dir.hpp"

#include <limits>
#include <map>

#include <fmt/format.h>

#include "core/isolated.hpp"
#include "core/log.hpp"
#include "core/service.hpp"
#include "kv/deferred_kv.hpp"
#include "kv/memory_kv.hpp"
#include "util/fork.hpp"
#include "util/fs.hpp"
#include "util/glob.hpp"

namespace larder::core {

namespace fs = std::filesystem;
using kv::Code;

namespace {

engine::Options options_from(const Config& c) {
  engine::Options o;
  o.max_entries = c.max_entries;
  o.max_bytes = c.max_size_bytes;
  o.policy = c.eviction_policy;
  o.stale_factor = c.stale_factor;
  o.default_ttl_ms = c.default_ttl.count();
  return o;
}

kv::Status default_opener(const Resolved& r, const kv::RocksOptions& options,
                          std::unique_ptr<kv::Kv>* out) {
  if (r.config.strategy == Strategy::disabled) {
    *out = kv::make_memory_kv();
    return kv::Status();
  }
  if (options.read_only) {
    std::error_code ec;
    if (!fs::is_directory(r.io() / "db", ec))
      return {Code::io_error, fmt::format("no store in {}", (r.dir / "db").string())};
  } else if (auto made = util::create_private_directories(r.io() / "db", util::Symlinks::refuse);
             !made) {
    return {Code::io_error, made.error()};
  }
  return kv::open_rocks_kv(r.io() / "db", options, out);
}

// ", held by pid N (...)" when a shared store's owner lock names its holder.
std::string holder_of(const Resolved& r) {
  if (r.config.strategy != Strategy::shared) return {};
  util::LockFile lock;
  if (!lock.open(r.root / ".larder.lock", util::Create::no)) return {};
  const std::string content = lock.read_content();
  const auto pid = content.find("pid=");
  if (pid == std::string::npos) return {};
  const auto end = content.find('\n', pid);
  std::string holder = content.substr(pid + 4, end == std::string::npos ? end : end - pid - 4);
  return fmt::format("; the store is held by pid {} (its owner lock: {})", holder,
                     (r.root / ".larder.lock").string());
}

}  // namespace

bool Backend::inherited() const {
  return util::fork_generation() != fork_generation_;
}

Backend::Backend(const Resolved& r)
    : r_(r),
      log_(make_logger(r.config.log)),
      watermark_(
          std::make_shared<std::atomic<std::int64_t>>(std::numeric_limits<std::int64_t>::min())),
      fork_generation_(util::fork_generation()) {}

std::int64_t Backend::now_ns() const {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(now().time_since_epoch()).count();
}

std::chrono::system_clock::time_point Backend::now() const {
  return r_.config.clock ? r_.config.clock() : std::chrono::system_clock::now();
}

std::string Backend::last_error() const {
  std::lock_guard lock(error_mu_);
  return last_error_;
}

void Backend::set_last_error(std::string message) {
  std::lock_guard lock(error_mu_);
  last_error_ = std::move(message);
}

std::shared_ptr<Backend> Backend::open(const Resolved& r_in, const KvOpener& opener_in) {
  // In a forked child the Backend (its store, locks, thread and condition variables) belongs to
  // the parent: the deleter leaks it rather than run any of its destructors.
  std::shared_ptr<Backend> b(new Backend(r_in), [](Backend* p) {
    if (!p->inherited()) delete p;
  });
  bool adopted = false;
  const Resolved& r = b->r_;
  const KvOpener opener = opener_in ? opener_in : KvOpener(default_opener);
  engine::Options eo = options_from(r.config);
  eo.repair_on_open = r.repair_on_open && !r.read_only;
  auto degrade = [&](const std::string& why) {
    b->log_.logf(util::Level::error, "using a memory cache instead: {}", why);
    b->degraded_at_open_ = true;
    b->set_last_error(why);
    b->watermark_->store(std::numeric_limits<std::int64_t>::min());
    b->primary_ = std::make_unique<engine::Engine>(kv::make_memory_kv(), eo, b->watermark_,
                                                   b->counters_, &b->log_);
    (void)b->primary_->open();
  };

  bool have_dir = !r.dir.empty();
  if (have_dir) {
    CacheDir::check_root(r);
    // process_isolated: a process that is gone left results behind; take its directory over (its
    // liveness lock proves it is gone) rather than start empty. Concurrent processes still get
    // directories of their own: a live process holds its lock.
    if (r.config.strategy == Strategy::process_isolated && !r.read_only && r.adopt_dead_dir) {
      if (fs::path dir = adopt_dead_process_dir(r.root, &b->alive_); !dir.empty()) {
        b->r_.dir = dir;  // r is b->r_
        adopted = true;
      }
    }
    std::error_code ec;
    if (r.read_only && !fs::is_directory(r.dir, ec)) {
      degrade(fmt::format("{} is not a directory", r.dir.string()));
      have_dir = false;
    } else if (r.read_only) {
      // Inspection only: no liveness lock, counter file or housekeeping.
    } else if (auto usable = CacheDir::open(
                   b->r_, r.dir != r.root ? util::Symlinks::refuse : util::Symlinks::allow);
               !usable) {
      degrade(usable.error());
      have_dir = false;
    } else if (auto locked = r.config.strategy == Strategy::process_isolated && !adopted
                                 ? lock_process_dir(r.io(), r.config.lock_timeout, &b->alive_)
                                 : util::Status();
               !locked) {
      degrade(locked.error());
      have_dir = false;
    } else if ((b->counter_file_ = CacheDir::counter_file(r, b->log_, b->local_counters_))) {
      b->counters_ = &b->counter_file_->counters();
    }
  }

  // The shared node prepares its root itself (for every process, owner or not).
  if (have_dir && !(r.config.strategy == Strategy::shared && r.config.use_file_locking))
    (void)prepare_root(r, b->log_);
  if (have_dir && r.config.strategy == Strategy::process_isolated && r.collect_dead_dirs &&
      !r.read_only)
    collect_dead_process_dirs(r.root, kCollectOnOpenAge, Collect::remove, &b->log_);

  if (have_dir || r.config.strategy == Strategy::disabled || opener_in) {
    kv::RocksOptions ro;
    ro.log = &b->log_;
    Backend* self = b.get();
    ro.on_data_loss = [self](std::string_view message) {
      self->counters_->error++;
      self->log_.logf(util::Level::error, "data lost while opening the store: {}", message);
      self->set_last_error(fmt::format("data lost while opening the store: {}", message));
    };
    // The compaction filter reads the stale factor through this, so adopting the store's own
    // (below) reaches it; until the engine opens, the watermark drops nothing anyway.
    auto factor = std::make_shared<std::atomic<double>>(r.config.stale_factor);
    ro.drop_entry = engine::Engine::drop_predicate(b->watermark_, factor);
    ro.read_only = r.read_only;
    for (int attempt = 0; attempt < 2 && !b->primary_; ++attempt) {
      std::unique_ptr<kv::Kv> store;
      kv::Status s = opener(r, ro, &store);
      if (s.ok() && r.adopt_stored_settings) {
        bool found = false;
        s = engine::Engine::read_settings(*store, &eo, &found);
        factor->store(eo.stale_factor);
        Config& c = b->r_.config;
        c.eviction_policy = eo.policy;
        c.stale_factor = eo.stale_factor;
        c.max_entries = eo.max_entries;
        c.max_size_bytes = eo.max_bytes;
        c.default_ttl = std::chrono::milliseconds(eo.default_ttl_ms);
      }
      if (s.ok()) {
        auto e = std::make_unique<engine::Engine>(std::move(store), eo, b->watermark_, b->counters_,
                                                  &b->log_);
        s = e->open();
        if (s.ok()) {
          b->primary_ = std::move(e);
          break;
        }
      }
      if (s.code == Code::corruption && attempt == 0 && have_dir && !r.read_only &&
          r.move_corrupt_aside) {
        fs::path aside = util::move_aside(r.io() / "db", ".corrupt-", b->now());
        if (!aside.empty()) aside = r.dir / aside.filename();  // named as the user knows it
        b->counters_->error++;
        if (aside.empty()) {
          degrade(fmt::format("store in {} is corrupt ({}) and could not be moved aside",
                              (r.dir / "db").string(), s.message));
          break;
        }
        b->log_.logf(util::Level::error, "store was corrupt ({}); moved to {} and starting empty",
                     s.message, aside.string());
        b->set_last_error(fmt::format("corrupt store moved to {}", aside.string()));
        continue;
      }
      b->counters_->error++;
      const bool held = s.message.find("LOCK") != std::string::npos;
      // An I/O failure (a full disk, a read-only or failing filesystem) may pass: serve from
      // memory behind an open breaker, whose probe retries the open every kBreakerRecovery.
      // Not for a store another opener holds, a read-only view or a tool that adopts settings.
      if (s.code == Code::io_error && !held && have_dir && !r.read_only &&
          !r.adopt_stored_settings && kv::rocksdb_usable(nullptr)) {
        const std::string why = fmt::format(
            "cannot open the store in {}: {}; using memory and "
            "retrying every {}s",
            r.dir.string(), s.message, kBreakerRecovery.count());
        b->log_.logf(util::Level::error, "{}", why);
        b->set_last_error(why);
        kv::StoreOpener again = [opener, rr = b->r_, ro](std::unique_ptr<kv::Kv>* out) {
          return opener(rr, ro, out);
        };
        b->primary_ = std::make_unique<engine::Engine>(kv::make_deferred_kv(std::move(again), s),
                                                       eo, b->watermark_, b->counters_, &b->log_);
        b->breaker_.trip(b->mono_.now_ns());
        break;
      }
      // Name the holder only when the store's lock is what stopped us (not stale lock content).
      degrade(fmt::format("cannot open the store in {}: {}{}", r.dir.string(), s.message,
                          held ? holder_of(r) : ""));
      break;
    }
  }
  if (!b->primary_) degrade("no usable store");
  b->fallback_ =
      std::make_unique<engine::Engine>(kv::make_memory_kv(), eo, nullptr, b->counters_, &b->log_);
  (void)b->fallback_->open();

  b->primary_->set_access_flusher(b.get());
  b->primary_->set_event_sink(&b->events_);
  b->fallback_->set_event_sink(&b->events_);
  if (!r.read_only) b->start_housekeeper();
  b->start_remote();
  return b;
}

void Backend::defer_fill(Fill fill) {
  bool full = false;
  {
    std::lock_guard lock(fills_mu_);
    full = fills_.size() >= kMaxFills;
  }
  if (full) settle_fills();
  std::lock_guard lock(fills_mu_);
  fill_keys_.insert(fill.key);
  fills_.push_back(std::move(fill));
  has_fills_.store(true, std::memory_order_release);
}

bool Backend::fill_waits(std::string_view key) {
  if (!has_fills()) return false;
  std::lock_guard lock(fills_mu_);
  return fill_keys_.contains(absl::string_view(key.data(), key.size()));
}

void Backend::settle_fills() {
  if (!has_fills()) return;
  // One settler at a time, and the waiting copies stay visible (has_fills, fill_waits) until
  // they are stored: an operation that comes later waits here for them rather than overtaking
  // them (a remove must not be followed by the store of the copy it was to remove).
  std::lock_guard settling(settle_mu_);
  std::vector<Fill> fills;
  {
    std::lock_guard lock(fills_mu_);
    fills.swap(fills_);
  }
  store_fills(fills);
  std::lock_guard lock(fills_mu_);
  fill_keys_.clear();
  for (const Fill& f : fills_) fill_keys_.insert(f.key);
  has_fills_.store(!fills_.empty(), std::memory_order_release);
}

void Backend::store_fills(const std::vector<Fill>& fills) {
  // The last copy of a key fetched twice; none that a later remote change may have outdated.
  absl::flat_hash_set<std::string_view> seen;
  std::vector<engine::SetItem> items;
  std::vector<std::string> written;
  for (auto it = fills.rbegin(); it != fills.rend(); ++it) {
    if (!seen.insert(it->key).second || remote_changed_since(it->key, it->at)) continue;
    const remote::Entry& e = it->entry;
    items.push_back({it->key, e.value, e.ttl_ms, e.category, &e.metadata, e.created_ns});
    written.push_back(it->key);
  }
  if (items.empty()) return;
  const Lease lease = begin();
  if (!lease.primary) return;  // the store is bypassed: a copy is not worth keeping in memory
  const kv::Status s = lease.engine->fill(items, now_ns());
  finish(lease, s, "storing remote entries", std::span<const std::string>(written));
}

void Backend::start_remote() {
  if (!r_.remote || r_.read_only) return;
  remote::TierHooks hooks;
  hooks.on_change = [this](const remote::Change& c) {
    {
      std::lock_guard lock(remote_mu_);
      auto& last = c.kind == remote::Change::Kind::key ? remote_key_change_[slot_of(c.arg)]
                                                       : remote_any_change_;
      last = std::max(last, c.id);
    }
    apply_remote_change(*this, c);
  };
  hooks.on_gap = [this](remote::StreamId newest,
                        const std::function<bool(std::string_view)>& unsynced) {
    // Reads stop serving local copies first, then fetched copies stop being kept, then the
    // local copies go: no moment serves an old copy next to a copy fetched after the gap.
    dropping_copies_.fetch_add(1, std::memory_order_acq_rel);
    std::function<void()> hook;
    {
      std::lock_guard lock(remote_mu_);
      remote_any_change_ = std::max(remote_any_change_, newest);
      hook = gap_hook_;
    }
    if (hook) hook();
    drop_local_copies(*this, unsynced);
    dropping_copies_.fetch_sub(1, std::memory_order_acq_rel);
  };
  hooks.local_entry = [this](std::string_view key) { return local_entry_for_remote(*this, key); };
  hooks.matches = [](std::string_view key, std::string_view scope, const std::string* glob) {
    return in_scope(key, scope) &&
           (glob == nullptr || util::glob_match(*glob, user_key(scope, key)));
  };
  hooks.on_state = [this](bool reachable, const std::string& why) {
    if (!reachable) set_last_error(why);
  };
  hooks.clock = mono_;
  // The change stream's position, so a later process here goes on where this one stopped.
  const fs::path state = r_.dir.empty() ? fs::path() : r_.io() / ".remote_position";
  auto tier = remote::open_tier(*r_.remote, r_.config.stale_factor, r_.config.max_size_bytes, state,
                                std::move(hooks), &log_);
  if (!tier) {
    log_.logf(util::Level::error, "{}", tier.error());
    set_last_error(tier.error());
    return;
  }
  remote_ = std::move(*tier);
}

Backend::~Backend() {
  remote_.reset();  // its listener applies changes through this Backend
  settle_fills();
  {
    std::lock_guard lock(hk_mu_);
    hk_stop_ = true;
  }
  hk_cv_.notify_all();
  if (hk_ && hk_->joinable()) hk_->join();
  if (primary_ && !breaker_.open()) {
    if (auto s = primary_->flush_access(); !s.ok()) counters_->error++;
  }
  (void)save_stats(stats::FoldMode::close);  // counted and logged
  fallback_.reset();
  primary_.reset();  // closes the store (RocksKv flushes its memtables)
}

std::optional<std::string> prepare_root(const Resolved& r, const util::Logger& log) {
  if (r.read_only || r.root.empty()) return std::nullopt;
  if (auto tagged = util::write_cachedir_tag(r.root); !tagged)
    log.logf(util::Level::warn, "{}", tagged.error());
  auto network = util::network_filesystem(r.root);
  if (network && r.config.strategy == Strategy::shared)
    log.logf(util::Level::warn,
             "the shared cache {} is on a network filesystem ({}): its locks are not reliable "
             "between machines; use it from one machine only, or keep it on a local disk",
             r.root.string(), *network);
  return network;
}

void Backend::note_call() {
  if ((ops_.fetch_add(1, std::memory_order_relaxed) + 1) % 100 != 0) return;
  if (r_.dir.empty() || !r_.config.enable_statistics) return;
  {
    std::lock_guard lock(hk_mu_);
    hk_save_ = true;
  }
  hk_cv_.notify_one();
}

void Backend::counter_totals(Stats* out) {
  // A read-only view counts nothing itself but reads every process's counters.
  if (inherited() || (!counter_file_ && !(r_.read_only && r_.config.enable_statistics))) {
    counters_->copy_to(*out);
    return;
  }
  stats::Snapshot snap;
  if (auto read = stats::read_stats(r_.io(), counter_file_.get(), &snap); !read) {
    counters_->error++;
    snap.error_count++;
    log_.logf(util::Level::warn, "statistics file: {}", read.error());
  }
  engine::Counters::assign(engine::Counters::of(snap), *out);
}

util::Status Backend::save_stats(stats::FoldMode mode) {
  if (inherited()) return util::fail("the cache was opened before a fork");
  if (!counter_file_) return util::fail("this process keeps no statistics file for the cache");
  // Entry and byte totals come from the store, when this process has it.
  const bool store_totals = primary_ && !degraded_at_open_ && !breaker_.open();
  auto update = [&](stats::Snapshot& s) {
    if (!store_totals) return;
    s.total_entries = primary_->entries();
    s.total_size_bytes = primary_->bytes();
  };
  std::lock_guard lock(stats_mu_);
  std::string warning;
  if (auto saved =
          stats::fold_stats(r_.io(), counter_file_.get(), mode, now(), update, nullptr, &warning);
      !saved) {
    counters_->error++;
    log_.logf(util::Level::warn, "could not write statistics: {}", saved.error());
    return saved;
  }
  if (!warning.empty()) {
    counters_->error++;
    log_.logf(util::Level::warn, "statistics file was corrupt: {}", warning);
  }
  return {};
}

void Backend::flush_soon() {
  {
    std::lock_guard lock(hk_mu_);
    hk_flush_ = true;
  }
  hk_cv_.notify_one();
}

void Backend::start_housekeeper() {
  // The first cleanup is due an interval after the open, not after the thread got going.
  hk_ = std::make_unique<std::thread>([this, opened = mono_.now()] { housekeeper(opened); });
}

void Backend::housekeeper(util::MonotonicClock::time_point opened) {
  using clock = util::MonotonicClock;
  // Decisions read the monotonic clock (a test's, when injected); blocking is in real time, at
  // most an hour at once (a longer wait only wakes to look again).
  constexpr auto kLongest = std::chrono::hours(1);
  // Periodic statistics writes are spaced so that a busy cache does not fsync hundreds of times a
  // second; flush(), cleanup and close write at once.
  constexpr auto kSaveSpacing = std::chrono::milliseconds(250);
  // Hits are applied to the index as soon as a batch is ready; their access records are written
  // at most this often, so that a key read again and again is written once per period (the
  // access data a SIGKILL can lose: docs/ARCHITECTURE.md, invariant 4).
  constexpr auto kAccessDelay = std::chrono::milliseconds(500);
  auto next_persist = clock::time_point::min();
  const auto interval = r_.config.cleanup_interval;
  auto next_cleanup = interval.count() > 0 ? opened + interval : clock::time_point::max();
  auto next_save = clock::time_point::min();
  bool save_due = false;
  auto next_recovery = clock::time_point::min();
  auto recovery_pause = std::chrono::milliseconds(100);
  std::unique_lock lock(hk_mu_);
  for (;;) {
    auto wake = next_cleanup;
    if (primary_->has_pending_access()) wake = std::min(wake, next_persist);
    if (writes_failing_.load()) wake = std::min(wake, next_recovery);
    if (save_due) wake = std::min(wake, next_save);
    auto ready = [&] {
      return hk_stop_ || hk_flush_ || (hk_save_ && !save_due) ||
             (hk_recover_ && mono_.now() >= next_recovery);
    };
    hk_cv_.wait_for(lock, mono_.until(wake, kLongest), ready);
    if (hk_stop_) return;
    save_due = std::exchange(hk_save_, false) || save_due;
    const bool apply_asked = std::exchange(hk_flush_, false);
    hk_recover_ = false;
    lock.unlock();
    if (writes_failing_.load() && mono_.now() >= next_recovery) {
      recover_writes();
      if (writes_failing_.load()) {
        next_recovery = mono_.now() + recovery_pause;
        recovery_pause = std::min(recovery_pause * 2, std::chrono::milliseconds(5000));
      } else {
        recovery_pause = std::chrono::milliseconds(100);
      }
    }
    if (!breaker_.open() && !writes_failing_.load() && primary_->has_pending_access()) {
      if (mono_.now() >= next_persist) {
        if (auto s = primary_->flush_access(); !s.ok()) {
          counters_->error++;
          log_.logf(util::Level::warn, "could not save access data: {}", s.message);
        }
        next_persist = mono_.now() + kAccessDelay;
      } else if (apply_asked) {
        primary_->apply_access();
      }
    }
    const auto now_steady = mono_.now();
    if (now_steady >= next_cleanup) {
      const Lease lease = begin();
      std::size_t removed = 0;
      const kv::Status s = lease.engine->cleanup(now_ns(), &removed);
      finish(lease, s, "background cleanup");
      if (s.ok()) counters_->cleanup++;
      log_.logf(util::Level::debug, "background cleanup removed {} entries", removed);
      next_cleanup = mono_.now() + interval;
      save_due = true;
      next_save = clock::time_point::min();
    }
    if (save_due && now_steady >= next_save) {
      (void)save_stats();  // counted and logged
      save_due = false;
      next_save = mono_.now() + kSaveSpacing;
    }
    lock.lock();
  }
}

}  // namespace larder::core
