// The shared owner's server against hostile and unlucky peers, with real processes: frames that
// declare huge sizes, partial frames, floods of idle connections, descriptor exhaustion, a socket
// planted by another user, and a graceful handover that must answer each request exactly once.
#include <doctest/doctest.h>

#include <poll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>

#include <fstream>
#include <random>
#include <thread>

#include "child.hpp"
#include "shared/protocol.hpp"
#include "shared/socket.hpp"
#include "shared_support.hpp"
#include "support.hpp"

using namespace larder;
using namespace larder::test;
using namespace std::chrono_literals;

namespace {

std::string le32(std::uint32_t n) {
  std::string s(4, '\0');
  for (int i = 0; i < 4; ++i) s[static_cast<std::size_t>(i)] = static_cast<char>(n >> (8 * i));
  return s;
}

// The payload of a get request for `text`, as larder encodes it.
std::string get_payload(const std::string& text) {
  return shared::encode(shared::Request{9, shared::op::Get{text}});
}

// CPU time (user + system) of a process in clock ticks, or -1.
long cpu_ticks(long pid) {
  std::ifstream in("/proc/" + std::to_string(pid) + "/stat");
  std::string all((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  const auto close = all.rfind(')');
  if (close == std::string::npos) return -1;
  std::istringstream rest(all.substr(close + 2));
  std::string field;
  long utime = 0, stime = 0;
  for (int i = 3; i <= 15 && rest >> field; ++i) {
    if (i == 14) utime = std::stol(field);
    if (i == 15) stime = std::stol(field);
  }
  return utime + stime;
}

void raise_nofile(rlim_t want) {
  rlimit r{};
  ::getrlimit(RLIMIT_NOFILE, &r);
  r.rlim_cur = std::min(std::max(r.rlim_cur, want), r.rlim_max);
  ::setrlimit(RLIMIT_NOFILE, &r);
}

}  // namespace

TEST_CASE("server: frames declaring huge sizes allocate nothing they did not bring") {
  TempDir tmp;
  const auto root = tmp / "cache";
  Child owner({"hold", root.string(), "shared"});
  REQUIRE(owner.wait_for_lines(1));
  const long pid = owner_pid(root);
  REQUIRE(pid > 0);
  const auto socket = root / ".larder.sock";
  const long before_kb = proc_status(pid, "VmHWM");

  // A string of 2^32 - 1 bytes declared in a 62-byte frame.
  std::string huge_string = get_payload("k");
  huge_string.replace(11, 4, le32(0xffffffffu));  // the key's length
  huge_string.resize(62 - 4, 'x');
  // 2^27 keys declared.
  std::string many_keys = shared::encode(shared::Request{9, shared::op::GetMany{{"k"}}});
  many_keys.replace(11, 4, le32(1u << 27));  // after version (2), id (8) and opcode (1)
  for (const std::string& payload : {huge_string, many_keys}) {
    const int fd = raw_connect(socket);
    REQUIRE(fd >= 0);
    CHECK(send_and_read(fd, frame(payload)) == 0);  // dropped without a reply
    ::close(fd);
  }
  // Bit-flipped valid frames: each is answered or dropped, none makes the owner grow.
  core::SetRequest item;
  item.key = "key";
  item.value = std::string(200, 'v');
  item.metadata = {{"a", "b"}};
  const std::string valid =
      shared::encode(shared::Request{0, shared::op::SetMany{{item, item, item}}});
  std::mt19937 rng(12345);
  for (int i = 0; i < 2000; ++i) {
    std::string bad = valid;
    for (int flips = 0; flips < 3; ++flips)
      bad[rng() % bad.size()] ^= static_cast<char>(1u << (rng() % 8));
    const int fd = raw_connect(socket);
    REQUIRE(fd >= 0);
    CHECK(send_and_read(fd, frame(bad)) >= 0);
    ::close(fd);
  }
  const long after_kb = proc_status(pid, "VmHWM");
  MESSAGE("owner peak RSS " << before_kb / 1024 << " MiB before, " << after_kb / 1024
                            << " MiB after the hostile frames");
  CHECK(after_kb - before_kb < 64 * 1024);
  Cache c = Cache::open(shared_config(root));
  CHECK(c.get("held") == "yes");  // still serving
}

TEST_CASE("server: partial frames pin no memory and are closed at their deadline") {
  TempDir tmp;
  const auto root = tmp / "cache";
  Child owner({"hold", root.string(), "shared"});
  REQUIRE(owner.wait_for_lines(1));
  const long pid = owner_pid(root);
  const auto socket = root / ".larder.sock";
  const long before_kb = proc_status(pid, "VmRSS");
  std::vector<int> fds;
  for (int i = 0; i < 8; ++i) {
    const int fd = raw_connect(socket);
    REQUIRE(fd >= 0);
    const std::string start = le32(256u << 20) + "x";  // 256 MiB announced, one byte sent
    REQUIRE(::send(fd, start.data(), start.size(), MSG_NOSIGNAL) == 5);
    fds.push_back(fd);
  }
  {  // The owner's loop has read what the 8 sent once it answers a request sent after them.
    Cache probe = Cache::open(shared_config(root));
    REQUIRE(probe.get("held") == "yes");
  }
  const long during_kb = proc_status(pid, "VmRSS");
  CHECK(during_kb - before_kb < 32 * 1024);
  // The owner closes each within its frame deadline (5 s for this owner's lock_timeout).
  const auto t0 = std::chrono::steady_clock::now();
  for (int fd : fds) {
    char b;
    pollfd p{fd, POLLIN, 0};
    REQUIRE(::poll(&p, 1, 15'000) == 1);
    CHECK(::recv(fd, &b, 1, 0) <= 0);
    ::close(fd);
  }
  const auto waited = std::chrono::steady_clock::now() - t0;
  CHECK(waited < 12s);
  Cache c = Cache::open(shared_config(root));
  CHECK(c.get("held") == "yes");
}

TEST_CASE("server: a flood of idle connections keeps threads bounded and real clients served") {
  raise_nofile(8192);
  TempDir tmp;
  const auto root = tmp / "cache";
  Child owner({"hold", root.string(), "shared"});
  REQUIRE(owner.wait_for_lines(1));
  const long pid = owner_pid(root);
  const auto socket = root / ".larder.sock";
  std::vector<int> fds;
  for (int i = 0; i < 2000; ++i) {
    const int fd = raw_connect(socket);
    if (fd < 0) break;
    fds.push_back(fd);
  }
  CHECK(fds.size() >= 1000);
  Cache c = Cache::open(shared_config(root));
  // Answered after the flood's connections: the owner has accepted them (its one loop did).
  CHECK(c.get("held") == "yes");
  const long threads = proc_status(pid, "Threads");
  MESSAGE("owner threads with " << fds.size() << " connections: " << threads);
  CHECK(threads > 0);
  CHECK(threads < 40);
  CHECK(c.set("during-flood", "ok"));
  CHECK(c.get("held") == "yes");
  for (int fd : fds) ::close(fd);
}

TEST_CASE("server: out of descriptors, the owner neither spins nor stops serving") {
  TempDir tmp;
  const auto root = tmp / "cache";
  Child owner({"hold", root.string(), "shared"});
  REQUIRE(owner.wait_for_lines(1));
  const long pid = owner_pid(root);
  const auto socket = root / ".larder.sock";
  // Allow the owner a few descriptors more than it uses now.
  long open_now = 0;
  for ([[maybe_unused]] const auto& e :
       std::filesystem::directory_iterator("/proc/" + std::to_string(pid) + "/fd"))
    ++open_now;
  rlimit lim{static_cast<rlim_t>(open_now + 8), static_cast<rlim_t>(open_now + 8)};
  REQUIRE(::prlimit(static_cast<pid_t>(pid), RLIMIT_NOFILE, &lim, nullptr) == 0);
  std::vector<int> fds;
  for (int i = 0; i < 100; ++i) {
    const int fd = raw_connect(socket);
    if (fd >= 0) fds.push_back(fd);
  }
  const long ticks0 = cpu_ticks(pid);
  std::this_thread::sleep_for(1s);
  const long ticks1 = cpu_ticks(pid);
  const long hz = ::sysconf(_SC_CLK_TCK);
  MESSAGE("owner CPU over 1 s with accept failing: " << (ticks1 - ticks0) * 100 / hz << "%");
  CHECK((ticks1 - ticks0) * 100 / hz < 30);
  for (int fd : fds) ::close(fd);
  Cache c = Cache::open(shared_config(root));
  CHECK(c.get("held") == "yes");
}

TEST_CASE("server: a client never uses a socket served by another user") {
  if (::geteuid() != 0) {
    MESSAGE("skipped: needs root to plant a socket as another user");
    return;
  }
  TempDir tmp;
  const auto root = tmp / "cache";
  Child owner({"hold", root.string(), "shared"});
  REQUIRE(owner.wait_for_lines(1));
  const auto socket = root / ".larder.sock";
  // uid 65534 replaces the owner's socket with its own, answering every get with "evil".
  ::chmod(tmp.path().c_str(), 0755);
  ::chmod(root.c_str(), 0777);
  int ready[2];
  REQUIRE(::pipe(ready) == 0);
  const pid_t attacker = ::fork();
  REQUIRE(attacker >= 0);
  if (attacker == 0) {
    if (::setgid(65534) != 0 || ::setuid(65534) != 0) ::_exit(10);
    ::unlink(socket.c_str());
    auto listening = shared::listen_unix(socket);
    if (!listening) ::_exit(11);
    const int lfd = *listening;
    ::chmod(socket.c_str(), 0777);
    (void)!::write(ready[1], "r", 1);
    for (;;) {
      pollfd p{lfd, POLLIN, 0};
      ::poll(&p, 1, 10'000);
      const int fd = ::accept4(lfd, nullptr, nullptr, SOCK_NONBLOCK);
      if (fd < 0) ::_exit(0);
      std::string payload;
      const auto deadline = std::chrono::steady_clock::now() + 5s;
      if (shared::recv_frame(fd, &payload, deadline) != shared::IoResult::ok) continue;
      shared::Request q;
      std::string why;
      if (!shared::decode(payload, &q, &why)) continue;
      shared::Reply r;
      r.id = q.id;
      r.result = shared::encode_result(std::optional<std::string>("evil"));
      (void)shared::send_frame(fd, shared::encode(r), deadline);
    }
  }
  char b;
  REQUIRE(::read(ready[0], &b, 1) == 1);
  ::chmod(root.c_str(), 0700);
  ::chmod(tmp.path().c_str(), 0700);
  {
    Config cfg = shared_config(root);
    cfg.lock_timeout = 300ms;
    Cache c = Cache::open(cfg);
    CHECK(c.get("held") != std::optional<std::string>("evil"));
    CHECK(c.last_error().find("uid 65534") != std::string::npos);
  }
  ::kill(attacker, SIGKILL);
  ::waitpid(attacker, nullptr, 0);
}

TEST_CASE("server: a graceful handover answers every request exactly once") {
  TempDir tmp;
  const auto root = tmp / "cache";
  for (int round = 0; round < 3; ++round) {
    std::vector<std::unique_ptr<Child>> kids;
    for (int i = 0; i < 4; ++i)
      kids.push_back(std::make_unique<Child>(
          std::vector<std::string>{"counts", root.string(), std::to_string(round * 10 + i)}));
    for (auto& k : kids) {
      const int status = k->wait_at_most(60s);
      CHECK(WIFEXITED(status));
      CHECK(k->lines() == std::vector<std::string>{"done 100"});
    }
  }
  Cache c = Cache::open(shared_config(root));
  const Stats s = c.stats();
  CHECK(s.set_count == 1200);
  CHECK(s.hit_count == 1200);
  CHECK(s.miss_count == 600);
  CHECK(s.error_count == 0);
}

TEST_CASE("server: a get_many whose reply would exceed a frame is answered in parts") {
  TempDir tmp;
  const auto root = tmp / "cache";
  Child owner({"hold", root.string(), "shared"});
  REQUIRE(owner.wait_for_lines(1));
  Cache c = Cache::open(shared_config(root));
  const std::string big(10 << 20, 'b');
  REQUIRE(c.set("big", big));
  // 27 x 10 MiB = 270 MiB of values: more than one frame (256 MiB) can carry.
  std::vector<std::string> keys(27, "big");
  keys.push_back("absent");
  const Stats before = c.stats();
  const auto t0 = std::chrono::steady_clock::now();
  const auto got = c.get_many(keys);
  MESSAGE("get_many of 270 MiB took " << std::chrono::duration_cast<std::chrono::milliseconds>(
                                             std::chrono::steady_clock::now() - t0)
                                             .count()
                                      << " ms");
  REQUIRE(got.size() == keys.size());
  std::size_t hits = 0;
  for (std::size_t i = 0; i + 1 < got.size(); ++i) hits += got[i] == big ? 1 : 0;
  CHECK(hits == 27);
  CHECK_FALSE(got.back());
  const Stats after = c.stats();
  CHECK(after.hit_count - before.hit_count == 27);  // each key counted once
  CHECK(after.miss_count - before.miss_count == 1);
  CHECK(after.error_count == before.error_count);
  CHECK(c.get("big") == big);  // and the next call works at once
}
