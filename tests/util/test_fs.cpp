// util/fs (src/util/fs.hpp): atomic replacement, bounded reads of the cache's own files that never
// follow a symlink or open a FIFO, private directories, the ownership rule, pinned directories,
// timestamps and moving files aside.
#include <doctest/doctest.h>

#include <sys/stat.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <fstream>

#include "support.hpp"
#include "util/fs.hpp"

using namespace larder;
using namespace larder::test;
namespace fs = std::filesystem;

namespace {
std::string slurp(const fs::path& p) {
  std::ifstream in(p, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
}
unsigned mode_of(const fs::path& p) {
  struct stat st {};
  REQUIRE(::stat(p.c_str(), &st) == 0);
  return st.st_mode & 07777;
}
}  // namespace

TEST_CASE("fs: atomic_write_file replaces the whole file, mode 0600, and leaves no temporary") {
  TempDir tmp;
  const auto path = tmp / "f.json";
  REQUIRE(util::atomic_write_file(path, "first, and longer").ok());
  REQUIRE(util::atomic_write_file(path, "second").ok());
  CHECK(slurp(path) == "second");
  CHECK(mode_of(path) == 0600);
  int files = 0;
  for ([[maybe_unused]] const auto& e : fs::directory_iterator(tmp.path())) ++files;
  CHECK(files == 1);
  const util::Status no_dir = util::atomic_write_file(tmp / "missing" / "f", "x");
  CHECK_FALSE(no_dir.ok());
  CHECK(no_dir.error().find("missing") != std::string::npos);
}

TEST_CASE("fs: read_cache_file reads at most max_bytes, never through a symlink or a FIFO") {
  TempDir tmp;
  { std::ofstream(tmp / "small") << "0123456789"; }
  auto ok = util::read_cache_file(tmp / "small", 10);
  REQUIRE(ok.ok());
  CHECK(*ok == "0123456789");
  auto big = util::read_cache_file(tmp / "small", 9);
  CHECK_FALSE(big.ok());
  CHECK(big.error().find("more than the 9") != std::string::npos);

  fs::create_symlink(tmp / "small", tmp / "link");
  auto link = util::read_cache_file(tmp / "link", 100);
  CHECK_FALSE(link.ok());
  CHECK(link.error().find("symlink") != std::string::npos);

  REQUIRE(::mkfifo((tmp / "fifo").c_str(), 0600) == 0);
  auto fifo = util::read_cache_file(tmp / "fifo", 100);  // would block forever if opened plainly
  CHECK_FALSE(fifo.ok());
  CHECK(fifo.error().find("not a regular file") != std::string::npos);
  CHECK_FALSE(util::read_cache_file("/dev/zero", 100).ok());

  auto plain = util::read_file(tmp / "small");
  REQUIRE(plain.ok());
  CHECK(*plain == "0123456789");
  CHECK_FALSE(util::read_file(tmp / "absent").ok());

  auto fd = util::open_cache_file(tmp / "created", util::Create::if_missing);
  REQUIRE(fd.ok());
  ::close(*fd);
  CHECK(mode_of(tmp / "created") == 0600);
  CHECK_FALSE(util::open_cache_file(tmp / "absent", util::Create::no).ok());
  CHECK_FALSE(util::open_cache_file(tmp / "link", util::Create::no).ok());
}

TEST_CASE("fs: private directories are 0700; a symlink inside a cache is refused") {
  TempDir tmp;
  const auto deep = tmp / "a" / "b" / "c";
  REQUIRE(util::create_private_directories(deep).ok());
  CHECK(mode_of(deep) == 0700);
  CHECK(mode_of(tmp / "a") == 0700);
  REQUIRE(util::create_private_directories(deep).ok());  // exists: fine

  fs::create_directory(tmp / "elsewhere");
  fs::create_directory_symlink(tmp / "elsewhere", tmp / "via");
  CHECK(util::create_private_directories(tmp / "via").ok());  // allowed unless refused
  const util::Status refused =
      util::create_private_directories(tmp / "via", util::Symlinks::refuse);
  CHECK_FALSE(refused.ok());
  CHECK(refused.error().find("symlink") != std::string::npos);

  { std::ofstream(tmp / "file") << "x"; }
  CHECK_FALSE(util::create_private_directories(tmp / "file").ok());
}

TEST_CASE("fs: check_private_directory refuses a directory others can write, naming it") {
  TempDir tmp;
  const auto root = tmp / "cache";
  REQUIRE(util::create_private_directories(root).ok());
  CHECK(util::check_private_directory(root).ok());
  CHECK(util::check_private_directory(tmp / "not-yet").ok());  // does not exist yet

  fs::permissions(root, fs::perms::group_write, fs::perm_options::add);
  const util::Status group = util::check_private_directory(root);
  CHECK_FALSE(group.ok());
  CHECK(group.error().find("writable by group or others") != std::string::npos);
  fs::permissions(root, fs::perms::group_write, fs::perm_options::remove);

  // An ancestor anyone can write (not sticky) lets another user replace the cache below it.
  const auto open_parent = tmp / "open";
  fs::create_directory(open_parent);
  fs::permissions(open_parent, fs::perms::all);
  ::chmod(open_parent.c_str(), 0777);
  const util::Status ancestor = util::check_private_directory(open_parent / "cache");
  CHECK_FALSE(ancestor.ok());
  CHECK(ancestor.error().find(open_parent.string()) != std::string::npos);
  // Sticky (as /tmp) with the next component ours: safe.
  ::chmod(open_parent.c_str(), 01777);
  REQUIRE(util::create_private_directories(open_parent / "cache").ok());
  CHECK(util::check_private_directory(open_parent / "cache").ok());
}

TEST_CASE("fs: a pinned directory is still reached after its name is renamed and replaced") {
  TempDir tmp;
  const auto dir = tmp / "d";
  fs::create_directory(dir);
  auto pin = util::PinnedDir::open(dir);
  REQUIRE(pin.ok());
  const std::shared_ptr<const util::PinnedDir> p = *pin;
  CHECK(p->dir() == dir);
  fs::rename(dir, tmp / "moved");
  fs::create_directory(dir);  // an impostor under the old name
  { std::ofstream(p->path() / "written") << "x"; }
  CHECK(fs::exists(tmp / "moved" / "written"));
  CHECK_FALSE(fs::exists(dir / "written"));

  fs::create_directory_symlink(tmp / "moved", tmp / "link");
  CHECK_FALSE(util::PinnedDir::open(tmp / "link").ok());  // never through a symlink
  CHECK_FALSE(util::PinnedDir::open(tmp / "absent").ok());
}

TEST_CASE("fs: timestamps, and move_aside keeps every earlier file") {
  using namespace std::chrono;
  const system_clock::time_point t = system_clock::time_point(seconds(1795242000)) + 123ms;
  CHECK(util::compact_utc_timestamp(t) == "20261121T062000Z");
  CHECK(util::iso8601_utc(t) == "2026-11-21T06:20:00.123Z");
  CHECK(util::iso8601_utc(system_clock::time_point(-1ms)) == "1969-12-31T23:59:59.999Z");

  TempDir tmp;
  const auto path = tmp / "stats.json";
  { std::ofstream(path) << "one"; }
  const auto first = util::move_aside(path, ".corrupt-", t);
  CHECK(first == tmp / "stats.json.corrupt-20261121T062000Z");
  { std::ofstream(path) << "two"; }
  const auto second = util::move_aside(path, ".corrupt-", t);  // same second: a counter is added
  CHECK(second == tmp / "stats.json.corrupt-20261121T062000Z.1");
  CHECK(slurp(first) == "one");
  CHECK(slurp(second) == "two");
  CHECK(util::move_aside(tmp / "absent", ".x-", t).empty());
}

TEST_CASE("fs: CACHEDIR.TAG is written once, with the standard's signature, never through a link") {
  TempDir tmp;
  REQUIRE(util::write_cachedir_tag(tmp.path()).ok());
  const std::string tag = slurp(tmp / "CACHEDIR.TAG");
  CHECK(tag.rfind("Signature: 8a477f597d28d172789f06886806bc55\n", 0) == 0);  // the first line
  CHECK(mode_of(tmp / "CACHEDIR.TAG") == 0600);
  { std::ofstream(tmp / "CACHEDIR.TAG") << "the user's own"; }
  REQUIRE(util::write_cachedir_tag(tmp.path()).ok());  // present: left as it is
  CHECK(slurp(tmp / "CACHEDIR.TAG") == "the user's own");

  TempDir other;
  { std::ofstream(other / "victim") << "precious"; }
  fs::create_symlink(other / "victim", tmp / "link-dir-tag");
  fs::create_directory(tmp / "d");
  fs::create_symlink(other / "victim", tmp / "d" / "CACHEDIR.TAG");
  CHECK(util::write_cachedir_tag(tmp / "d").ok());  // a planted link counts as present
  CHECK(slurp(other / "victim") == "precious");
  CHECK_FALSE(util::write_cachedir_tag(tmp / "missing").ok());
}

TEST_CASE("fs: local filesystems are not network filesystems") {
  TempDir tmp;
  CHECK_FALSE(util::network_filesystem(tmp.path()).has_value());
  CHECK_FALSE(util::network_filesystem("/proc").has_value());
  CHECK_FALSE(util::network_filesystem(tmp / "missing").has_value());  // cannot tell: nullopt
}
