// Path attacks: symlinks, FIFOs and devices planted in a cache directory are never followed,
// read without bound or opened blocking; a root below a directory another user can write is
// refused. Mirrors src/util/fs.cpp and the path rules in docs/ARCHITECTURE.md.
#include <doctest/doctest.h>

#include <sys/stat.h>
#include <unistd.h>

#include <fstream>
#include <future>

#include "shared_support.hpp"
#include "stats/stats_file.hpp"
#include "support.hpp"
#include "util/fs.hpp"

using namespace larder;
using namespace larder::test;
using namespace std::chrono_literals;

namespace {

std::string slurp(const std::filesystem::path& p) {
  std::ifstream in(p, std::ios::binary);
  return std::string((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
}

// Runs `f` on another thread; false if it did not return within 10 s (a hang).
template <class F>
bool returns_soon(F&& f) {
  auto done = std::async(std::launch::async, std::forward<F>(f));
  return done.wait_for(10s) == std::future_status::ready;
}

}  // namespace

TEST_CASE("paths: a symlinked owner lock is not opened; the victim file is untouched") {
  TempDir tmp;
  const auto root = tmp / "cache";
  std::filesystem::create_directories(root);
  ::chmod(root.c_str(), 0700);
  { std::ofstream(tmp / "victim") << "precious"; }
  std::filesystem::create_symlink(tmp / "victim", root / ".larder.lock");
  Cache c = Cache::open(shared_config(root));
  CHECK(c.degraded());
  CHECK(c.last_error().find("symlink") != std::string::npos);
  CHECK(c.set("k", "v"));  // a memory cache
  CHECK(slurp(tmp / "victim") == "precious");
}

TEST_CASE("paths: a symlinked temporary statistics file is not written through") {
  TempDir tmp;
  { std::ofstream(tmp / "victim") << "precious"; }
  const auto target = tmp / "stats.json";
  // The name atomic_write_file will use next is unknown to an attacker only by chance: plant
  // every plausible one for this process.
  for (int i = 0; i < 64; ++i)
    std::filesystem::create_symlink(
        tmp / "victim",
        target.string() + ".tmp." + std::to_string(::getpid()) + "." + std::to_string(i));
  CHECK(util::atomic_write_file(target, "{}").ok());
  CHECK(slurp(tmp / "victim") == "precious");
  CHECK(slurp(target) == "{}");
}

TEST_CASE("paths: a symlinked .stats directory is not used and its files are not deleted") {
  TempDir tmp;
  const auto root = tmp / "cache";
  const auto proc = root / "shared";
  std::filesystem::create_directories(tmp / "elsewhere");
  { std::ofstream(tmp / "elsewhere" / "important.cnt") << "keep me"; }
  std::filesystem::create_directories(root);
  ::chmod(root.c_str(), 0700);
  std::filesystem::create_symlink(tmp / "elsewhere", root / ".stats");
  {
    Cache c = Cache::open(shared_config(root));
    CHECK(c.set("k", "v"));
    c.flush();
  }
  CHECK(std::filesystem::exists(tmp / "elsewhere" / "important.cnt"));
  CHECK(slurp(tmp / "elsewhere" / "important.cnt") == "keep me");
}

TEST_CASE(
    "paths: a statistics file that is /dev/zero, a FIFO or huge is neither hung on nor "
    "read whole") {
  TempDir tmp;
  const auto file = tmp / stats::kStatsFileName;
  stats::Snapshot snap;
  std::string error;
  std::filesystem::create_symlink("/dev/zero", file);
  CHECK(returns_soon(
      [&] { return stats::load_stats(file, std::chrono::system_clock::now(), &snap, &error); }));
  CHECK(error.find("symlink") != std::string::npos);
  std::filesystem::remove(file);
  REQUIRE(::mkfifo(file.c_str(), 0600) == 0);
  error.clear();
  CHECK(returns_soon(
      [&] { return stats::load_stats(file, std::chrono::system_clock::now(), &snap, &error); }));
  CHECK(error.find("not a regular file") != std::string::npos);
  std::filesystem::remove(file);
  {
    std::ofstream out(file, std::ios::binary);
    out.seekp(static_cast<std::streamoff>(stats::kMaxStatsFileBytes) + 1);
    out.put('x');
  }
  error.clear();
  CHECK(stats::load_stats(file, std::chrono::system_clock::now(), &snap, &error) ==
        stats::LoadResult::corrupt);
  CHECK(error.find("more than") != std::string::npos);
}

TEST_CASE("paths: a root below a directory another user can write is refused, naming it") {
  TempDir tmp;
  const auto shared_dir = tmp / "open";
  std::filesystem::create_directories(shared_dir);
  ::chmod(shared_dir.c_str(), 0777);  // anyone may rename what is inside
  Config cfg;
  cfg.cache_root = shared_dir / "mine" / "cache";
  cfg.strategy = Strategy::process_isolated;
  CHECK_THROWS_WITH_AS(Cache::open(cfg), doctest::Contains(shared_dir.string().c_str()),
                       ConfigError);
  cfg.strategy = Strategy::shared;
  CHECK_THROWS_AS(Cache::open(cfg), ConfigError);
  // Sticky (like /tmp) with the next component ours: accepted.
  ::chmod(shared_dir.c_str(), 01777);
  std::filesystem::create_directories(shared_dir / "mine");
  ::chmod((shared_dir / "mine").c_str(), 0700);
  Cache c = Cache::open(cfg);
  CHECK_FALSE(c.degraded());
  // Through a symlink that lives in the open directory: refused too.
  ::chmod(shared_dir.c_str(), 0777);
  std::filesystem::create_directories(tmp / "real");
  ::chmod((tmp / "real").c_str(), 0700);
  std::filesystem::create_symlink(tmp / "real", shared_dir / "link");
  cfg.cache_root = shared_dir / "link" / "cache";
  CHECK_THROWS_AS(Cache::open(cfg), ConfigError);
}

TEST_CASE("paths: a root below a directory owned by another user is refused") {
  if (::geteuid() != 0) {
    MESSAGE("skipped: needs root to make a directory owned by uid 65534");
    return;
  }
  TempDir tmp;
  const auto theirs = tmp / "theirs";
  std::filesystem::create_directories(theirs / "cache");
  REQUIRE(::chown(theirs.c_str(), 65534, 65534) == 0);
  ::chmod(theirs.c_str(), 0755);
  ::chmod((theirs / "cache").c_str(), 0700);
  Config cfg;
  cfg.cache_root = theirs / "cache";
  CHECK_THROWS_WITH_AS(Cache::open(cfg), doctest::Contains("uid 65534"), ConfigError);
}

namespace {

// Opens a cache, then renames its directory away and puts a symlink to a decoy in its place (a
// decoy that holds a directory of the same name, so that following the path would work). The
// cache must go on in the directory it opened: nothing reaches the decoy.
void renamed_under_a_live_cache(const Config& base) {
  TempDir tmp;
  const auto root = tmp / "cache";
  Config cfg = base;
  cfg.cache_root = root;
  Cache c = Cache::open(cfg);
  REQUIRE_FALSE(c.degraded());
  REQUIRE(c.set("before", "1"));
  const auto dir = c.directory();
  const auto below = std::filesystem::relative(dir, root);  // "." or proc_<pid>
  std::filesystem::rename(root, tmp / "moved");
  std::filesystem::create_directories(tmp / "decoy" / below);
  std::filesystem::create_symlink(tmp / "decoy", root);
  const std::string value(4096, 'x');
  for (int i = 0; i < 3000; ++i) REQUIRE(c.set("after" + std::to_string(i), value));
  c.flush();  // statistics file, access data
  CHECK(c.stats().set_count >= 3001);
  std::vector<std::string> planted;
  for (const auto& e : std::filesystem::recursive_directory_iterator(tmp / "decoy"))
    if (!e.is_directory()) planted.push_back(e.path().string());
  INFO("files that reached the decoy: " << planted.size());
  CHECK(planted.empty());
  CHECK(std::filesystem::exists(tmp / "moved" / below / ".cache_stats.json"));
  CHECK(c.get("before") == "1");
  CHECK(c.get("after2999") == value);
}

}  // namespace

TEST_CASE(
    "paths: a process_isolated directory renamed and replaced under a live cache is not "
    "followed") {
  Config cfg;
  cfg.strategy = Strategy::process_isolated;
  cfg.cleanup_interval = std::chrono::seconds(0);
  renamed_under_a_live_cache(cfg);
}

TEST_CASE("paths: a shared root renamed and replaced under its live owner is not followed") {
  renamed_under_a_live_cache(shared_config(""));
}
