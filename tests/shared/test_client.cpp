// shared::ConnectionPool (src/shared/client.hpp) against a listening socket of the test's own:
// why no connection was given, reuse of an idle connection, and never reusing one its peer
// closed.
#include <doctest/doctest.h>

#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <chrono>

#include "shared/client.hpp"
#include "shared/socket.hpp"
#include "support.hpp"

using namespace larder;
using namespace larder::shared;

namespace {

Deadline soon() {
  return std::chrono::steady_clock::now() + std::chrono::seconds(5);
}

// Accepts a pending connection, waiting at most 5 s for one; -1 when none came.
int accept_one(int listener) {
  pollfd pf{listener, POLLIN, 0};
  if (::poll(&pf, 1, 5000) != 1) return -1;
  return ::accept4(listener, nullptr, nullptr, SOCK_CLOEXEC);
}

}  // namespace

TEST_CASE("connection pool: no listener is no_owner; an idle connection is reused") {
  test::TempDir tmp;
  const auto path = tmp / "s.sock";
  ConnectionPool pool;
  pool.set_socket(path, "the test socket");
  NoConnection why = NoConnection::unreachable;
  auto none = pool.take(soon(), &why);
  CHECK_FALSE(none);
  CHECK(why == NoConnection::no_owner);  // the caller may run the owner election

  auto listener = listen_unix(path);
  REQUIRE(listener);
  auto first = pool.take(soon(), &why);
  REQUIRE(first);
  const int served = accept_one(*listener);
  REQUIRE(served >= 0);
  pool.give_back(*first);
  auto again = pool.take(soon(), &why);
  REQUIRE(again);
  CHECK(*again == *first);  // the same connection: no new connect
  pool.give_back(*again);
  pool.close_all();
  close_socket(served);
  close_socket(*listener);
}

TEST_CASE("connection pool: a connection its peer closed while idle is not reused") {
  test::TempDir tmp;
  const auto path = tmp / "s.sock";
  auto listener = listen_unix(path);
  REQUIRE(listener);
  ConnectionPool pool;
  pool.set_socket(path, "the test socket");
  NoConnection why = NoConnection::unreachable;
  auto first = pool.take(soon(), &why);
  REQUIRE(first);
  const int served = accept_one(*listener);
  REQUIRE(served >= 0);
  pool.give_back(*first);
  close_socket(served);  // the owner closes it (as after its idle timeout)
  auto next = pool.take(soon(), &why);
  REQUIRE(next);
  const int served2 = accept_one(*listener);
  REQUIRE(served2 >= 0);  // a new connection reached the listener
  // It works: a frame crosses it.
  REQUIRE(send_frame(*next, "ping", soon()) == IoResult::ok);
  std::string got;
  REQUIRE(recv_frame(served2, &got, soon()) == IoResult::ok);
  CHECK(got == "ping");
  close_socket(*next);
  close_socket(served2);
  close_socket(*listener);
}
