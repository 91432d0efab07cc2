// Full disks: a cache on a small tmpfs that fills up must never abort or throw. Sets are refused
// and counted, reads keep working, and once space comes back (a ballast file freed while the
// process runs) the cache writes again by itself. Needs root (to mount the tmpfs); skipped with
// a printed reason otherwise. The filling runs in a separate process (larder-test-helper) so an
// abort shows up as a signal instead of ending the suite.
#include <doctest/doctest.h>

#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/statvfs.h>

#include <fstream>

#include "child.hpp"
#include "support.hpp"

using namespace larder;
using namespace larder::test;

namespace {

// A tmpfs of `bytes` mounted on a fresh temporary directory for the life of the object.
class SmallDisk {
 public:
  explicit SmallDisk(std::size_t bytes) {
    if (::geteuid() != 0) {
      why_ = "not root: cannot mount a tmpfs";
      return;
    }
    const std::string opts = "size=" + std::to_string(bytes) + ",mode=0700";
    if (::mount("tmpfs", dir_.path().c_str(), "tmpfs", 0, opts.c_str()) != 0) {
      why_ = std::string("mount tmpfs: ") + std::strerror(errno);
      return;
    }
    mounted_ = true;
  }
  ~SmallDisk() {
    if (mounted_) ::umount2(dir_.path().c_str(), MNT_DETACH);
  }
  SmallDisk(const SmallDisk&) = delete;
  SmallDisk& operator=(const SmallDisk&) = delete;
  bool usable() const { return mounted_; }
  const std::string& why_not() const { return why_; }
  std::filesystem::path path() const { return dir_.path(); }
  // Fills the disk with a file of `bytes` (or until full when bytes is 0).
  void ballast(const std::filesystem::path& file, std::size_t bytes) const {
    std::ofstream out(file, std::ios::binary);
    const std::string block(64 * 1024, 'b');
    for (std::size_t n = 0; bytes == 0 || n < bytes; n += block.size()) {
      if (!out.write(block.data(), static_cast<std::streamsize>(block.size()))) break;
    }
  }
  std::uint64_t free_bytes() const {
    struct statvfs v {};
    if (::statvfs(dir_.path().c_str(), &v) != 0) return 0;
    return static_cast<std::uint64_t>(v.f_bavail) * v.f_frsize;
  }

 private:
  TempDir dir_;
  bool mounted_ = false;
  std::string why_;
};

std::string fmt_lines(const std::vector<std::string>& lines) {
  std::string out;
  for (const auto& l : lines) out += l + "; ";
  return out;
}

long value_after(const std::vector<std::string>& lines, const std::string& word) {
  for (const auto& l : lines)
    if (l.rfind(word + " ", 0) == 0) return std::stol(l.substr(word.size() + 1));
  return -1;
}

void fill_and_recover(const char* strategy) {
  SmallDisk disk(8 * 1024 * 1024);
  if (!disk.usable()) {
    MESSAGE("skipped: " << disk.why_not());
    return;
  }
  const auto root = disk.path() / "cache";
  const auto ballast = disk.path() / "ballast";
  disk.ballast(ballast, 4 * 1024 * 1024);
  Child child({"diskfull", root.string(), strategy, ballast.string()}, false);
  const int status = child.wait_at_most(std::chrono::seconds(120));
  const auto lines = child.lines();
  INFO("helper output: " << fmt_lines(lines));
  REQUIRE(WIFEXITED(status));  // not killed by SIGABRT / SIGSEGV
  CHECK(WEXITSTATUS(status) == 0);
  const long acked = value_after(lines, "acked");
  CHECK(value_after(lines, "degraded") == 0);
  CHECK(acked > 10);                           // it stored what fitted
  CHECK(value_after(lines, "refused") >= 10);  // and then refused
  CHECK(value_after(lines, "hits") == acked);  // every acknowledged write reads back
  // Writes again once space is back, within a few attempts of the cache's clock (5 s each, no
  // real time passing): it used to wait for the housekeeper's pause (up to 5 s of real time).
  const long recovered = value_after(lines, "recovered");
  CHECK(recovered >= 0);
  CHECK(recovered <= 3);
  CHECK(value_after(lines, "store") == 1);
  CHECK(value_after(lines, "persisted") == 1);
}

}  // namespace

TEST_CASE("full disk: a process_isolated cache refuses sets, keeps reads, recovers by itself") {
  fill_and_recover("process_isolated");
}

TEST_CASE("full disk: a shared owner refuses sets, keeps reads, recovers by itself") {
  fill_and_recover("shared");
}

TEST_CASE("full disk: opening a cache on a full disk neither aborts nor throws") {
  SmallDisk disk(4 * 1024 * 1024);
  if (!disk.usable()) {
    MESSAGE("skipped: " << disk.why_not());
    return;
  }
  const auto root = disk.path() / "cache";
  const auto ballast = disk.path() / "ballast";
  disk.ballast(ballast, 0);
  CHECK(disk.free_bytes() < 64 * 1024);
  // The helper opens the cache on the full disk, fails to write, then frees the ballast.
  Child child({"diskfull", root.string(), "process_isolated", ballast.string()}, false);
  const int status = child.wait_at_most(std::chrono::seconds(120));
  const auto lines = child.lines();
  INFO("helper output: " << fmt_lines(lines));
  REQUIRE(WIFEXITED(status));
  CHECK(WEXITSTATUS(status) == 0);
  // It cannot create its store there: a memory cache, saying why; once the ballast is gone the
  // breaker's probe opens the store, and what is set then survives a reopen.
  CHECK(value_after(lines, "degraded") == 1);
  CHECK(value_after(lines, "recovered") >= 0);
  CHECK(value_after(lines, "store") == 1);
  CHECK(value_after(lines, "persisted") == 1);
}

TEST_CASE(
    "unwritable store directory: sets are refused, reads go on, writes come back by "
    "themselves once it is writable") {
  if (::geteuid() != 0) {
    MESSAGE("skipped: needs root to run the cache as uid 65534 (root ignores the mode)");
    return;
  }
  TempDir tmp;
  ::chmod(tmp.path().c_str(), 0755);
  const auto root = tmp / "cache";
  std::filesystem::create_directories(root);
  REQUIRE(::chown(root.c_str(), 65534, 65534) == 0);
  ::chmod(root.c_str(), 0700);
  Child child({"unwritable", root.string()}, false);
  const int status = child.wait_at_most(std::chrono::seconds(180));
  const auto lines = child.lines();
  INFO("helper output: " << fmt_lines(lines));
  REQUIRE(WIFEXITED(status));
  CHECK(WEXITSTATUS(status) == 0);
  const long acked = value_after(lines, "acked");
  CHECK(value_after(lines, "degraded") == 0);
  CHECK(value_after(lines, "refused") >= 10);
  CHECK(value_after(lines, "hits") == acked);
  CHECK(value_after(lines, "recovered") >= 0);
  CHECK(value_after(lines, "store") == 1);
  CHECK(value_after(lines, "persisted") == 1);
}
