// Frames over Unix sockets (src/shared/socket.hpp): whole frames through partial sends, frame
// limits, deadlines and early close.
#include <doctest/doctest.h>

#include <sys/socket.h>
#include <unistd.h>

#include <chrono>
#include <string>
#include <thread>

#include "shared/socket.hpp"

using namespace larder;
using namespace larder::shared;

TEST_CASE(
    "framing: a frame larger than the socket buffers arrives whole (partial gathered sends)") {
  int sv[2];
  REQUIRE(::socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK, 0, sv) == 0);
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(20);
  std::string payload(8u << 20, '\0');
  for (std::size_t i = 0; i < payload.size(); ++i) payload[i] = static_cast<char>(i * 131 % 251);
  std::string got;
  IoResult received = IoResult::error;
  std::thread reader([&] { received = recv_frame(sv[1], &got, deadline); });
  const IoResult sent = send_frame(sv[0], payload, deadline);  // many partial sendmsg calls
  reader.join();
  CHECK(sent == IoResult::ok);
  CHECK(received == IoResult::ok);
  CHECK(got.size() == payload.size());
  CHECK(got == payload);
  // An empty payload is a frame of its header alone.
  CHECK(send_frame(sv[0], "", deadline) == IoResult::ok);
  CHECK(recv_frame(sv[1], &got, deadline) == IoResult::ok);
  CHECK(got.empty());
  ::close(sv[0]);
  ::close(sv[1]);
}

TEST_CASE("framing: frames cross a socket intact; oversized lengths and early close are reported") {
  int sv[2];
  REQUIRE(::socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK, 0, sv) == 0);  // as larder uses them
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(5);
  const std::string payload(100'000, 'p');
  std::string got;
  CHECK(send_frame(sv[0], payload, deadline) == IoResult::ok);
  CHECK(recv_frame(sv[1], &got, deadline) == IoResult::ok);
  CHECK(got == payload);
  // A length above the limit is refused before anything is allocated for it.
  const char huge[4] = {'\xff', '\xff', '\xff', '\x7f'};
  REQUIRE(::write(sv[0], huge, 4) == 4);
  CHECK(recv_frame(sv[1], &got, deadline) == IoResult::too_large);
  // Nothing arrives: the deadline bounds the wait.
  const auto soon = std::chrono::steady_clock::now() + std::chrono::milliseconds(50);
  CHECK(recv_frame(sv[1], &got, soon) == IoResult::timeout);
  ::close(sv[0]);
  CHECK(recv_frame(sv[1], &got, deadline) == IoResult::closed);
  ::close(sv[1]);
}
