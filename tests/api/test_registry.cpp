// Process-wide entry points: global_cache(), create_default_cache(), create_memory_cache(), the
// per-user default root and LARDER_LOG.
#include <doctest/doctest.h>

#include <fcntl.h>
#include <unistd.h>

#include <cstdio>
#include <fstream>

#include "api/config.hpp"
#include "core/config.hpp"
#include "core/log.hpp"
#include "support.hpp"
#include "util/log.hpp"

using namespace larder;
using namespace larder::test;

namespace {

// Sets environment variables for one scope and restores the previous values.
class ScopedEnv {
 public:
  ScopedEnv(const char* name, const char* value) : name_(name) {
    if (const char* old = std::getenv(name)) old_ = old;
    if (value != nullptr)
      ::setenv(name, value, 1);
    else
      ::unsetenv(name);
  }
  ~ScopedEnv() {
    if (old_)
      ::setenv(name_, old_->c_str(), 1);
    else
      ::unsetenv(name_);
  }
  ScopedEnv(const ScopedEnv&) = delete;
  ScopedEnv& operator=(const ScopedEnv&) = delete;

 private:
  const char* name_;
  std::optional<std::string> old_;
};

}  // namespace

TEST_CASE("the default root is per user") {
  {
    ScopedEnv xdg("XDG_CACHE_HOME", "/home/someone/.xdg-cache");
    CHECK(api::default_root() == "/home/someone/.xdg-cache/larder");
  }
  {
    ScopedEnv xdg("XDG_CACHE_HOME", nullptr);
    ScopedEnv home("HOME", "/home/someone");
    CHECK(api::default_root() == "/home/someone/.cache/larder");
  }
  {
    ScopedEnv xdg("XDG_CACHE_HOME", "relative/ignored");
    ScopedEnv home("HOME", "/home/someone");
    CHECK(api::default_root() == "/home/someone/.cache/larder");
  }
}

TEST_CASE("create_default_cache and create_memory_cache") {
  TempDir tmp;
  ScopedEnv xdg("XDG_CACHE_HOME", tmp.path().c_str());
  {
    Cache c = create_default_cache();
    CHECK(c.directory() == tmp / "larder" / ("proc_" + std::to_string(::getpid())));
    CHECK(c.set("k", "v"));
    CHECK(c.get("k") == "v");
  }
  Cache m = create_memory_cache(100, 2, std::chrono::seconds(0));
  CHECK(m.directory().empty());
  CHECK(m.set("a", "1"));
  CHECK(m.set("b", "2"));
  CHECK(m.set("c", "3"));
  CHECK(m.keys().size() == 2);                       // max_entries 2
  CHECK_FALSE(m.set("big", std::string(101, 'x')));  // max_size_bytes 100
  CHECK_FALSE(m.metadata("a").has_value());
  CHECK_FALSE(m.metadata("c")->expires_at);  // default ttl 0: never expires
}

TEST_CASE("global_cache() and another handle on its directory share one store") {
  // The global cache lives until exit; its directory must outlive it, so it is removed by an
  // exit handler registered before the cache's own (handlers run in reverse order).
  static std::filesystem::path root;
  char tmpl[] = "/tmp/larder-global-XXXXXX";
  REQUIRE(::mkdtemp(tmpl) != nullptr);
  root = tmpl;
  std::atexit([] {
    std::error_code ec;
    std::filesystem::remove_all(root, ec);
  });
  ScopedEnv r("LARDER_CACHE_ROOT", root.c_str());
  ScopedEnv s("LARDER_STRATEGY", "shared");
  Cache& g = global_cache();
  CHECK(&g == &global_cache());
  CHECK(g.directory() == root);
  Config cfg;
  cfg.cache_root = root;
  cfg.strategy = Strategy::shared;
  Cache other = Cache::open(cfg);
  CHECK_FALSE(other.degraded());
  REQUIRE(g.set("shared-key", "from global"));
  CHECK(other.get("shared-key") == "from global");
}

TEST_CASE("LARDER_LOG sends log lines to stderr when no callback is set") {
  TempDir tmp;
  const auto capture = tmp / "stderr.txt";
  const int saved = ::dup(STDERR_FILENO);
  const int fd = ::open(capture.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0600);
  REQUIRE(fd >= 0);
  {
    ScopedEnv level("LARDER_LOG", "warn");
    std::fflush(stderr);
    ::dup2(fd, STDERR_FILENO);
    util::Logger logger = core::make_logger({});
    logger.log(util::Level::info, "quiet line");
    logger.log(util::Level::warn, "loud line");
    std::fflush(stderr);
    ::dup2(saved, STDERR_FILENO);
  }
  ::close(fd);
  ::close(saved);
  std::string text;
  std::ifstream in(capture);
  std::getline(in, text);
  CHECK(text == "larder [warn] loud line");
  {
    ScopedEnv level("LARDER_LOG", nullptr);
    util::Logger silent = core::make_logger({});
    silent.log(util::Level::error, "goes nowhere");  // no sink: must not crash
  }
}
