// The eviction policies on their own (src/engine/policy.hpp), over a small index and a host that
// plays the engine: the victims each policy family chooses after inserts, hits and overwrites.
// The engine's replay tests (test_engine.cpp) check the same orders through the whole engine.
#include <doctest/doctest.h>

#include <string>
#include <vector>

#include "engine/policy.hpp"
#include "engine/txn.hpp"
#include "kv/memory_kv.hpp"

namespace larder::engine {
namespace {

// The engine's part, reduced to an entry limit over the index.
class Host final : public PolicyHost {
 public:
  explicit Host(EvictionPolicy kind)
      : kv_(kv::make_memory_kv()), policy_(make_policy(kind, *this)) {}

  Policy& policy() { return *policy_; }
  // A new key of `size` bytes, placed as a set would place it.
  void insert(const std::string& key, std::uint64_t size = 1) {
    Txn t(*kv_, *policy_);
    const Place admitted = policy_->admit(t, key, size);
    Node n;
    n.size = size;
    n.access_count = 1;
    n.last_tick = n.insert_tick = next_tick();
    policy_->placed(n, admitted, n.last_tick);
    n.category = &category_;
    auto [it, inserted] = index_.emplace(key, n);
    REQUIRE(inserted);
    policy_->link(*it, false);
    policy_->commit(t);
  }
  void hit(const std::string& key) {
    auto it = index_.find(key);
    const std::uint64_t tick = next_tick();
    policy_->hit(*it, 1, tick);
    it->second.access_count += 1;
    it->second.last_tick = tick;
    policy_->end_hits();
  }
  // The keys a transaction that must go down to `limit` entries evicts, in order.
  std::vector<std::string> victims(std::uint64_t limit) {
    limit_ = limit;
    Txn t(*kv_, *policy_);
    policy_->victims(t, Keep{});
    std::vector<std::string> out(t.removed.begin(), t.removed.end());
    policy_->commit(t);
    for (const std::string& key : out) {
      auto it = index_.find(key);
      policy_->unlink(*it, false);
      index_.erase(it);
    }
    return out;
  }
  std::vector<std::string> problems() {
    std::vector<std::string> out;
    policy_->verify([&](std::string p) { out.push_back(std::move(p)); });
    return out;
  }

  bool over_limits(const Txn& t) const override {
    return index_.size() - t.removed.size() > limit_;
  }
  void evict(Txn& t, Slot& victim) override {
    policy_->removing(victim.second);
    t.add_removed(victim.first, EventKind::evict);
    ++t.evictions;
  }
  std::uint64_t next_tick() override { return ++tick_; }
  void see_tick(std::uint64_t tick) override { tick_ = std::max(tick_, tick); }
  void mark_dirty(std::string_view) override {}
  void mark_clean(std::string_view) override {}
  std::uint64_t max_entries() const override { return limit_; }
  std::uint64_t max_bytes() const override { return 0; }
  Index& index() override { return index_; }
  kv::Kv& store() override { return *kv_; }
  bool durable() const override { return false; }
  const util::Logger& log() const override { return log_; }

 private:
  std::unique_ptr<kv::Kv> kv_;
  Index index_;
  std::unique_ptr<Policy> policy_;
  std::string category_;
  std::uint64_t tick_ = 0, limit_ = 0;
  util::Logger log_;
};

using Keys = std::vector<std::string>;

TEST_CASE("policy: LRU evicts the least recently used, a hit moves a key to the tail") {
  Host h(EvictionPolicy::lru);
  for (const char* k : {"a", "b", "c", "d"}) h.insert(k);
  h.hit("a");
  h.hit("c");
  CHECK(h.problems().empty());
  CHECK(h.victims(2) == Keys{"b", "d"});
  CHECK(h.problems().empty());
}

TEST_CASE("policy: LFU evicts the least often used, the oldest first among equals") {
  Host h(EvictionPolicy::lfu);
  for (const char* k : {"a", "b", "c", "d"}) h.insert(k);
  h.hit("a");
  h.hit("a");
  h.hit("b");
  h.hit("d");
  CHECK(h.victims(3) == Keys{"c"});
  CHECK(h.victims(1) == Keys{"b", "d"});
  CHECK(h.problems().empty());
}

TEST_CASE("policy: FIFO evicts in insert order, hits change nothing") {
  Host h(EvictionPolicy::fifo);
  for (const char* k : {"a", "b", "c"}) h.insert(k);
  h.hit("a");
  CHECK_FALSE(h.policy().hits_reorder());
  CHECK(h.victims(1) == Keys{"a", "b"});
  CHECK(h.problems().empty());
}

TEST_CASE("policy: TTL-only chooses no victim") {
  Host h(EvictionPolicy::ttl);
  for (const char* k : {"a", "b"}) h.insert(k);
  CHECK(h.victims(0).empty());
}

TEST_CASE("policy: S3-FIFO evicts from S once, keeps a key read twice, readmits a ghost to M") {
  Host h(EvictionPolicy::s3fifo);
  // Limit 10: S holds 1, M 9. Every key enters S.
  for (int i = 0; i < 10; ++i) h.insert("k" + std::to_string(i));
  h.hit("k0");
  h.hit("k0");  // f = 2: moves to M instead of going
  // Over the limit by one: k0 moves to M, k1 (f = 0) leaves S and becomes a ghost.
  h.insert("x");
  CHECK(h.victims(10) == Keys{"k1"});
  CHECK(h.problems().empty());
  // k1 comes back: remembered as a ghost, it enters M.
  h.insert("k1");
  CHECK(h.victims(10) == Keys{"k2"});
  CHECK(h.problems().empty());
}

}  // namespace
}  // namespace larder::engine
