// Remote tier URLs (src/remote/url.hpp) and the Config checks that use them.
#include <doctest/doctest.h>

#include <cstdlib>

#include "larder/larder.hpp"
#include "remote/url.hpp"

using namespace larder;
using remote::parse_url;
using remote::RemoteUrl;

TEST_CASE("remote url: the documented forms parse, with their defaults") {
  auto u = parse_url("redis://cache.example:6380/3");
  REQUIRE(u);
  CHECK(u->transport == RemoteUrl::Transport::tcp);
  CHECK(u->host == "cache.example");
  CHECK(u->port == 6380);
  CHECK(u->db == 3);
  CHECK(u->prefix == "larder");
  CHECK(u->connect_timeout == std::chrono::milliseconds(100));
  CHECK(u->operation_timeout == std::chrono::milliseconds(1000));
  CHECK_FALSE(u->read_only);

  u = parse_url(
      "redis://"
      "bob:p%40ss@10.0.0.1?prefix=team.a&connect_timeout=50&operation_timeout=250&read_only=1");
  REQUIRE(u);
  CHECK(u->user == "bob");
  CHECK(u->password == "p@ss");
  CHECK(u->port == 6379);
  CHECK(u->prefix == "team.a");
  CHECK(u->connect_timeout == std::chrono::milliseconds(50));
  CHECK(u->operation_timeout == std::chrono::milliseconds(250));
  CHECK(u->read_only);
  // The password never shows.
  CHECK(u->display().find("p@ss") == std::string::npos);
  CHECK(u->display().find("bob:***@") != std::string::npos);

  u = parse_url("redis://secret@[::1]:7000");
  REQUIRE(u);
  CHECK(u->user.empty());
  CHECK(u->password == "secret");
  CHECK(u->host == "::1");
  CHECK(u->port == 7000);

  u = parse_url("redis+unix:///run/redis/redis.sock?db=2&prefix=x");
  REQUIRE(u);
  CHECK(u->transport == RemoteUrl::Transport::unix_socket);
  CHECK(u->path == "/run/redis/redis.sock");
  CHECK(u->db == 2);
  CHECK(u->prefix == "x");
}

TEST_CASE("remote url: each mistake is named") {
  const auto error_of = [](const char* url) {
    auto u = parse_url(url);
    REQUIRE_FALSE(u);
    return u.error();
  };
  CHECK(error_of("http://host").find("not a remote URL") != std::string::npos);
  CHECK(error_of("garbage").find("not a remote URL") != std::string::npos);
  CHECK(error_of("redis://").find("no host") != std::string::npos);
  CHECK(error_of("redis://h:99999").find("port '99999'") != std::string::npos);
  CHECK(error_of("redis://h:abc").find("port 'abc'") != std::string::npos);
  CHECK(error_of("redis://h/x").find("database 'x'") != std::string::npos);
  CHECK(error_of("redis://h?colour=red").find("unknown option 'colour'") != std::string::npos);
  CHECK(error_of("redis://h?prefix=a b").find("prefix 'a b'") != std::string::npos);
  CHECK(error_of("redis://h?operation_timeout=0").find("operation_timeout=0") != std::string::npos);
  CHECK(error_of("redis://h?read_only=yes").find("read_only=yes") != std::string::npos);
  CHECK(error_of("redis+unix://relative.sock").find("absolute") != std::string::npos);
  CHECK(error_of("redis://u:%zz@h").find("two hex digits") != std::string::npos);
  // A bad URL's message does not repeat its password.
  CHECK(error_of("redis://u:hunter2@h:0").find("hunter2") == std::string::npos);
}

TEST_CASE("remote url: Config::remote and LARDER_REMOTE are checked at open") {
  Config c;
  c.strategy = Strategy::disabled;
  c.remote = "redis:/oops";
  try {
    (void)Cache::open(c);
    FAIL("a garbage remote URL was accepted");
  } catch (const ConfigError& e) {
    CHECK(std::string(e.what()).starts_with("remote: "));
  }
  ::setenv("LARDER_REMOTE", "nonsense", 1);
  CHECK_THROWS_AS((void)Config::from_env(), ConfigError);
  ::setenv("LARDER_REMOTE", "redis://localhost:6379?prefix=p", 1);
  CHECK(Config::from_env().remote == "redis://localhost:6379?prefix=p");
  ::unsetenv("LARDER_REMOTE");
}
