// Fault handling through the public Cache: failing stores, corrupt and unusable directories,
// unsafe roots. Nothing here may throw out of a read. (The Backend's breaker on its own:
// core/test_backend.cpp; configuration checks: api/test_config.cpp.)
#include <doctest/doctest.h>

#include <sys/stat.h>

#include <fstream>

#include "api/config.hpp"
#include "core/backend.hpp"
#include "larder/object.hpp"
#include "support.hpp"
#include "util/fs.hpp"

#include <cereal/types/vector.hpp>

using namespace larder;
using namespace larder::test;
using namespace std::chrono_literals;

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
