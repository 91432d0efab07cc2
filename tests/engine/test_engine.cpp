// Engine behaviour that needs more than one cache lifetime or a reference model: exact eviction
// against textbook simulators, reopen, index rebuilds, the compaction filter's safety.
#include <doctest/doctest.h>

#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <fstream>
#include <iterator>
#include <list>
#include <map>
#include <mutex>
#include <random>
#include <set>
#include <thread>

#include <fmt/format.h>
#include <unordered_map>

#include "api/config.hpp"
#include "child.hpp"
#include "core/backend.hpp"
#include "engine/engine.hpp"
#include "kv/memory_kv.hpp"
#include "support.hpp"

using namespace larder;
using namespace larder::test;
using namespace std::chrono_literals;

namespace {

struct Request {
  std::string key;
  std::uint64_t size;
};

// Zipf-like trace over `objects` keys with per-key fixed sizes.
std::vector<Request> make_trace(std::size_t n, std::size_t objects, std::uint32_t seed) {
  std::mt19937_64 rng(seed);
  std::vector<double> weights(objects);
  for (std::size_t i = 0; i < objects; ++i)
    weights[i] = 1.0 / std::pow(static_cast<double>(i + 1), 0.9);
  std::discrete_distribution<std::size_t> pick(weights.begin(), weights.end());
  std::vector<Request> out;
  for (std::size_t i = 0; i < n; ++i) {
    const std::size_t id = pick(rng);
    out.push_back({"obj" + std::to_string(id), 1 + (id * 2654435761u) % 200});
  }
  return out;
}

// A textbook S3-FIFO, written from the rules of the S3-FIFO issue (docs/ARCHITECTURE.md) with
// plain lists, independent of the engine's structures: S and M hold cached keys, G the keys (with
// sizes) recently evicted from S; f counts hits (uncapped here: the rules only ask f >= 2,
// f >= 1 and min(f, 3)).
class S3FifoSim {
 public:
  S3FifoSim(std::uint64_t max_entries, std::uint64_t max_bytes)
      : max_e_(max_entries), max_b_(max_bytes) {}

  // A read: true on a hit (f + 1).
  bool get(const std::string& key) {
    auto it = objs_.find(key);
    if (it == objs_.end()) return false;
    it->second.f += 1;
    return true;
  }
  // A set of a key that is not cached. False when larger than the byte limit (refused).
  bool insert(const std::string& key, std::uint64_t size) {
    if (max_b_ != 0 && size > max_b_) return false;
    bool to_main = false;
    if (auto g = ghost_index_.find(key); g != ghost_index_.end()) {
      ghost_bytes_ -= g->second->second;
      ghost_.erase(g->second);
      ghost_index_.erase(g);
      to_main = true;
    }
    if (max_b_ != 0 && size >= max_b_ / 10) to_main = true;
    while ((max_e_ != 0 && objs_.size() + 1 > max_e_) ||
           (max_b_ != 0 && s_.bytes + m_.bytes + size > max_b_)) {
      const bool main_over = (max_e_ != 0 && m_.keys.size() > max_e_ - max_e_ / 10) ||
                             (max_b_ != 0 && m_.bytes > max_b_ - max_b_ / 10);
      if (main_over || s_.keys.empty())
        evict_main();
      else
        evict_small();
    }
    push(to_main ? m_ : s_, key, size);
    return true;
  }
  bool in_small(const std::string& k) const { return contains(s_, k); }
  bool in_main(const std::string& k) const { return contains(m_, k); }
  bool in_ghost(const std::string& k) const { return ghost_index_.contains(k); }
  std::size_t cached() const { return objs_.size(); }

 private:
  struct Queue {
    std::list<std::string> keys;  // head first
    std::uint64_t bytes = 0;
  };
  struct Obj {
    std::uint64_t size = 0, f = 0;
  };
  static bool contains(const Queue& q, const std::string& k) {
    return std::find(q.keys.begin(), q.keys.end(), k) != q.keys.end();
  }
  void push(Queue& q, const std::string& key, std::uint64_t size) {
    q.keys.push_back(key);
    q.bytes += size;
    objs_[key] = {size, 0};
  }
  std::string pop(Queue& q) {
    std::string k = q.keys.front();
    q.keys.pop_front();
    q.bytes -= objs_[k].size;
    return k;
  }
  void evict_small() {
    while (!s_.keys.empty()) {
      const std::string k = pop(s_);
      const Obj o = objs_[k];
      if (o.f >= 2) {
        push(m_, k, o.size);  // f = 0
        continue;
      }
      objs_.erase(k);
      const std::uint64_t cap_e = max_e_ - (max_e_ + 9) / 10, cap_b = max_b_ - (max_b_ + 9) / 10;
      auto fits = [&] {
        return (max_e_ == 0 || ghost_.size() + 1 <= cap_e) &&
               (max_b_ == 0 || ghost_bytes_ + o.size <= cap_b);
      };
      while (!fits() && !ghost_.empty()) {
        ghost_bytes_ -= ghost_.front().second;
        ghost_index_.erase(ghost_.front().first);
        ghost_.pop_front();
      }
      if (fits()) {
        ghost_.emplace_back(k, o.size);
        ghost_index_[k] = std::prev(ghost_.end());
        ghost_bytes_ += o.size;
      }
      return;
    }
  }
  void evict_main() {
    while (!m_.keys.empty()) {
      const std::string k = pop(m_);
      const Obj o = objs_[k];
      if (o.f >= 1) {
        push(m_, k, o.size);
        objs_[k].f = std::min<std::uint64_t>(o.f, 3) - 1;
        continue;
      }
      objs_.erase(k);
      return;
    }
  }

  std::uint64_t max_e_, max_b_;
  Queue s_, m_;
  std::unordered_map<std::string, Obj> objs_;
  std::list<std::pair<std::string, std::uint64_t>> ghost_;
  std::unordered_map<std::string, std::list<std::pair<std::string, std::uint64_t>>::iterator>
      ghost_index_;
  std::uint64_t ghost_bytes_ = 0;
};

std::size_t simulate_s3fifo(const std::vector<Request>& trace, std::uint64_t max_entries,
                            std::uint64_t max_bytes) {
  S3FifoSim sim(max_entries, max_bytes);
  std::size_t misses = 0;
  for (const auto& r : trace) {
    if (sim.get(r.key)) continue;
    ++misses;
    (void)sim.insert(r.key, r.size);
  }
  return misses;
}

// Textbook simulators: each request is a get; on a miss the object is inserted, evicting by the
// policy until both limits hold. Objects larger than the byte capacity are not admitted.
std::size_t simulate(EvictionPolicy policy, const std::vector<Request>& trace,
                     std::uint64_t max_entries, std::uint64_t max_bytes) {
  if (policy == EvictionPolicy::s3fifo) return simulate_s3fifo(trace, max_entries, max_bytes);
  struct Obj {
    std::uint64_t size, freq, last, inserted;
  };
  std::unordered_map<std::string, Obj> cache;
  std::uint64_t bytes = 0, clock = 0;
  std::size_t misses = 0;
  for (const auto& r : trace) {
    ++clock;
    auto it = cache.find(r.key);
    if (it != cache.end()) {
      it->second.freq++;
      it->second.last = clock;
      continue;
    }
    ++misses;
    if (max_bytes != 0 && r.size > max_bytes) continue;
    while ((max_entries != 0 && cache.size() + 1 > max_entries) ||
           (max_bytes != 0 && bytes + r.size > max_bytes)) {
      auto victim = cache.begin();
      for (auto j = cache.begin(); j != cache.end(); ++j) {
        const Obj& a = j->second;
        const Obj& v = victim->second;
        bool better = false;
        switch (policy) {
          case EvictionPolicy::lru:
            better = a.last < v.last;
            break;
          case EvictionPolicy::lfu:
            better = a.freq < v.freq || (a.freq == v.freq && a.last < v.last);
            break;
          case EvictionPolicy::fifo:
            better = a.inserted < v.inserted;
            break;
          case EvictionPolicy::ttl:
          case EvictionPolicy::s3fifo:
            break;
        }
        if (better) victim = j;
      }
      bytes -= victim->second.size;
      cache.erase(victim);
    }
    cache[r.key] = {r.size, 1, clock, clock};
    bytes += r.size;
  }
  return misses;
}

std::size_t replay(Cache& c, const std::vector<Request>& trace) {
  std::size_t misses = 0;
  for (const auto& r : trace) {
    if (!c.get(r.key)) {
      ++misses;
      c.set(r.key, std::string(r.size, 'x'));
    }
  }
  return misses;
}

}  // namespace

TEST_CASE_TEMPLATE("eviction is exact: replay matches textbook simulators", S, RocksStore,
                   MemoryStore) {
  const auto trace = make_trace(S::persistent ? 6000 : 20000, 600, 42);
  for (EvictionPolicy policy :
       {EvictionPolicy::lru, EvictionPolicy::lfu, EvictionPolicy::fifo, EvictionPolicy::s3fifo}) {
    for (const auto& limits :
         {std::pair<std::uint64_t, std::uint64_t>{100, 0}, {0, 5000}, {80, 6000}}) {
      const std::uint64_t entries = limits.first;
      const std::uint64_t bytes = limits.second;
      CAPTURE(static_cast<int>(policy));
      CAPTURE(entries);
      CAPTURE(bytes);
      Fixture<S> f;
      f.config.eviction_policy = policy;
      f.config.max_entries = entries;
      f.config.max_size_bytes = bytes;
      f.config.default_ttl = 0s;
      Cache c = f.open();
      const std::size_t expected = simulate(policy, trace, entries, bytes);
      CHECK(replay(c, trace) == expected);
      const Stats s = c.stats();
      CHECK(s.miss_count == expected);
      if (entries != 0) CHECK(s.total_entries <= entries);
      if (bytes != 0) CHECK(s.total_size_bytes <= bytes);
      CHECK(store_problems(c).empty());
    }
  }
}

TEST_CASE("reopen keeps data, access data and statistics (RocksDB)") {
  Fixture<RocksStore> f;
  f.config.eviction_policy = EvictionPolicy::lru;
  f.config.max_entries = 3;
  std::filesystem::path dir;
  {
    Cache c = f.open();
    dir = c.directory();
    CHECK(dir == f.dir.path() / ("proc_" + std::to_string(::getpid())));
    REQUIRE(c.set("a", "1", ttl(100, "x")));
    REQUIRE(c.set("b", "2"));
    REQUIRE(c.set("c", "3"));
    REQUIRE(c.get("a"));  // b is least recent now
    c.get("missing");
  }
  CHECK(std::filesystem::exists(dir / ".cache_stats.json"));
  Cache c = f.open();
  CHECK(c.get("a") == "1");
  CHECK(c.metadata("a")->access_count == 3);
  CHECK(c.metadata("a")->category == "x");
  const Stats s = c.stats();
  CHECK(s.hit_count == 2);
  CHECK(s.miss_count == 1);
  CHECK(s.set_count == 3);
  CHECK(s.total_entries == 3);
  CHECK(s.total_size_bytes == 3);
  REQUIRE(c.set("d", "4"));  // LRU order survived the restart: b goes
  CHECK(c.keys() == std::vector<std::string>{"a", "c", "d"});
  CHECK(store_problems(c).empty());
}

TEST_CASE("two handles on one directory share one store") {
  Fixture<RocksStore> f;
  Cache a = f.open();
  Cache b = f.open();
  REQUIRE(a.set("k", "v"));
  CHECK(b.get("k") == "v");
  CHECK(b.stats().hit_count == 1);
  CHECK(a.stats().hit_count == 1);
  Cache moved = std::move(a);
  CHECK(moved.get("k") == "v");
}

TEST_CASE("changing the policy or stale factor rebuilds the indexes on open") {
  Fixture<RocksStore> f;
  f.config.max_entries = 0;
  {
    Cache c = f.open();
    REQUIRE(c.set("first", "1", ttl(10)));
    REQUIRE(c.set("second", "1", ttl(10)));
    REQUIRE(c.set("third", "1", ttl(0)));
    REQUIRE(c.get("first"));
  }
  f.config.eviction_policy = EvictionPolicy::fifo;
  f.config.max_entries = 3;
  f.config.stale_factor = 5.0;
  Cache c = f.open();
  f.clock.advance(30s);  // stale under factor 5, would be expired under 2
  CHECK(c.metadata("first")->status == EntryStatus::stale);
  CHECK(c.stats().stale_entries == 2);
  CHECK(c.stats().expired_entries == 0);
  REQUIRE(c.set("fourth", "1"));  // FIFO: first goes even though it was read last
  CHECK(c.keys() == std::vector<std::string>{"fourth", "second", "third"});
  CHECK(store_problems(c).empty());
}

TEST_CASE("the compaction filter never drops a stored entry; cleanup + compaction do") {
  Fixture<RocksStore> f;
  auto backend = core::Backend::open(api::resolve(f.config));
  auto& e = backend->primary();
  engine::SetOutcome out{};
  REQUIRE(e.set("exp", std::string(1000, 'x'), 10, "default", {}, backend->now_ns(), &out).ok());
  REQUIRE(e.set("live", "y", 0, "default", {}, backend->now_ns(), &out).ok());
  f.clock.advance(100s);  // exp is expired but not cleaned up
  REQUIRE(e.kv().flush().ok());
  REQUIRE(e.kv().compact(kv::Cf::entries).ok());
  engine::Found found;
  REQUIRE(e.read("exp", backend->now_ns(), engine::Want::value, &found).ok());
  CHECK(found.status == EntryStatus::expired);

  std::size_t removed = 0;
  REQUIRE(e.cleanup(backend->now_ns(), &removed).ok());
  CHECK(removed == 1);
  REQUIRE(e.kv().compact(kv::Cf::entries).ok());
  CHECK(e.read("exp", backend->now_ns(), engine::Want::value, &found).not_found());
  CHECK(e.read("live", backend->now_ns(), engine::Want::value, &found).ok());

  // The predicate itself: below the watermark only.
  auto wm = std::make_shared<std::atomic<std::int64_t>>(1000LL * 1'000'000'000);
  auto drop = engine::Engine::drop_predicate(wm, 2.0);
  engine::EntryHeader h;
  h.ttl_ms = 10'000;
  h.created_ns = 900LL * 1'000'000'000;  // expired at 920 s < 1000 s
  CHECK(drop(engine::encode_entry(h, "v")));
  h.created_ns = 990LL * 1'000'000'000;  // expired at 1010 s
  CHECK_FALSE(drop(engine::encode_entry(h, "v")));
  h.ttl_ms = 0;
  h.created_ns = 0;
  CHECK_FALSE(drop(engine::encode_entry(h, "v")));
  CHECK_FALSE(drop("garbage"));
}

TEST_CASE("background cleanup runs on its interval") {
  Fixture<RocksStore> f;
  LogLines log;
  f.config.log = log.sink();
  f.config.cleanup_interval = std::chrono::hours(1);
  Cache c = f.open();
  REQUIRE(c.set("t", "v", ttl(1)));
  CHECK(c.stats().cleanup_count == 0);
  f.clock.advance(std::chrono::hours(2));  // both clocks: the housekeeper's interval has passed
  // The housekeeper logs each cleanup once it has counted it: wait for that line.
  CHECK(log.wait_for("background cleanup removed 1 entries", 10s));
  CHECK(c.stats().cleanup_count >= 1);
  CHECK(c.keys().empty());
}

TEST_CASE("rebuild recounts totals from the entries") {
  Fixture<MemoryStore> f;
  auto backend = core::Backend::open(api::resolve(f.config));
  auto& e = backend->primary();
  engine::SetOutcome out{};
  for (int i = 0; i < 50; ++i)
    REQUIRE(e.set("k" + std::to_string(i), std::string(static_cast<std::size_t>(i), 'v'),
                  i % 2 == 0 ? 10 : 0, i % 3 == 0 ? "a" : "b", {}, backend->now_ns(), &out)
                .ok());
  const auto entries = e.entries();
  const auto bytes = e.bytes();
  const auto cats = e.categories();
  // Break a counter behind the engine's back, then rebuild.
  auto batch = e.kv().new_batch();
  std::string bogus;
  for (int i = 0; i < 3; ++i) engine::put_le64(bogus, 7);
  batch->put(kv::Cf::counters, "totals", bogus);
  REQUIRE(e.kv().write(*batch).ok());
  REQUIRE(e.rebuild().ok());
  CHECK(e.entries() == entries);
  CHECK(e.bytes() == bytes);
  CHECK(e.categories() == cats);
}

TEST_CASE("verify finds broken counters and access records; rebuild repairs them") {
  Fixture<RocksStore> f;
  Cache c = f.open();
  for (int i = 0; i < 20; ++i)
    REQUIRE(
        c.set("k" + std::to_string(i), "value", ttl(i % 2 == 0 ? 60 : 0, i % 3 == 0 ? "a" : "b")));
  REQUIRE(c.invalidate("k4"));
  CHECK(store_problems(c).empty());
  auto& e = backend_of(c)->primary();
  auto batch = e.kv().new_batch();
  std::string bogus;
  for (int i = 0; i < 3; ++i) engine::put_le64(bogus, 99);
  batch->put(kv::Cf::counters, "totals", bogus);
  engine::AccessRecord a;
  REQUIRE(e.access_of("k2", &a).ok());
  batch->put(kv::Cf::access, "k1", "\x01garbage");  // undecodable
  a.size = 999;
  batch->put(kv::Cf::access, "k2", engine::encode_access(a));
  batch->put(kv::Cf::access, "orphan", engine::encode_access(a));  // access data, no entry
  batch->put(kv::Cf::order, "stray", "");                          // a retired family
  REQUIRE(e.kv().write(*batch).ok());
  const auto problems = store_problems(c);
  CHECK(problems.size() >= 5);
  auto mentions = [&](std::string_view text) {
    return std::any_of(problems.begin(), problems.end(),
                       [&](const std::string& p) { return p.find(text) != std::string::npos; });
  };
  CHECK(mentions("'k1': undecodable access record"));
  CHECK(mentions("'k2': access record says 999 bytes, value has 5"));
  CHECK(mentions("counters say 99 entries / 99 bytes"));
  CHECK(mentions("21 access records for 20 entries"));
  CHECK(mentions("retired order family"));
  REQUIRE(e.rebuild().ok());
  CHECK(store_problems(c).empty());
  CHECK(c.get_entry("k4", true)->info.status == EntryStatus::invalid);
  CHECK(c.stats().total_entries == 20);
}

namespace {

std::size_t records_in(kv::Kv& kv, kv::Cf cf, std::string_view prefix = "") {
  std::size_t n = 0;
  const std::string end = prefix.empty() ? std::string() : std::string(prefix) + '\xff';
  REQUIRE(kv.scan(cf, prefix, end, [&](std::string_view, std::string_view) {
              ++n;
              return true;
            }).ok());
  return n;
}

}  // namespace

TEST_CASE("the memory store keeps access data, totals and ghosts in its index only") {
  for (const EvictionPolicy policy : {EvictionPolicy::lru, EvictionPolicy::s3fifo}) {
    CAPTURE(policy);
    Fixture<MemoryStore> f;
    f.config.max_entries = 10;
    f.config.eviction_policy = policy;
    Cache c = f.open();
    for (int i = 0; i < 30; ++i) {
      REQUIRE(c.set("k" + std::to_string(i), "value", ttl(i % 2 == 0 ? 60 : 0, "cat")));
      if (i % 3 == 0) (void)c.get("k" + std::to_string(i));
    }
    REQUIRE(c.invalidate("k29"));
    REQUIRE(c.remove("k28"));
    auto& e = backend_of(c)->primary();
    REQUIRE(e.flush_access().ok());
    CHECK_FALSE(e.has_pending_access());
    CHECK(records_in(e.kv(), kv::Cf::access) == 0);
    CHECK(records_in(e.kv(), kv::Cf::counters, engine::kGhostPrefix) == 0);
    std::string totals;
    REQUIRE(e.kv().get(kv::Cf::counters, "totals", &totals).ok());
    CHECK(engine::get_le64(totals) == 0);  // as written at open, never again
    CHECK(c.stats().total_entries == 9);
    CHECK(c.keys().size() == 9);
    CHECK(store_problems(c).empty());

    // verify checks the index against the entries: a record the index does not know is found.
    auto batch = e.kv().new_batch();
    batch->put(kv::Cf::entries, "stray", engine::encode_entry(engine::EntryHeader{}, "v"));
    REQUIRE(e.kv().write(*batch).ok());
    const auto problems = store_problems(c);
    CHECK(std::any_of(problems.begin(), problems.end(), [](const std::string& p) {
      return p.find("'stray': not in the in-memory index") != std::string::npos;
    }));

    if (policy == EvictionPolicy::s3fifo) {
      // A key read twice while in S moves to M when S reaches it (a queue move, kept in the
      // index): it outlives the next sets, which S alone would not let it.
      REQUIRE(c.set("m1", "v"));
      REQUIRE(c.get("m1"));
      REQUIRE(c.get("m1"));
      for (int i = 0; i < 5; ++i) REQUIRE(c.set("n" + std::to_string(i), "v"));
      CHECK(c.exists("m1"));
      REQUIRE(e.flush_access().ok());
      CHECK_FALSE(e.has_pending_access());
      CHECK(records_in(e.kv(), kv::Cf::access) == 0);
      continue;
    }
    // A rebuild keeps the access history the index had: the next victim is still the LRU one.
    REQUIRE(e.rebuild().ok());
    CHECK(store_problems(c).empty());
    CHECK(c.stats().total_entries == 10);
    REQUIRE(c.get("k20"));        // the oldest key; "stray" is the rebuild's newest
    REQUIRE(c.set("new", "v"));   // takes the invalid k29
    REQUIRE(c.set("new2", "v"));  // takes the least recently used: k21
    CHECK_FALSE(c.exists("k29"));
    CHECK_FALSE(c.exists("k21"));
    CHECK(c.exists("k20"));
    CHECK(c.exists("k22"));
    CHECK(c.exists("stray"));
  }
}

TEST_CASE("lowering the limits between opens is enforced by the next set") {
  Fixture<RocksStore> f;
  f.config.max_entries = 0;
  {
    Cache c = f.open();
    for (int i = 0; i < 300; ++i) REQUIRE(c.set("k" + std::to_string(1000 + i), "v"));
  }
  f.config.max_entries = 10;
  Cache c = f.open();
  CHECK(c.stats().total_entries == 300);
  REQUIRE(c.set("new", "v"));
  const auto keys = c.keys();
  CHECK(keys.size() == 10);
  // LRU: the nine most recently set survive, plus the new key.
  CHECK(std::count(keys.begin(), keys.end(), "new") == 1);
  CHECK(std::count(keys.begin(), keys.end(), "k1299") == 1);
  CHECK(std::count(keys.begin(), keys.end(), "k1290") == 0);
  CHECK(c.stats().eviction_count == 291);
  CHECK(store_problems(c).empty());
}

TEST_CASE("a read-only view of a live store reads and refuses writes") {
  Fixture<RocksStore> f;
  Cache c = f.open();
  REQUIRE(c.set("k", "v"));
  c.flush();
  std::unique_ptr<kv::Kv> view;
  kv::RocksOptions ro;
  ro.read_only = true;
  REQUIRE(kv::open_rocks_kv(c.directory() / "db", ro, &view).ok());
  std::string record;
  REQUIRE(view->get(kv::Cf::entries, "k", &record).ok());
  engine::EntryHeader h;
  std::size_t offset = 0;
  REQUIRE(engine::decode_entry(record, &h, &offset));
  CHECK(record.substr(offset) == "v");
  auto batch = view->new_batch();
  batch->put(kv::Cf::entries, "x", "y");
  CHECK(view->write(*batch).failed());
  // A directory that holds no store is reported, not created.
  std::unique_ptr<kv::Kv> none;
  CHECK(kv::open_rocks_kv(f.dir / "nothing-here", ro, &none).failed());
  CHECK_FALSE(std::filesystem::exists(f.dir / "nothing-here"));
}

// Engine v2 keeps the eviction order in memory and persists access data lazily: after a reopen or
// a crash (once the access data is flushed) the index loaded from the store must choose the same
// victims as a process that never stopped.
TEST_CASE("the index loaded after a reopen or SIGKILL evicts as an uninterrupted run") {
  const auto trace = make_trace(4000, 400, 7);
  const std::size_t half = trace.size() / 2;
  for (EvictionPolicy policy :
       {EvictionPolicy::lru, EvictionPolicy::lfu, EvictionPolicy::fifo, EvictionPolicy::s3fifo}) {
    CAPTURE(static_cast<int>(policy));
    auto configure = [&](Fixture<RocksStore>& f) {
      f.config.eviction_policy = policy;
      f.config.max_entries = 60;
      f.config.max_size_bytes = 4000;
      f.config.default_ttl = 0s;
    };
    // Uninterrupted.
    Fixture<RocksStore> whole;
    configure(whole);
    std::vector<std::string> expected_keys;
    std::size_t expected_misses = 0;
    {
      Cache c = whole.open();
      replay(c, std::vector<Request>(trace.begin(), trace.begin() + half));
      expected_misses = replay(c, std::vector<Request>(trace.begin() + half, trace.end()));
      expected_keys = c.keys();
    }
    for (const bool crash : {false, true}) {
      CAPTURE(crash);
      Fixture<RocksStore> f;
      configure(f);
      if (crash) {
        // In a process of its own (RocksDB does not survive a fork without exec), killed once
        // it has replayed the first half and flushed.
        const std::filesystem::path file = f.dir.path() / "trace.txt";
        {
          std::ofstream out(file);
          for (std::size_t i = 0; i < half; ++i)
            out << trace[i].key << ' ' << trace[i].size << '\n';
        }
        Child child({"replay", f.dir.path().string(), core::to_string(policy), file});
        REQUIRE(child.wait_for_lines(1));
        CHECK(child.lines()[0] == "replayed");
        child.signal(SIGKILL);
        const int status = child.wait();
        REQUIRE(WIFSIGNALED(status));
        CHECK(WTERMSIG(status) == SIGKILL);
      } else {
        Cache c = f.open();
        replay(c, std::vector<Request>(trace.begin(), trace.begin() + half));
      }
      Cache c = f.open();
      CHECK(store_problems(c).empty());
      CHECK(replay(c, std::vector<Request>(trace.begin() + half, trace.end())) == expected_misses);
      CHECK(c.keys() == expected_keys);
      CHECK(store_problems(c).empty());
    }
  }
}

TEST_CASE_TEMPLATE("8 threads of gets and sets during a long invalidate_pattern and cleanup", S,
                   RocksStore, MemoryStore) {
  Fixture<S> f;
  f.config.max_entries = 0;
  f.config.max_size_bytes = 0;
  Cache c = f.open();
  constexpr int kKeys = 20000;
  for (int i = 0; i < kKeys; ++i)
    REQUIRE(c.set(fmt::format("{}:{:05}", i % 3 == 0 ? "user" : "item", i), "v",
                  ttl(i % 2 == 0 ? 10 : 0)));
  f.clock.advance(60s);  // the even keys are expired now
  std::atomic<bool> stop{false};
  std::atomic<std::uint64_t> sets{0}, gets{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < 8; ++t)
    threads.emplace_back([&, t] {
      std::mt19937 rng(static_cast<unsigned>(t));
      while (!stop.load()) {
        const int k = static_cast<int>(rng() % 1000);
        if (rng() % 2 == 0) {
          if (c.set(fmt::format("new:{}:{}", t, k), "w")) ++sets;
        } else {
          (void)c.get(fmt::format("item:{:05}", k));
          ++gets;
        }
      }
    });
  const std::size_t invalidated = c.invalidate_pattern("user:*");
  const std::size_t cleaned = c.cleanup();
  const std::size_t invalidated_all = c.invalidate_pattern("*:0*");
  stop = true;
  for (auto& t : threads) t.join();
  CHECK(invalidated == 6667);          // every user key, expired or not
  CHECK(cleaned == kKeys / 2 + 3333);  // the expired even keys and the invalid odd user keys
  CHECK(invalidated_all > 0);
  CHECK(sets.load() > 0);
  CHECK(gets.load() > 0);
  const ScannedTotals scanned = scan_totals(c);
  const Stats s = c.stats();
  CHECK(s.total_entries == scanned.entries);
  CHECK(s.total_size_bytes == scanned.bytes);
  CHECK(store_problems(c).empty());
}

namespace {
// Puts the store format counter as a larder of that format wrote it.
void put_format(kv::Batch& batch, std::uint64_t format) {
  std::string v;
  engine::put_le64(v, format);
  batch.put(kv::Cf::counters, "format", v);
}
std::uint64_t stored_format(Cache& c) {
  std::string v;
  REQUIRE(backend_of(c)->primary().kv().get(kv::Cf::counters, "format", &v).ok());
  return engine::get_le64(v);
}
}  // namespace

TEST_CASE("a format-1 store is migrated on open: retired index families emptied, data kept") {
  Fixture<RocksStore> f;
  f.config.max_entries = 0;
  {
    Cache c = f.open();
    REQUIRE(c.set("a", "1", ttl(100, "x")));
    REQUIRE(c.set("b", "22"));
    REQUIRE(c.get("a"));
    c.flush();
    // What a format-1 larder left: its format number, index records, per-category counters.
    auto& e = backend_of(c)->primary();
    auto batch = e.kv().new_batch();
    put_format(*batch, 1);
    std::string one;
    engine::put_le64(one, 1);
    batch->put(kv::Cf::counters, "c/x", one);
    batch->put(kv::Cf::order, "order-record", "");
    batch->put(kv::Cf::expiry, "expiry-record", "");
    batch->put(kv::Cf::category, std::string("x\0a", 3), "");
    REQUIRE(e.kv().write(*batch).ok());
  }
  Cache c = f.open();
  CHECK(store_problems(c).empty());  // would name the retired families were they left
  CHECK(c.get("a") == "1");
  CHECK(c.get("b") == "22");
  CHECK(c.metadata("a")->access_count == 3);  // set, get, get: the access history survived
  CHECK(c.metadata("a")->category == "x");
  CHECK(c.stats().total_entries == 2);
  CHECK(c.stats().total_size_bytes == 3);
  CHECK(stored_format(c) == engine::kStoreFormat);
}

TEST_CASE("a format-2 store is relabelled with its first merge operand; invalidations read back") {
  Fixture<RocksStore> f;
  f.config.max_entries = 0;
  {
    Cache c = f.open();
    REQUIRE(c.set("a", "1", ttl(100, "x")));
    REQUIRE(c.set("b", "22"));
    auto& e = backend_of(c)->primary();
    auto batch = e.kv().new_batch();
    put_format(*batch, 2);
    REQUIRE(e.kv().write(*batch).ok());
  }
  {
    Cache c = f.open();
    CHECK(stored_format(c) == 2);  // nothing written yet that a format-2 larder cannot read
    CHECK(c.get("a") == "1");
    CHECK(c.invalidate("a"));
    CHECK(stored_format(c) == engine::kStoreFormat);  // in the batch of its first operand
    CHECK_FALSE(c.invalidate("a"));                   // already invalid: not counted twice
    CHECK(c.stats().invalidation_count == 1);
  }
  Cache c = f.open();
  CHECK_FALSE(c.get("a"));
  CHECK(c.metadata("a")->status == EntryStatus::invalid);
  CHECK(c.metadata("a")->category == "x");
  CHECK(c.get("b") == "22");
  REQUIRE(backend_of(c)->primary().compact().ok());  // folds the operand into the entry
  CHECK(c.metadata("a")->status == EntryStatus::invalid);
  CHECK(store_problems(c).empty());
}

TEST_CASE("open loads the index in the background: gets and totals are right meanwhile") {
  Fixture<RocksStore> f;
  f.config.max_entries = 0;
  f.config.max_size_bytes = 0;
  constexpr int kKeys = 30000;
  {
    Cache c = f.open();
    for (int i = 0; i < kKeys; ++i) REQUIRE(c.set(fmt::format("k{:06}", i), "vv"));
  }
  Cache c = f.open();
  // Whether or not the load has finished, the totals are exact and gets are served.
  CHECK(c.stats().total_entries == kKeys);
  CHECK(c.stats().total_size_bytes == 2 * kKeys);
  CHECK(c.get("k012345") == "vv");
  REQUIRE(c.set("new", "v"));  // needs no eviction: does not wait for the index
  CHECK(c.stats().total_entries == kKeys + 1);
  CHECK(c.keys_in_category("default").size() == kKeys + 1);
  CHECK(store_problems(c).empty());
}

// An engine over a RocksDB store in `dir` whose background index load stops after its first
// page until release() (Options::on_load_page), so that a test acts while the load is half done.
struct PausedLoad {
  std::mutex m;
  std::condition_variable cv;
  bool paused = false, released = false;
  stats::Counters counters{};
  const util::Logger log;
  std::unique_ptr<engine::Engine> e;

  PausedLoad(const std::filesystem::path& dir, engine::Options o) {
    o.on_load_page = [this] {
      std::unique_lock lock(m);
      if (paused) return;  // only the first page
      paused = true;
      cv.notify_all();
      cv.wait(lock, [this] { return released; });
    };
    std::unique_ptr<kv::Kv> store;
    REQUIRE(kv::open_rocks_kv(dir, {}, &store).ok());
    e = std::make_unique<engine::Engine>(std::move(store), o, nullptr, &counters, &log);
    REQUIRE(e->open().ok());
    std::unique_lock lock(m);
    cv.wait(lock, [this] { return paused; });
  }
  void release() {
    {
      std::lock_guard lock(m);
      released = true;
    }
    cv.notify_all();
  }
  ~PausedLoad() { release(); }
};

constexpr int kPagedKeys = 3 * 4096 + 100;  // the load's first page holds k000000..k004095

void fill_paged_store(const std::filesystem::path& dir, std::uint64_t max_entries) {
  std::unique_ptr<kv::Kv> store;
  REQUIRE(kv::open_rocks_kv(dir, {}, &store).ok());
  stats::Counters counters{};
  const util::Logger log;
  engine::Options o;
  o.max_entries = max_entries;
  engine::Engine e{std::move(store), o, nullptr, &counters, &log};
  REQUIRE(e.open().ok());
  for (int i = 0; i < kPagedKeys; ++i) {
    engine::SetOutcome outcome{};
    REQUIRE(e.set(fmt::format("k{:06}", i), "vv", 0, "c", {}, 1000 + i, &outcome).ok());
    REQUIRE(outcome == engine::SetOutcome::stored);
  }
}

TEST_CASE("sets and removes during the index load do not wait for it, and the index is exact") {
  TempDir tmp;
  fill_paged_store(tmp / "db", 0);
  PausedLoad p(tmp / "db", engine::Options{});
  engine::Engine& e = *p.e;
  // The load is stopped after its first page and holds no lock. The writes run on a thread;
  // this one waits until they are done or one of them waits for the load (which would be the
  // defect: then they are let go, and the checks below fail).
  std::vector<kv::Status> statuses;
  std::vector<engine::SetOutcome> outcomes;
  std::vector<bool> removed;
  std::uint64_t entries_meanwhile = 0, bytes_meanwhile = 0;
  std::atomic<bool> writes_done{false};
  std::thread writer([&] {
    const auto set = [&](const std::string& key, std::string_view value) {
      outcomes.emplace_back();
      statuses.push_back(e.set(key, value, 0, "c", {}, 50'000, &outcomes.back()));
    };
    const auto remove = [&](const std::string& key) {
      bool r = false;
      statuses.push_back(e.remove(key, &r));
      removed.push_back(r);
    };
    set("k000010", "vvv");  // loaded by the first page
    set("k010000", "vvv");  // not loaded yet: its record is loaded first, then overwritten
    set("new", "v");        // a new key, beyond every page
    remove("k000020");      // loaded
    remove("k011000");      // not loaded yet
    remove("k999999");      // never stored
    std::vector<engine::SetItem> items;
    for (const char* k : {"k004200", "k012000", "another"})
      items.push_back({k, "vvvv", 0, "c", nullptr, std::nullopt});
    outcomes.emplace_back();
    statuses.push_back(e.set_all(items, 50'001, &outcomes.back()));
    entries_meanwhile = e.entries();
    bytes_meanwhile = e.bytes();
    writes_done = true;
  });
  while (!writes_done && e.load_waiters() == 0) std::this_thread::yield();
  CHECK(writes_done);  // none waited for the load
  p.release();
  writer.join();
  CHECK(std::all_of(statuses.begin(), statuses.end(), [](const kv::Status& s) { return s.ok(); }));
  CHECK(std::all_of(outcomes.begin(), outcomes.end(),
                    [](engine::SetOutcome o) { return o == engine::SetOutcome::stored; }));
  CHECK(removed == std::vector<bool>{true, true, false});
  // The totals were exact meanwhile: 2 new keys, 2 removed; 1 + 1 + 1 - 2 - 2 + 2 + 2 + 4 bytes.
  CHECK(entries_meanwhile == kPagedKeys);
  CHECK(bytes_meanwhile == 2 * kPagedKeys + 7);

  std::vector<std::string> keys;
  REQUIRE(e.keys_in_category("c", &keys).ok());  // waits for the load's end
  CHECK(keys.size() == kPagedKeys);
  CHECK(std::find(keys.begin(), keys.end(), "k011000") == keys.end());
  CHECK(std::find(keys.begin(), keys.end(), "new") != keys.end());
  CHECK(e.entries() == kPagedKeys);
  CHECK(e.bytes() == 2 * kPagedKeys + 7);
  engine::AccessRecord a;
  REQUIRE(e.access_of("k010000", &a).ok());
  CHECK(a.access_count == 2);  // its set before the reopen, and the overwrite
  CHECK(a.size == 3);
  engine::VerifyReport report;
  REQUIRE(e.verify(&report).ok());
  CHECK(report.problems.empty());
  // The keys written during the load are the newest: down to 6 entries, they are what is left.
  std::size_t evicted = 0;
  REQUIRE(e.set_limits(6, std::nullopt, 60'000, &evicted).ok());
  CHECK(evicted == kPagedKeys - 6);
  keys.clear();
  REQUIRE(e.keys_in_category("c", &keys).ok());
  std::sort(keys.begin(), keys.end());
  CHECK(keys ==
        std::vector<std::string>{"another", "k000010", "k004200", "k010000", "k012000", "new"});
}

TEST_CASE("a set during the index load that could need an eviction waits for the load") {
  TempDir tmp;
  fill_paged_store(tmp / "db", kPagedKeys);
  engine::Options o;
  o.max_entries = kPagedKeys;  // full: a new key needs an eviction
  PausedLoad p(tmp / "db", o);
  engine::Engine& e = *p.e;
  std::atomic<bool> done{false};
  engine::SetOutcome outcome{};
  kv::Status status;
  std::thread setter([&] {
    status = e.set("new", "v", 0, "c", {}, 50'000, &outcome);
    done = true;
  });
  // The setter waits for the load (the LRU victim is only known once every page is loaded):
  // released once it is seen waiting.
  while (e.load_waiters() == 0 && !done) std::this_thread::yield();
  CHECK(!done);  // (a set that went ahead ends the loop instead of hanging it)
  p.release();
  setter.join();
  CHECK(status.ok());
  // Stored, by an eviction: a set that went ahead before the lists were built found no victim.
  CHECK(outcome == engine::SetOutcome::stored);
  CHECK(e.entries() == kPagedKeys);
  engine::AccessRecord a;
  CHECK(e.access_of("k000000", &a).not_found());  // the least recently used key
  CHECK(e.access_of("k004096", &a).ok());
}

TEST_CASE("ticks taken by reads during the index load are not handed out again after it") {
  TempDir tmp;
  fill_paged_store(tmp / "db", 0);
  PausedLoad p(tmp / "db", engine::Options{});
  engine::Engine& e = *p.e;
  // Reads take ticks (without the mutex) while the load is paused; the load used to end by
  // storing the largest tick it had seen, taking those back, and the next set reused one.
  for (int i = 0; i < 5; ++i) e.record_access("k000001", 70'000 + i);
  p.release();
  engine::AccessRecord read;
  REQUIRE(e.access_of("k000001", &read).ok());  // waits for the load; the hits included
  engine::SetOutcome outcome{};
  REQUIRE(e.set("after", "v", 0, "c", {}, 80'000, &outcome).ok());
  engine::AccessRecord set;
  REQUIRE(e.access_of("after", &set).ok());
  CHECK(read.access_count == 1 + 5);
  CHECK(set.last_tick > read.last_tick);
}

TEST_CASE("writers racing the index load page by page leave an index equal to the store") {
  TempDir tmp;
  fill_paged_store(tmp / "db", 0);
  // Two writers on disjoint keys (even and odd), each a sequence of sets, overwrites and
  // removes over the whole key range plus new keys; the load waits after each page until they
  // have made 300 more writes, so that their writes fall on both sides of the scan's position.
  std::atomic<int> writes{0};
  std::atomic<int> writers_done{0};
  engine::Options o;
  o.on_load_page = [&] {
    const int target = writes.load() + 300;
    while (writes.load() < target && writers_done.load() < 2) std::this_thread::yield();
  };
  std::unique_ptr<kv::Kv> store;
  REQUIRE(kv::open_rocks_kv(tmp / "db", {}, &store).ok());
  stats::Counters counters{};
  const util::Logger log;
  engine::Engine e{std::move(store), o, nullptr, &counters, &log};
  REQUIRE(e.open().ok());
  std::map<std::string, std::size_t> model[2];  // key -> value size, per writer
  for (int i = 0; i < kPagedKeys; ++i) model[i % 2][fmt::format("k{:06}", i)] = 2;
  std::vector<std::thread> writers;
  std::atomic<int> failures{0};
  for (int w = 0; w < 2; ++w)
    writers.emplace_back([&, w] {
      std::mt19937 rng(static_cast<unsigned>(w) + 7);
      for (int n = 0; n < 4000; ++n) {
        const int i = 2 * static_cast<int>(rng() % ((kPagedKeys + 2000) / 2)) + w;
        const std::string key = fmt::format("k{:06}", i);
        if (rng() % 3 == 0) {
          bool removed = false;
          if (!e.remove(key, &removed).ok() || removed != (model[w].erase(key) == 1)) ++failures;
        } else {
          const std::string value(1 + rng() % 9, 'x');
          engine::SetOutcome outcome{};
          if (!e.set(key, value, 0, "c", {}, 60'000 + n, &outcome).ok() ||
              outcome != engine::SetOutcome::stored)
            ++failures;
          model[w][key] = value.size();
        }
        writes.fetch_add(1);
      }
      writers_done.fetch_add(1);
    });
  for (auto& t : writers) t.join();
  CHECK(failures == 0);
  std::vector<std::string> keys;
  REQUIRE(e.keys_in_category("c", &keys).ok());  // after the load's end
  std::sort(keys.begin(), keys.end());
  std::vector<std::string> want;
  std::uint64_t bytes = 0;
  for (const auto& m : model)
    for (const auto& [key, size] : m) {
      want.push_back(key);
      bytes += size;
    }
  std::sort(want.begin(), want.end());
  CHECK(keys == want);
  CHECK(e.entries() == want.size());
  CHECK(e.bytes() == bytes);
  engine::VerifyReport report;
  REQUIRE(e.verify(&report).ok());
  CHECK(report.problems.empty());
  CHECK(report.entries == want.size());
}

TEST_CASE("a totals counter that disagrees with the access records is corrected on open") {
  Fixture<RocksStore> f;
  f.config.max_entries = 0;
  {
    Cache c = f.open();
    for (int i = 0; i < 50; ++i) REQUIRE(c.set("k" + std::to_string(i), "abc"));
    auto& e = backend_of(c)->primary();
    auto batch = e.kv().new_batch();
    std::string bogus;
    for (int i = 0; i < 3; ++i) engine::put_le64(bogus, 7);
    batch->put(kv::Cf::counters, "totals", bogus);
    REQUIRE(e.kv().write(*batch).ok());
  }
  Cache c = f.open();
  // keys_in_category waits for the index (and its recount); a set no longer does.
  CHECK(c.keys_in_category("default").size() == 50);
  REQUIRE(c.set("k0", "abc"));
  CHECK(c.stats().total_entries == 50);
  CHECK(c.stats().total_size_bytes == 150);
  CHECK(store_problems(c).empty());  // the stored counter was rewritten too
}

// S3-FIFO's rules on small caches, checked by hand (the numbers follow the rules in
// docs/ARCHITECTURE.md: with max_entries 10, S's share is 1, M's 9, G's capacity 9).
TEST_CASE_TEMPLATE("s3fifo: move to main, ghost re-admission, across a reopen", S, RocksStore,
                   MemoryStore) {
  Fixture<S> f;
  f.config.eviction_policy = EvictionPolicy::s3fifo;
  f.config.max_entries = 10;
  f.config.default_ttl = 0s;
  auto key = [](int i) { return "k" + std::to_string(i); };
  std::optional<Cache> c(f.open());
  for (int i = 0; i < 10; ++i) REQUIRE(c->set(key(i), "v"));  // all in S
  REQUIRE(c->get(key(0)));
  REQUIRE(c->get(key(0)));  // f = 2
  // S's head k0 was read twice: it moves to M; the next head k1 is evicted (to G).
  REQUIRE(c->set(key(10), "v"));
  CHECK(c->exists(key(0)));
  CHECK_FALSE(c->exists(key(1)));
  CHECK(c->stats().eviction_count == 1);
  if (S::persistent) {  // the queues, f and G survive a reopen
    c.reset();
    c.emplace(f.open());
  }
  // k1 is in G: set again it goes to M; S's head k2 is evicted.
  REQUIRE(c->set(key(1), "v"));
  CHECK_FALSE(c->exists(key(2)));
  // Nine more sets each evict S's head (k3 ... k10, then k11): k1, older than k11, stays in M.
  for (int i = 11; i < 20; ++i) REQUIRE(c->set(key(i), "v"));
  CHECK(c->exists(key(1)));
  CHECK(c->exists(key(0)));
  CHECK_FALSE(c->exists(key(10)));
  CHECK_FALSE(c->exists(key(11)));
  CHECK(c->exists(key(12)));
  CHECK(c->stats().total_entries == 10);
  CHECK(store_problems(*c).empty());
}

TEST_CASE_TEMPLATE("s3fifo: M reinserts an entry read since with f = min(f, 3) - 1", S, RocksStore,
                   MemoryStore) {
  for (const int reads : {1, 5}) {
    CAPTURE(reads);
    Fixture<S> f;
    f.config.eviction_policy = EvictionPolicy::s3fifo;
    f.config.max_entries = 0;
    f.config.max_size_bytes = 1000;  // S's share 100 bytes: a 100-byte value goes to M directly
    f.config.default_ttl = 0s;
    Cache c = f.open();
    const std::string value(100, 'v');
    auto key = [](int i) { return "m" + std::to_string(i); };
    for (int i = 0; i < 10; ++i) REQUIRE(c.set(key(i), value));
    for (int r = 0; r < reads; ++r) REQUIRE(c.get(key(0)));
    // m0 is M's head: reinserted at the tail (f 1 -> 0, or 5 -> min(5, 3) - 1 = 2), m1 goes.
    REQUIRE(c.set(key(10), value));
    CHECK(c.exists(key(0)));
    CHECK_FALSE(c.exists(key(1)));
    // Every 9 further sets bring m0 to the head again; it is evicted when its f is 0 there:
    // after m19 with one read, after m37 with five (f 2, then 1, then 0).
    const int last = reads == 1 ? 19 : 37;
    for (int i = 11; i < last; ++i) REQUIRE(c.set(key(i), value));
    CHECK(c.exists(key(0)));
    REQUIRE(c.set(key(last), value));
    CHECK_FALSE(c.exists(key(0)));
    CHECK(c.stats().total_size_bytes == 1000);
    CHECK(store_problems(c).empty());
  }
}

TEST_CASE("s3fifo: an overwrite keeps the queue and counts as a hit; remove adds no ghost") {
  Fixture<MemoryStore> f;
  f.config.eviction_policy = EvictionPolicy::s3fifo;
  f.config.max_entries = 10;
  f.config.default_ttl = 0s;
  Cache c = f.open();
  for (int i = 0; i < 10; ++i) REQUIRE(c.set("k" + std::to_string(i), "v"));
  REQUIRE(c.set("k0", "w"));  // f = 1
  REQUIRE(c.set("k0", "x"));  // f = 2: k0 moves to M at the next eviction from S
  REQUIRE(c.set("k10", "v"));
  CHECK(c.get("k0") == "x");
  CHECK_FALSE(c.exists("k1"));
  // A removed key is not remembered in G: set again, it goes to S (and is S's tail).
  REQUIRE(c.remove("k2"));
  REQUIRE(c.set("k2", "v"));
  REQUIRE(c.set("k11", "v"));  // evicts S's head k3
  CHECK_FALSE(c.exists("k3"));
  // S is k4 ... k10, k2, k11 now: seven sets evict k4 ... k10, the eighth k2 (in M it would stay).
  for (int i = 12; i < 19; ++i) REQUIRE(c.set("k" + std::to_string(i), "v"));
  CHECK(c.exists("k2"));
  REQUIRE(c.set("k19", "v"));
  CHECK_FALSE(c.exists("k2"));
  CHECK(c.exists("k0"));
  CHECK(store_problems(c).empty());
}

TEST_CASE("a store filled under lru and reopened under s3fifo keeps its recency order in M") {
  Fixture<RocksStore> f;
  f.config.max_entries = 10;
  f.config.default_ttl = 0s;
  {
    Cache c = f.open();
    for (int i = 0; i < 10; ++i) REQUIRE(c.set("k" + std::to_string(i), "v"));
    REQUIRE(c.get("k0"));  // most recent now: k1 is the least recent
  }
  f.config.eviction_policy = EvictionPolicy::s3fifo;
  Cache c = f.open();
  CHECK(store_problems(c).empty());
  // Every entry joined M (f = 0) in LRU order; S is empty, so the new entry's set evicts M's
  // head.
  REQUIRE(c.set("new", "v"));
  CHECK_FALSE(c.exists("k1"));
  CHECK(c.exists("k0"));
  CHECK(store_problems(c).empty());
}

// A memory-store engine whose flusher is asked and never runs (a busy housekeeper), holding
// 16 batches' worth of keys, each set once: one hit on each of them crosses the line past which
// a reader applies hits itself.
struct BackloggedEngine {
  struct Idle final : engine::AccessFlusher {
    int asked = 0;
    void flush_soon() override { ++asked; }
  } idle;
  stats::Counters counters{};
  const util::Logger log;
  engine::Engine e{kv::make_memory_kv(), engine::Options{}, nullptr, &counters, &log};
  std::vector<std::string> keys;
  static constexpr std::size_t kKeys = 16 * engine::kAccessFlushBatch;

  BackloggedEngine() {
    REQUIRE(e.open().ok());
    e.set_access_flusher(&idle);
    for (std::size_t i = 0; i < kKeys; ++i) {
      keys.push_back(fmt::format("k{:06}", i));
      engine::SetOutcome outcome{};
      REQUIRE(e.set(keys.back(), "v", 0, "", {}, 1, &outcome).ok());
      REQUIRE(outcome == engine::SetOutcome::stored);
    }
  }
};

TEST_CASE("a reader far ahead of its flusher applies one shard of the backlog, not all of it") {
  // Past 16 batches of hits the reader applies some itself. It used to apply the whole backlog,
  // one read paying for all.
  BackloggedEngine b;
  engine::Engine& e = b.e;
  for (const std::string& k : b.keys) e.record_access(k, 2);  // the last hit crosses the line
  CHECK(b.idle.asked >= 1);
  CHECK(e.has_pending_access());  // most of the backlog is still waiting for the flusher
  REQUIRE(e.flush_access().ok());
  CHECK_FALSE(e.has_pending_access());
  for (const std::string& k : {b.keys.front(), b.keys.back()}) {
    engine::AccessRecord a;
    REQUIRE(e.access_of(k, &a).ok());
    CHECK(a.access_count == 2);  // the set and the hit
  }
}

TEST_CASE("hits older than the list's newest nodes are placed with one walk per batch") {
  // A reader far ahead of an idle flusher applies its own shard's hits; the other shards' hits,
  // older than the newest of those, are applied later in one batch. Each of them used to walk
  // back from the list's tail past the nodes the reader had moved there: about (backlog / 16)
  // steps per hit, 8.1 million in this test (a reader of 100k keys stalled for seconds).
  BackloggedEngine b;
  engine::Engine& e = b.e;
  const std::uint64_t before = e.list_steps();
  for (const std::string& k : b.keys) e.record_access(k, 2);  // the last one applies a shard
  REQUIRE(e.flush_access().ok());                             // then the rest, in one batch
  CHECK(e.list_steps() - before <= 2 * BackloggedEngine::kKeys);
  engine::VerifyReport report;  // walks the list: every node once, in tick order
  REQUIRE(e.verify(&report).ok());
  CHECK(report.problems.empty());
}

TEST_CASE("access_of never counts a pending hit twice while hits are applied concurrently") {
  // access_of read the key's pending hits, released their lock, then read the index: a flush in
  // between moved those hits into the index and they were counted twice (a reopened store
  // showed access_count 4 after 3 accesses, under the sanitizer's timing).
  stats::Counters counters{};
  const util::Logger log;
  engine::Engine e{kv::make_memory_kv(), engine::Options{}, nullptr, &counters, &log};
  REQUIRE(e.open().ok());
  engine::SetOutcome outcome{};
  REQUIRE(e.set("a", "v", 0, "", {}, 1, &outcome).ok());
  constexpr int kHits = 200000;
  std::atomic<int> started{0};
  std::atomic<bool> done{false};
  std::thread reader([&] {
    for (int i = 0; i < kHits; ++i) {
      started.fetch_add(1);
      e.record_access("a", 1000 + i);
    }
    done = true;
  });
  std::thread flusher([&] {
    while (!done) e.apply_access();
  });
  int over = 0;
  std::uint64_t highest = 0;
  while (!done) {
    engine::AccessRecord a;
    if (!e.access_of("a", &a).ok()) ++over;
    const auto limit = static_cast<std::uint64_t>(started.load()) + 1;  // the set counts once
    if (a.access_count > limit) ++over;
    highest = std::max(highest, a.access_count);
  }
  reader.join();
  flusher.join();
  CHECK(over == 0);
  engine::AccessRecord a;
  REQUIRE(e.access_of("a", &a).ok());
  CHECK(a.access_count == kHits + 1);
  CHECK(highest <= kHits + 1);
}

TEST_CASE(
    "a store written before millisecond ttls (format 3, seconds) reads on and is relabelled") {
  // Format-1 entries kept their ttl in whole seconds, the limits record its default ttl in
  // seconds (24 bytes). Such a store is made here from today's records, then reopened.
  Fixture<RocksStore> f;
  f.config.default_ttl = 0s;
  std::int64_t created_ns = 0;
  {
    Cache c = f.open();
    REQUIRE(c.set("old", "value", ttl(100, "cat")));
    REQUIRE(c.set("forever", "value", ttl(0)));
    auto& e = backend_of(c)->primary();
    engine::Found found;
    REQUIRE(e.read("old", backend_of(c)->now_ns(), engine::Want::value, &found).ok());
    created_ns = found.header.created_ns;
    auto batch = e.kv().new_batch();
    for (const char* key : {"old", "forever"}) {
      engine::EntryHeader h;
      h.created_ns = created_ns;
      h.ttl_ms = std::string_view(key) == "old" ? 100 : 0;  // seconds in format 1
      h.category = std::string_view(key) == "old" ? "cat" : "default";
      std::string record = engine::encode_entry(h, "value");
      record[0] = static_cast<char>(engine::kEntryFormatSeconds);
      batch->put(kv::Cf::entries, key, record);
    }
    batch->put(kv::Cf::counters, "format", std::string("\x03\0\0\0\0\0\0\0", 8));
    std::string limits;
    for (std::uint64_t v : {std::uint64_t{0}, std::uint64_t{0}, std::uint64_t{7200}})
      engine::put_le64(limits, v);  // max_entries, max_bytes, default ttl 2 h in seconds
    batch->put(kv::Cf::counters, "limits", limits);
    REQUIRE(e.kv().write(*batch).ok());
    engine::Options settings;
    bool stored = false;
    REQUIRE(engine::Engine::read_settings(e.kv(), &settings, &stored).ok());
    CHECK(stored);
    CHECK(settings.default_ttl_ms == 7200 * 1000);  // the old record's seconds
  }
  f.config.default_ttl = 30min;
  Cache c = f.open();
  CHECK(store_problems(c).empty());
  auto info = c.metadata("old");
  REQUIRE(info);
  REQUIRE(info->expires_at);
  CHECK(*info->expires_at - info->created_at == 100s);  // read as seconds
  CHECK(info->category == "cat");
  CHECK(c.get("old") == "value");
  CHECK_FALSE(c.metadata("forever")->expires_at);
  auto& e = backend_of(c)->primary();
  // Opening writes nothing to the format yet; the first write relabels the store.
  std::string format;
  REQUIRE(e.kv().get(kv::Cf::counters, "format", &format).ok());
  REQUIRE(c.set("new", "v", ttl(5)));
  REQUIRE(e.kv().get(kv::Cf::counters, "format", &format).ok());
  CHECK(engine::get_le64(format) == engine::kStoreFormat);
  CHECK(engine::kStoreFormat == 4);
  // The limits record now carries milliseconds (32 bytes), and a settings reader takes either.
  engine::Options settings;
  bool found = false;
  REQUIRE(engine::Engine::read_settings(e.kv(), &settings, &found).ok());
  CHECK(found);
  CHECK(settings.default_ttl_ms == 30 * 60 * 1000);
  f.clock.advance(100s);
  CHECK_FALSE(c.get("old"));  // stale at 100 s
  CHECK(c.get("forever") == "value");
  CHECK(store_problems(c).empty());
}
