// Fault handling: failing stores, the circuit breaker, corrupt and unusable directories, unsafe
// roots. Nothing here may throw out of a read. (Configuration checks: api/test_config.cpp.)
#include <doctest/doctest.h>

#include <sys/stat.h>

#include <fstream>

#include "api/config.hpp"
#include "core/backend.hpp"
#include "kv/memory_kv.hpp"
#include "larder/object.hpp"
#include "support.hpp"
#include "util/fs.hpp"

#include <cereal/types/vector.hpp>

using namespace larder;
using namespace larder::test;
using namespace std::chrono_literals;

namespace {

// A Kv whose every call fails while `failing` is set. With `sticky`, like RocksDB after a
// background error, it keeps failing once it failed until recover() is called.
class FaultKv final : public kv::Kv {
 public:
  explicit FaultKv(std::shared_ptr<std::atomic<bool>> failing, bool sticky = false)
      : inner_(kv::make_memory_kv()), failing_(std::move(failing)), sticky_(sticky) {}
  kv::Status recover(bool* reopened) override {
    *reopened = false;
    ++recovers;
    if (*failing_) return fail();
    stuck_ = false;
    return kv::Status();
  }
  int recovers = 0;
  kv::Status get(kv::Cf cf, std::string_view key, std::string* value) override {
    if (failing()) return fail();
    return inner_->get(cf, key, value);
  }
  kv::Status scan(kv::Cf cf, std::string_view b, std::string_view e,
                  const kv::ScanFn& fn) override {
    if (failing()) return fail();
    return inner_->scan(cf, b, e, fn);
  }
  std::unique_ptr<kv::Batch> new_batch() override { return inner_->new_batch(); }
  kv::Status write(kv::Batch& batch) override {
    if (failing()) return fail();
    return inner_->write(batch);
  }
  kv::Status flush() override { return kv::Status(); }
  kv::Status compact(kv::Cf) override { return kv::Status(); }
  kv::Status reset(kv::Cf cf) override {
    if (failing()) return fail();
    return inner_->reset(cf);
  }

 private:
  kv::Status fail() {
    if (sticky_) stuck_ = true;
    return {kv::Code::io_error, "injected I/O error"};
  }
  bool failing() const { return *failing_ || stuck_; }
  std::unique_ptr<kv::Kv> inner_;
  std::shared_ptr<std::atomic<bool>> failing_;
  bool sticky_;
  std::atomic<bool> stuck_{false};
};

}  // namespace

TEST_CASE("I/O failures degrade to misses, then the breaker bypasses the store and recovers") {
  Fixture<RocksStore> f;
  std::vector<std::string> logged;
  std::mutex log_mu;
  f.config.log = [&](LogLevel, std::string_view m) {
    std::lock_guard lock(log_mu);
    logged.emplace_back(m);
  };
  auto failing = std::make_shared<std::atomic<bool>>(false);
  auto backend = core::Backend::open(
      api::resolve(f.config),
      [&](const core::Resolved&, const kv::RocksOptions&, std::unique_ptr<kv::Kv>* out) {
        *out = std::make_unique<FaultKv>(failing);
        return kv::Status();
      });
  auto& primary = backend->primary();
  engine::SetOutcome out{};
  REQUIRE(primary.set("stale-risk", "old", 0, "default", {}, backend->now_ns(), &out).ok());
  REQUIRE(primary.set("kept", "value", 0, "default", {}, backend->now_ns(), &out).ok());

  *failing = true;
  // Reads fail without throwing: misses, counted, logged.
  for (int i = 0; i < core::kBreakerThreshold; ++i) {
    const auto lease = backend->begin();
    CHECK(lease.primary);
    engine::Found found;
    const kv::Status s = lease.engine->read("kept", backend->now_ns(), engine::Want::value, &found);
    CHECK(s.failed());
    backend->finish(lease, s, "get");
  }
  CHECK(backend->degraded());
  CHECK(backend->counters().error.load() == core::kBreakerThreshold);
  CHECK(backend->last_error().find("injected I/O error") != std::string::npos);
  CHECK_FALSE(logged.empty());

  // While open, operations go to memory; a write there is remembered.
  {
    const auto lease = backend->begin();
    CHECK_FALSE(lease.primary);
    CHECK(lease.engine->set("stale-risk", "new", 0, "default", {}, backend->now_ns(), &out).ok());
    backend->finish(lease, kv::Status(), "set", "stale-risk");
  }
  // Still failing at the retry time: stays open.
  f.clock.advance(core::kBreakerRecovery + 1s);
  CHECK_FALSE(backend->begin().primary);
  // Store healthy again: recovery removes keys written meanwhile, so no old value resurfaces.
  *failing = false;
  f.clock.advance(core::kBreakerRecovery + 1s);
  const auto lease = backend->begin();
  CHECK(lease.primary);
  CHECK_FALSE(backend->degraded());
  engine::Found found;
  CHECK(primary.read("stale-risk", backend->now_ns(), engine::Want::value, &found).not_found());
  CHECK(primary.read("kept", backend->now_ns(), engine::Want::value, &found).ok());
}

TEST_CASE("the breaker closes on a store that needs resuming, and counts bypassed writes") {
  Fixture<RocksStore> f;
  std::vector<std::string> logged;
  std::mutex log_mu;
  f.config.log = [&](LogLevel, std::string_view m) {
    std::lock_guard lock(log_mu);
    logged.emplace_back(m);
  };
  auto failing = std::make_shared<std::atomic<bool>>(false);
  FaultKv* fault = nullptr;
  auto backend = core::Backend::open(
      api::resolve(f.config),
      [&](const core::Resolved&, const kv::RocksOptions&, std::unique_ptr<kv::Kv>* out) {
        auto kv = std::make_unique<FaultKv>(failing, /*sticky=*/true);
        fault = kv.get();
        *out = std::move(kv);
        return kv::Status();
      });
  *failing = true;
  for (int i = 0; i < core::kBreakerThreshold; ++i) {
    const auto lease = backend->begin();
    engine::Found found;
    backend->finish(lease, lease.engine->read("k", backend->now_ns(), engine::Want::value, &found),
                    "get");
  }
  REQUIRE(backend->degraded());
  engine::SetOutcome out{};
  for (int i = 0; i < 3; ++i) {
    const auto lease = backend->begin();
    REQUIRE_FALSE(lease.primary);
    const std::string key = "bypassed" + std::to_string(i);
    CHECK(lease.engine->set(key, "v", 0, "default", {}, backend->now_ns(), &out).ok());
    backend->finish(lease, kv::Status(), "set", key);
  }
  // The fault is gone, but the store stays stuck until it is resumed: the probe must do that.
  *failing = false;
  f.clock.advance(core::kBreakerRecovery + std::chrono::seconds(1));
  CHECK(backend->begin().primary);
  CHECK_FALSE(backend->degraded());
  CHECK(fault->recovers >= 1);
  CHECK(backend->last_error().find("3 writes made while the store was bypassed") !=
        std::string::npos);
}

TEST_CASE("the public API never throws on store failure") {
  Fixture<RocksStore> f;
  Cache c = f.open();
  REQUIRE(c.set("k", "v"));
  // Make the store directory unreadable underneath a live cache is not portable as root, so
  // exercise the read path with a corrupt record instead.
  {
    auto backend = backend_of(c);
    auto batch = backend->primary().kv().new_batch();
    batch->put(kv::Cf::entries, "broken", "\x09garbage");
    REQUIRE(backend->primary().kv().write(*batch).ok());
  }
  CHECK_FALSE(c.get_entry("broken", true));
  CHECK_FALSE(c.metadata("broken"));
  CHECK(c.stats().error_count >= 1);
  CHECK(c.get("k") == "v");
}

TEST_CASE_TEMPLATE("a corrupt entry found by a read is removed with its index records", S,
                   RocksStore, MemoryStore) {
  Fixture<S> f;
  Cache c = f.open();
  REQUIRE(c.set("good", "v", ttl(60, "x")));
  REQUIRE(c.set("bad", "value", ttl(60, "x")));
  {
    auto& e = backend_of(c)->primary();
    auto batch = e.kv().new_batch();
    batch->put(kv::Cf::entries, "bad", "\x01\x00truncated");
    REQUIRE(e.kv().write(*batch).ok());
  }
  CHECK_FALSE(c.get("bad"));  // a miss, never an exception
  const Stats s = c.stats();
  CHECK(s.error_count == 1);
  CHECK(s.miss_count == 1);
  CHECK(c.keys() == std::vector<std::string>{"good"});
  CHECK(s.total_entries == 1);
  CHECK(s.categories == std::map<std::string, std::uint64_t>{{"x", 1}});
  CHECK(store_problems(c).empty());
  CHECK_FALSE(c.get("bad"));
  CHECK(c.stats().error_count == 1);  // now a plain miss
}

TEST_CASE("a corrupt store is moved aside and the cache starts empty") {
  Fixture<RocksStore> f;
  std::filesystem::path dir;
  {
    Cache c = f.open();
    dir = c.directory();
    REQUIRE(c.set("k", "v"));
  }
  for (const auto& entry : std::filesystem::directory_iterator(dir / "db")) {
    const std::string name = entry.path().filename().string();
    if (name.starts_with("MANIFEST") || name == "CURRENT") {
      std::ofstream(entry.path(), std::ios::trunc) << "this is not a manifest";
    }
  }
  Cache c = f.open();
  CHECK_FALSE(c.degraded());
  CHECK_FALSE(c.get("k"));
  CHECK(c.set("k2", "v2"));
  CHECK(c.get("k2") == "v2");
  bool moved = false;
  for (const auto& entry : std::filesystem::directory_iterator(dir))
    if (entry.path().filename().string().starts_with("db.corrupt-")) moved = true;
  CHECK(moved);
  CHECK(c.last_error().find("corrupt") != std::string::npos);
}

TEST_CASE("an unusable directory gives a degraded memory cache") {
  TempDir tmp;
  TestClock clock;
  Config cfg = RocksStore::config(tmp, clock);
  // A regular file where the cache directory should be.
  std::ofstream(tmp / "file") << "x";
  cfg.cache_root = tmp / "file" / "cache";
  Cache c = Cache::open(cfg);
  CHECK(c.degraded());
  CHECK_FALSE(c.last_error().empty());
  CHECK(c.set("k", "v"));
  CHECK(c.get("k") == "v");
}

TEST_CASE("a store held by another opener degrades with a message") {
  Fixture<RocksStore> f;
  f.config.strategy = Strategy::shared;
  // Hold the RocksDB lock through a separate Kv (as another process would).
  std::unique_ptr<kv::Kv> holder;
  REQUIRE(larder::util::create_private_directories(f.dir / "db").ok());
  REQUIRE(kv::open_rocks_kv(f.dir / "db", {}, &holder).ok());
  Cache c = f.open();
  CHECK(c.degraded());
  CHECK(c.last_error().find("lock") != std::string::npos);
  CHECK(c.set("k", "v"));
}

TEST_CASE("unsafe roots are refused with a clear error") {
  TempDir tmp;
  Config cfg;
  cfg.cache_root = tmp / "open";
  std::filesystem::create_directory(cfg.cache_root);
  ::chmod(cfg.cache_root.c_str(), 0777);
  CHECK_THROWS_WITH_AS(Cache::open(cfg), doctest::Contains("writable by group or others"),
                       ConfigError);
  CHECK_THROWS_WITH_AS(Cache::open(cfg), doctest::Contains("cache_root"), ConfigError);
  if (::geteuid() == 0) {
    cfg.cache_root = tmp / "other";
    std::filesystem::create_directory(cfg.cache_root);
    REQUIRE(::chown(cfg.cache_root.c_str(), 65534, 65534) == 0);
    CHECK_THROWS_WITH_AS(Cache::open(cfg), doctest::Contains("owned by uid 65534"), ConfigError);
  }
  // Directories the cache creates are private.
  cfg.cache_root = tmp / "fresh" / "nested";
  cfg.cleanup_interval = 0s;
  Cache c = Cache::open(cfg);
  struct stat st {};
  REQUIRE(::stat(cfg.cache_root.c_str(), &st) == 0);
  CHECK((st.st_mode & 0777) == 0700);
  REQUIRE(::stat(c.directory().c_str(), &st) == 0);
  CHECK((st.st_mode & 0777) == 0700);
}

TEST_CASE("the disabled strategy keeps nothing on disk") {
  TempDir tmp;
  TestClock clock;
  Config cfg = MemoryStore::config(tmp, clock);
  {
    Cache c = Cache::open(cfg);
    REQUIRE(c.set("k", "v"));
    c.flush();
    CHECK(c.directory().empty());
  }
  CHECK(std::filesystem::is_empty(tmp.path()));
  Cache again = Cache::open(cfg);
  CHECK_FALSE(again.get("k"));  // a memory cache is new every time
}

TEST_CASE("the log sink receives messages and LARDER_LOG is honoured") {
  Fixture<RocksStore> f;
  std::vector<std::pair<LogLevel, std::string>> lines;
  f.config.log = [&](LogLevel l, std::string_view m) { lines.emplace_back(l, std::string(m)); };
  Cache c = f.open();
  REQUIRE(c.set("junk", "x"));
  c.get_object<std::vector<int>>("junk");
  REQUIRE_FALSE(lines.empty());
  CHECK(lines.back().second.find("junk") != std::string::npos);
  CHECK(lines.back().first == LogLevel::warn);
}

TEST_CASE("a cache_root that is a regular file gives a degraded memory cache, not an exception") {
  TempDir tmp;
  { std::ofstream(tmp / "file") << "not a directory"; }
  for (Strategy strategy : {Strategy::process_isolated, Strategy::shared}) {
    Config cfg;
    cfg.cache_root = tmp / "file";
    cfg.strategy = strategy;
    Cache c = Cache::open(cfg);
    CHECK(c.degraded());
    CHECK_FALSE(c.last_error().empty());
    CHECK(c.set("k", "v"));
    CHECK(c.get("k") == "v");
  }
}

TEST_CASE("shared: a lock file replaced by a directory degrades to memory; calls still work") {
  TempDir tmp;
  std::filesystem::create_directories(tmp / "cache" / ".larder.lock");
  ::chmod((tmp / "cache").c_str(), 0700);
  Config cfg;
  cfg.cache_root = tmp / "cache";
  cfg.strategy = Strategy::shared;
  Cache c = Cache::open(cfg);
  CHECK(c.degraded());
  CHECK(c.last_error().find(".larder.lock") != std::string::npos);
  CHECK(c.set("k", "v"));
  CHECK(c.get("k") == "v");
  CHECK(c.remove("k"));
}

TEST_CASE("shared: an owner that cannot listen says it is degraded") {
  TempDir tmp;
  std::filesystem::create_directories(tmp / "cache" / ".larder.sock" / "blocker");
  ::chmod((tmp / "cache").c_str(), 0700);
  Config cfg;
  cfg.cache_root = tmp / "cache";
  cfg.strategy = Strategy::shared;
  Cache c = Cache::open(cfg);
  CHECK(c.degraded());
  CHECK(c.last_error().find(".larder.sock") != std::string::npos);
  CHECK(c.set("k", "v"));  // its own calls still use the store
  CHECK(c.get("k") == "v");
}

TEST_CASE("expires_at saturates for huge TTLs instead of overflowing into the past") {
  Fixture<MemoryStore> f;
  Cache c = f.open();
  REQUIRE(c.set("k", "v", ttl(9'000'000'000)));
  auto info = c.metadata("k");
  REQUIRE(info);
  CHECK(info->status == EntryStatus::fresh);
  REQUIRE(info->expires_at);
  CHECK(*info->expires_at > info->created_at);
  CHECK(*info->remaining_ttl_seconds() > 0);
}

TEST_CASE(
    "a CURRENT file naming a missing MANIFEST is a corrupt store: moved aside, not degraded") {
  Fixture<RocksStore> f;
  std::filesystem::path dir;
  {
    Cache c = f.open();
    REQUIRE(c.set("k", "v"));
    dir = c.directory();
  }
  { std::ofstream(dir / "db" / "CURRENT") << "MANIFEST-999999\n"; }
  for (int open = 0; open < 2; ++open) {  // and it stays healthy on the next open
    Cache c = f.open();
    CHECK_FALSE(c.degraded());
    CHECK(c.set("k2", "v2"));
  }
  bool aside = false;
  for (const auto& e : std::filesystem::directory_iterator(dir))
    aside = aside || e.path().filename().string().starts_with("db.corrupt-");
  CHECK(aside);
}

TEST_CASE("a store that cannot be opened at first is opened by the breaker's probe later") {
  Fixture<RocksStore> f;
  auto failing = std::make_shared<std::atomic<bool>>(true);
  int attempts = 0;
  auto backend = core::Backend::open(
      api::resolve(f.config),
      [&](const core::Resolved& r, const kv::RocksOptions& ro, std::unique_ptr<kv::Kv>* out) {
        ++attempts;
        if (*failing) return kv::Status{kv::Code::io_error, "injected: No space left on device"};
        std::filesystem::create_directories(r.dir / "db");
        return kv::open_rocks_kv(r.dir / "db", ro, out);
      });
  CHECK(backend->degraded());
  CHECK(backend->last_error().find("retrying") != std::string::npos);
  auto set = [&](const std::string& key) {
    const auto lease = backend->begin();
    engine::SetOutcome out{};
    const kv::Status s =
        lease.engine->set(key, "v-" + key, 0, "default", {}, backend->now_ns(), &out);
    backend->finish(lease, s, "set", key);
    return std::pair{s.ok(), lease.primary};
  };
  CHECK(set("in-memory") == std::pair{true, false});  // served from memory meanwhile
  // Too early for the probe: no second attempt.
  CHECK(set("still-memory") == std::pair{true, false});
  CHECK(attempts == 1);
  // The probe retries once the pause is over; while the fault lasts the cache stays on memory.
  f.clock.advance(core::kBreakerRecovery + std::chrono::seconds(1));
  CHECK(set("third") == std::pair{true, false});
  CHECK(attempts == 2);
  *failing = false;
  f.clock.advance(core::kBreakerRecovery + std::chrono::seconds(1));
  CHECK(set("persisted") == std::pair{true, true});
  CHECK(attempts == 3);
  CHECK_FALSE(backend->degraded());
  CHECK(backend->last_error().find("3 writes made while the store was bypassed") !=
        std::string::npos);
  backend.reset();
  // A normal open finds what was written after the store opened, and none of the memory writes.
  Cache c = f.open();
  CHECK_FALSE(c.degraded());
  CHECK(c.get("persisted") == "v-persisted");
  CHECK_FALSE(c.get("in-memory"));
  CHECK(store_problems(c).empty());
}
