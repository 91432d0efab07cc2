// util::LockFile (src/util/lock_file.hpp): flock ownership between open files, shared and
// exclusive modes, release on close and on the holder's death, content, and refusing what is not
// a regular file.
#include <doctest/doctest.h>

#include <signal.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <fstream>

#include "support.hpp"
#include "util/lock_file.hpp"

using namespace larder;
using namespace larder::test;
using namespace std::chrono_literals;

TEST_CASE("lock_file: one exclusive holder; shared holders share; close releases") {
  TempDir tmp;
  const auto path = tmp / "x.lock";
  util::LockFile a, b;
  REQUIRE(a.open(path).ok());
  REQUIRE(b.open(path).ok());
  auto taken = a.try_lock(util::LockMode::exclusive);
  REQUIRE(taken.ok());
  CHECK(*taken);
  CHECK(a.locked());
  auto second = b.try_lock(util::LockMode::exclusive);
  REQUIRE(second.ok());  // not an error: another holder has it
  CHECK_FALSE(*second);
  CHECK_FALSE(util::held(b.try_lock(util::LockMode::shared)));
  CHECK_FALSE(b.lock_for(20ms));
  a.close();
  CHECK(util::held(b.try_lock(util::LockMode::shared)));
  util::LockFile c;
  REQUIRE(c.open(path).ok());
  CHECK(util::held(c.try_lock(util::LockMode::shared)));  // two shared holders
  CHECK_FALSE(util::held(a.try_lock()));                  // a is closed: an error, not a lock
  CHECK_FALSE(a.try_lock().ok());
}

TEST_CASE("lock_file: a SIGKILLed holder's lock is free at once") {
  TempDir tmp;
  const auto path = tmp / "x.lock";
  int ready[2];
  REQUIRE(::pipe(ready) == 0);
  const pid_t child = ::fork();
  REQUIRE(child >= 0);
  if (child == 0) {
    util::LockFile held_by_child;
    if (!held_by_child.open(path).ok() || !util::held(held_by_child.try_lock())) ::_exit(1);
    (void)!::write(ready[1], "r", 1);
    ::pause();
    ::_exit(0);
  }
  char c = 0;
  REQUIRE(::read(ready[0], &c, 1) == 1);
  util::LockFile mine;
  REQUIRE(mine.open(path).ok());
  CHECK_FALSE(util::held(mine.try_lock()));
  ::kill(child, SIGKILL);
  CHECK(WIFSIGNALED(wait_bounded(child)));
  CHECK(mine.lock_for(2s));
  ::close(ready[0]);
  ::close(ready[1]);
}

TEST_CASE("lock_file: content is replaced whole; no create, symlinks and FIFOs are refused") {
  TempDir tmp;
  const auto path = tmp / "owner.lock";
  util::LockFile l;
  REQUIRE(l.open(path).ok());
  REQUIRE(l.write_content("pid=1234\nsocket=/a/long/path\n").ok());
  REQUIRE(l.write_content("pid=5\n").ok());
  CHECK(l.read_content() == "pid=5\n");

  util::LockFile missing;
  const util::Status none = missing.open(tmp / "absent.lock", util::Create::no);
  CHECK_FALSE(none.ok());
  CHECK(none.error().find("absent.lock") != std::string::npos);
  CHECK_FALSE(std::filesystem::exists(tmp / "absent.lock"));

  { std::ofstream(tmp / "victim") << "precious"; }
  std::filesystem::create_symlink(tmp / "victim", tmp / "link.lock");
  util::LockFile through_link;
  const util::Status link = through_link.open(tmp / "link.lock");
  CHECK_FALSE(link.ok());
  CHECK(link.error().find("symlink") != std::string::npos);

  REQUIRE(::mkfifo((tmp / "fifo.lock").c_str(), 0600) == 0);
  util::LockFile fifo;  // opened non-blocking: no hang, and refused as not a regular file
  const util::Status f = fifo.open(tmp / "fifo.lock");
  CHECK_FALSE(f.ok());
  CHECK(f.error().find("not a regular file") != std::string::npos);
  CHECK_FALSE(fifo.write_content("x").ok());
}
