// Config validation and Config::from_env (src/api/config.cpp): every invalid field and variable
// is refused by name, with ConfigError.
#include <doctest/doctest.h>

#include <unistd.h>

#include <cmath>
#include <cstdlib>
#include <limits>
#include <vector>

#include "api/config.hpp"
#include "larder/larder.hpp"

using namespace larder;
using namespace std::chrono_literals;

TEST_CASE("invalid configuration names the field") {
  Config cfg;
  cfg.strategy = Strategy::disabled;
  cfg.stale_factor = 0.5;
  CHECK_THROWS_WITH_AS(Cache::open(cfg), doctest::Contains("stale_factor"), ConfigError);
  cfg.stale_factor = 2;
  cfg.default_ttl = -1s;
  CHECK_THROWS_WITH_AS(Cache::open(cfg), doctest::Contains("default_ttl"), ConfigError);
  cfg.default_ttl = 1s;
  cfg.cleanup_interval = -1s;
  CHECK_THROWS_WITH_AS(Cache::open(cfg), doctest::Contains("cleanup_interval"), ConfigError);
  cfg.cleanup_interval = 0s;
  cfg.eviction_policy = static_cast<EvictionPolicy>(9);
  CHECK_THROWS_WITH_AS(Cache::open(cfg), doctest::Contains("eviction_policy"), ConfigError);
  CHECK_THROWS_AS(Cache::open(cfg), std::invalid_argument);  // ConfigError is one
}

namespace {
struct EnvGuard {
  EnvGuard(std::initializer_list<std::pair<const char*, const char*>> vars) {
    for (auto [k, v] : vars) {
      names.push_back(k);
      ::setenv(k, v, 1);
    }
  }
  ~EnvGuard() {
    for (auto* k : names) ::unsetenv(k);
  }
  std::vector<const char*> names;
};
}  // namespace

TEST_CASE("Config::from_env reads every variable and rejects bad values by name") {
  {
    EnvGuard env({{"LARDER_CACHE_ROOT", "/tmp/x"},
                  {"LARDER_STRATEGY", "shared"},
                  {"LARDER_MAX_SIZE_MB", "7"},
                  {"LARDER_MAX_ENTRIES", "12"},
                  {"LARDER_DEFAULT_TTL", "30"},
                  {"LARDER_EVICTION_POLICY", "lfu"}});
    const Config c = Config::from_env();
    CHECK(c.cache_root == "/tmp/x");
    CHECK(c.strategy == Strategy::shared);
    CHECK(c.max_size_bytes == 7 * kMiB);
    CHECK(c.max_entries == 12);
    CHECK(c.default_ttl == 30s);
    CHECK(c.eviction_policy == EvictionPolicy::lfu);
  }
  {
    EnvGuard env{{"LARDER_DISABLED", "1"}, {"LARDER_STRATEGY", "shared"}};
    CHECK(Config::from_env().strategy == Strategy::disabled);
  }
  {
    EnvGuard env{{"LARDER_STRATEGY", "bogus"}};
    CHECK_THROWS_WITH_AS(Config::from_env(), doctest::Contains("LARDER_STRATEGY"), ConfigError);
  }
  {
    EnvGuard env{{"LARDER_MAX_ENTRIES", "12abc"}};
    CHECK_THROWS_WITH_AS(Config::from_env(), doctest::Contains("LARDER_MAX_ENTRIES"), ConfigError);
  }
  {
    EnvGuard env{{"LARDER_EVICTION_POLICY", "s3fifo"}};
    CHECK(Config::from_env().eviction_policy == EvictionPolicy::s3fifo);
  }
  {
    EnvGuard env{{"LARDER_EVICTION_POLICY", "random"}};
    CHECK_THROWS_WITH_AS(Config::from_env(), doctest::Contains("LARDER_EVICTION_POLICY"),
                         ConfigError);
  }
  {
    EnvGuard env{{"LARDER_DEFAULT_TTL", "-5"}};
    CHECK_THROWS_WITH_AS(Config::from_env(), doctest::Contains("LARDER_DEFAULT_TTL"), ConfigError);
  }
  // A decimal number of seconds, exact to the millisecond.
  for (const auto& [text, ms] : std::vector<std::pair<const char*, std::int64_t>>{
           {"0.25", 250}, {"1.5", 1500}, {"0.0001", 1}, {"0", 0}, {"1e3", 1'000'000}}) {
    EnvGuard env{{"LARDER_DEFAULT_TTL", text}};
    CHECK(Config::from_env().default_ttl == std::chrono::milliseconds(ms));
  }
  for (const char* bad : {"nan", "inf", "-0.5", "1.5s", "1e13", "0x10"}) {
    EnvGuard env{{"LARDER_DEFAULT_TTL", bad}};
    CHECK_THROWS_WITH_AS(Config::from_env(), doctest::Contains("LARDER_DEFAULT_TTL"), ConfigError);
  }
}

TEST_CASE("ttl_from_seconds: milliseconds, never 0 for a positive value, nothing for junk") {
  CHECK(ttl_from_seconds(0.5) == 500ms);
  CHECK(ttl_from_seconds(1.5) == 1500ms);
  CHECK(ttl_from_seconds(0.0004) == 1ms);  // below 1 ms: 1 ms, not "never expires"
  CHECK(ttl_from_seconds(1e-300) == 1ms);
  CHECK(ttl_from_seconds(0.0) == 0ms);
  CHECK(ttl_from_seconds(86400) == 24h);
  CHECK(ttl_from_seconds(1e12) == std::chrono::milliseconds(1'000'000'000'000'000));
  CHECK_FALSE(ttl_from_seconds(std::nan("")));
  CHECK_FALSE(ttl_from_seconds(std::numeric_limits<double>::infinity()));
  CHECK_FALSE(ttl_from_seconds(-0.001));
  CHECK_FALSE(ttl_from_seconds(1.1e12));
}

TEST_CASE("resolve: a relative root is made absolute; process_isolated gets proc_<pid>") {
  Config cfg;
  cfg.cache_root = "relative/cache/";
  cfg.strategy = Strategy::process_isolated;
  const core::Resolved r = api::resolve(cfg);
  CHECK(r.root.is_absolute());
  CHECK(r.root.filename() == "cache");
  CHECK(r.dir == r.root / ("proc_" + std::to_string(::getpid())));
  cfg.strategy = Strategy::shared;
  CHECK(api::resolve(cfg).dir == r.root);
  cfg.strategy = Strategy::disabled;
  CHECK(api::resolve(cfg).dir.empty());
  cfg.lock_timeout = -1ms;
  CHECK_THROWS_WITH_AS(api::resolve(cfg), doctest::Contains("lock_timeout"), ConfigError);
}
