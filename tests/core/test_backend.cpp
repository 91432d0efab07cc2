// core::Backend on its own: the breaker over a failing store (counted, logged, bypassed to memory,
// probed on the injected monotonic clock, recovered without resurfacing old values), a store
// that opens only later, and the remote copies a get defers (fills).
#include <doctest/doctest.h>

#include <atomic>
#include <memory>
#include <mutex>

#include "api/config.hpp"
#include "core/backend.hpp"
#include "kv/memory_kv.hpp"
#include "support.hpp"

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

TEST_CASE("backend: deferred fills wait visibly, are stored by the next settle, last copy wins") {
  Fixture<MemoryStore> f;
  auto backend = core::Backend::open(api::resolve(f.config));
  CHECK_FALSE(backend->has_fills());
  auto fill = [&](std::string key, std::string value) {
    core::Backend::Fill x;
    x.key = std::move(key);
    x.entry.value = std::move(value);
    x.entry.created_ns = backend->now_ns();
    backend->defer_fill(std::move(x));
  };
  fill("a", "first");
  fill("b", "b1");
  fill("a", "second");  // fetched twice: the later copy is the one stored
  CHECK(backend->has_fills());
  CHECK(backend->fill_waits("a"));
  CHECK_FALSE(backend->fill_waits("c"));
  engine::Found found;
  CHECK(backend->primary().read("a", backend->now_ns(), engine::Want::value, &found).not_found());
  backend->settle_fills();
  CHECK_FALSE(backend->has_fills());
  CHECK_FALSE(backend->fill_waits("a"));
  REQUIRE(backend->primary().read("a", backend->now_ns(), engine::Want::value, &found).ok());
  CHECK(found.value == "second");
  CHECK(backend->primary().read("b", backend->now_ns(), engine::Want::value, &found).ok());

  // More than kMaxFills waiting: the oldest are stored first, so the wait stays bounded.
  for (std::size_t i = 0; i <= core::Backend::kMaxFills; ++i) fill("m" + std::to_string(i), "v");
  CHECK(backend->primary().read("m0", backend->now_ns(), engine::Want::value, &found).ok());
  CHECK(backend->fill_waits(fmt::format("m{}", core::Backend::kMaxFills)));
}
