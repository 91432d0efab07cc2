// `cachectl serve` as a program: a real server process bound to 127.0.0.1:0, driven by
// cpp-httplib's client and by raw sockets (malformed and hostile input), a shared cache's owner
// in this process, and the dashboard in headless Chromium.
#include <doctest/doctest.h>

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <fstream>
#include <regex>
#include <sstream>
#include <thread>

#include <httplib.h>

#include "util/json.hpp"

#include "child.hpp"
#include "support.hpp"

using namespace larder;
using namespace larder::test;

namespace {

// A cache at dir/"cache" (shared strategy), created and closed, with these limits.
std::filesystem::path make_cache(const TempDir& dir, std::uint64_t max_size_bytes = 0) {
  Config c;
  c.cache_root = dir / "cache";
  c.strategy = Strategy::shared;
  c.max_size_bytes = max_size_bytes;
  c.max_entries = 0;
  c.cleanup_interval = std::chrono::seconds(0);
  Cache::open(c);
  return c.cache_root;
}

// A tokens file in `dir` with these lines, mode 0600 (or `mode`).
std::string tokens_file(const TempDir& dir, const std::string& lines, mode_t mode = 0600) {
  const auto path = dir / "tokens";
  std::ofstream(path) << lines;
  ::chmod(path.c_str(), mode);
  return path.string();
}

constexpr const char* kRead = "read-token-0123456789";
constexpr const char* kWrite = "write-token-0123456789";
constexpr const char* kAdmin = "admin-token-0123456789";
constexpr const char* kPlugin = "plugin-token-0123456789";

std::string all_tokens(const TempDir& dir) {
  return tokens_file(
      dir, fmt::format("# roles\n{} read\n{} write\n\n{} admin\n{} write ns=plugin-x\n", kRead,
                       kWrite, kAdmin, kPlugin));
}

// A running `cachectl serve` over `root`; stopped with SIGTERM when it goes.
class Server {
 public:
  explicit Server(const std::filesystem::path& root, std::vector<std::string> extra = {})
      : child_(LARDER_CACHECTL, args(root, std::move(extra)), true) {
    REQUIRE(child_.wait_for_line_with("listening on http://"));
    for (const auto& l : child_.lines())
      if (auto p = l.rfind(':'); l.starts_with("listening on http://"))
        port_ = std::stoi(l.substr(p + 1));
    REQUIRE(port_ > 0);
  }
  ~Server() { stop(); }
  int port() const { return port_; }
  httplib::Client client(const char* token = nullptr) const {
    httplib::Client c("127.0.0.1", port_);
    c.set_connection_timeout(5);
    c.set_read_timeout(10);
    if (token != nullptr) c.set_bearer_token_auth(token);
    return c;
  }
  // SIGTERM; returns the exit status.
  int stop(int sig = SIGTERM) {
    if (stopped_) return status_;
    stopped_ = true;
    child_.signal(sig);
    status_ = child_.wait_at_most(std::chrono::seconds(20));
    return status_;
  }

 private:
  static std::vector<std::string> args(const std::filesystem::path& root,
                                       std::vector<std::string> extra) {
    std::vector<std::string> a = {"--root", root.string(), "serve", "--listen", "127.0.0.1:0"};
    a.insert(a.end(), extra.begin(), extra.end());
    return a;
  }
  Child child_;
  int port_ = 0;
  bool stopped_ = false;
  int status_ = -1;
};

rapidjson::Document parse(const std::string& body) {
  rapidjson::Document d;
  d.Parse(body.c_str());
  REQUIRE_FALSE(d.HasParseError());
  return d;
}

std::string error_of(const httplib::Result& r) {
  REQUIRE(r);
  auto d = parse(r->body);
  REQUIRE(d.HasMember("error"));
  return d["error"].GetString();
}

// A raw TCP connection to the server.
int connect_to(int port) {
  const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  REQUIRE(fd >= 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_port = htons(static_cast<std::uint16_t>(port));
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  REQUIRE(::connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) == 0);
  timeval tv{20, 0};
  ::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  return fd;
}

void send_text(int fd, const std::string& s) {
  REQUIRE(::send(fd, s.data(), s.size(), MSG_NOSIGNAL) == static_cast<ssize_t>(s.size()));
}

// Everything the server sends until it closes the connection (or 20 s pass).
std::string read_all(int fd) {
  std::string out;
  char buf[4096];
  for (;;) {
    const ssize_t n = ::recv(fd, buf, sizeof buf, 0);
    if (n <= 0) break;
    out.append(buf, static_cast<std::size_t>(n));
  }
  return out;
}

const std::regex kRfc3339(R"(\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z)");

}  // namespace

TEST_CASE("serve: an entry is put, read, listed and deleted; reads count as hits and misses") {
  TempDir dir;
  Server s(make_cache(dir));
  auto c = s.client();
  // A key with a slash and a space, percent-encoded; the TTL in seconds, a category.
  auto put = c.Put("/api/v1/entries/a%2Fb%20c?ttl=3600&category=thumbs", "value-1",
                   "application/octet-stream");
  REQUIRE(put);
  CHECK(put->status == 204);
  auto got = c.Get("/api/v1/entries/a/b%20c");
  REQUIRE(got);
  CHECK(got->status == 200);
  CHECK(got->body == "value-1");
  CHECK(got->get_header_value("Content-Type") == "application/octet-stream");
  CHECK(got->get_header_value("X-Larder-Status") == "fresh");
  CHECK(got->get_header_value("X-Larder-Category") == "thumbs");
  CHECK(std::regex_match(got->get_header_value("X-Larder-Expires-At"), kRfc3339));
  auto head = c.Head("/api/v1/entries/a%2Fb%20c");
  REQUIRE(head);
  CHECK(head->status == 200);
  CHECK(head->body.empty());
  // ttl=0: never expires, so no expiry header.
  REQUIRE(c.Put("/api/v1/entries/forever?ttl=0", "v", "text/plain")->status == 204);
  auto forever = c.Get("/api/v1/entries/forever");
  CHECK(forever->status == 200);
  CHECK_FALSE(forever->has_header("X-Larder-Expires-At"));
  auto miss = c.Get("/api/v1/entries/absent");
  CHECK(miss->status == 404);
  CHECK(error_of(miss) == "no such entry");

  auto stats = parse(c.Get("/api/v1/stats")->body);
  CHECK(stats["hit_count"].GetUint64() == 3);  // the GET, the HEAD, forever's GET
  CHECK(stats["miss_count"].GetUint64() == 1);
  CHECK(stats["set_count"].GetUint64() == 2);
  CHECK(stats["total_entries"].GetUint64() == 2);
  CHECK(stats["hit_rate"].GetDouble() == doctest::Approx(75.0));
  CHECK(stats["categories"]["thumbs"].GetUint64() == 1);

  auto list = parse(c.Get("/api/v1/entries")->body);
  REQUIRE(list["entries"].Size() == 2);
  CHECK(list["truncated"].GetBool() == false);
  const auto& e = list["entries"][0];
  CHECK(std::string(e["key"].GetString()) == "a/b c");
  CHECK(std::string(e["status"].GetString()) == "fresh");
  CHECK(std::string(e["category"].GetString()) == "thumbs");
  CHECK(e["size_bytes"].GetUint64() == 7);
  CHECK(std::regex_match(std::string(e["created_at"].GetString()), kRfc3339));
  CHECK(std::regex_match(std::string(e["expires_at"].GetString()), kRfc3339));
  CHECK(e["access_count"].IsUint64());
  CHECK(list["entries"][1]["expires_at"].IsNull());

  auto del = c.Delete("/api/v1/entries/a%2Fb%20c");
  CHECK(del->status == 204);
  CHECK(c.Delete("/api/v1/entries/a%2Fb%20c")->status == 404);
  CHECK(c.Get("/api/v1/entries/a%2Fb%20c")->status == 404);
  CHECK(s.stop() == 0);  // SIGTERM: exit 0
}

TEST_CASE("serve: listing filters by pattern and category, limits, sorts and says truncated") {
  TempDir dir;
  Server s(make_cache(dir));
  auto c = s.client();
  for (int i = 0; i < 5; ++i)
    REQUIRE(c.Put(fmt::format("/api/v1/entries/user:{}?category=users", i),
                  std::string(static_cast<std::size_t>(10 + i), 'x'), "text/plain")
                ->status == 204);
  REQUIRE(c.Put("/api/v1/entries/post:1?category=posts", "p", "text/plain")->status == 204);
  auto users = parse(c.Get("/api/v1/entries?pattern=user%3A*")->body);
  CHECK(users["entries"].Size() == 5);
  auto posts = parse(c.Get("/api/v1/entries?category=posts")->body);
  REQUIRE(posts["entries"].Size() == 1);
  CHECK(std::string(posts["entries"][0]["key"].GetString()) == "post:1");
  auto two = parse(c.Get("/api/v1/entries?limit=2")->body);
  CHECK(two["entries"].Size() == 2);
  CHECK(two["truncated"].GetBool());
  auto largest = parse(c.Get("/api/v1/entries?sort=size&limit=1")->body);
  CHECK(std::string(largest["entries"][0]["key"].GetString()) == "user:4");
  CHECK(c.Get("/api/v1/entries?pattern=user%5B")->status == 400);  // "user[": unterminated
  CHECK(error_of(c.Get("/api/v1/entries?pattern=%5Bab")).find("closing ']'") != std::string::npos);
  CHECK(c.Get("/api/v1/entries?limit=0")->status == 400);
  CHECK(c.Get("/api/v1/entries?limit=x")->status == 400);
  CHECK(c.Get("/api/v1/entries?sort=color")->status == 400);
}

TEST_CASE("serve: invalidate, clear and cleanup; the whole store includes namespaces") {
  TempDir dir;
  Server s(make_cache(dir));
  auto c = s.client();
  for (const char* k : {"a:1", "a:2", "b:1"})
    REQUIRE(c.Put(fmt::format("/api/v1/entries/{}?category=cat-{}", k, k[0]), "v", "text/plain")
                ->status == 204);
  REQUIRE(c.Put("/api/v1/ns/plugin-x/entries/k", "v", "text/plain")->status == 204);
  auto inv = [&](const std::string& body) {
    auto r = c.Post("/api/v1/invalidate", body, "application/json");
    REQUIRE(r);
    return r;
  };
  auto r = inv(R"({"key": "a:1"})");
  CHECK(r->status == 200);
  CHECK(parse(r->body)["invalidated"].GetUint64() == 1);
  CHECK(c.Get("/api/v1/entries/a:1")->status == 404);
  auto stale = c.Get("/api/v1/entries/a:1?include_stale=1");
  CHECK(stale->status == 200);
  CHECK(stale->get_header_value("X-Larder-Status") == "invalid");
  CHECK(parse(inv(R"({"pattern": "a:*"})")->body)["invalidated"].GetUint64() == 1);
  CHECK(parse(inv(R"({"category": "cat-b"})")->body)["invalidated"].GetUint64() == 1);
  CHECK(inv("{not json")->status == 400);
  CHECK(inv(R"({"key": "a", "pattern": "b"})")->status == 400);
  CHECK(inv(R"({"key": 3})")->status == 400);
  CHECK(inv(R"({"pattern": "[x"})")->status == 400);
  CHECK(inv("[]")->status == 400);

  auto cleanup = c.Post("/api/v1/cleanup", "", "application/json");
  CHECK(cleanup->status == 200);
  CHECK(parse(cleanup->body)["removed"].GetUint64() == 3);  // the three invalid entries

  REQUIRE(c.Put("/api/v1/entries/c:1?category=keep", "v", "text/plain")->status == 204);
  REQUIRE(c.Put("/api/v1/entries/c:2?category=drop", "v", "text/plain")->status == 204);
  auto by_cat = c.Post("/api/v1/clear", R"({"category": "drop"})", "application/json");
  CHECK(parse(by_cat->body)["removed"].GetUint64() == 1);
  CHECK(c.Post("/api/v1/clear", R"({"what": "x"})", "application/json")->status == 400);
  auto all = c.Post("/api/v1/clear", "", "application/json");
  CHECK(parse(all->body)["removed"].GetUint64() == 2);  // c:1 and the namespace's k
  CHECK(c.Get("/api/v1/ns/plugin-x/entries/k")->status == 404);
  CHECK(parse(c.Get("/api/v1/stats")->body)["total_entries"].GetUint64() == 0);
}

TEST_CASE("serve: a namespace's paths act on that namespace only") {
  TempDir dir;
  Server s(make_cache(dir));
  auto c = s.client();
  REQUIRE(c.Put("/api/v1/ns/plugin-x/entries/k?category=p", "in-x", "text/plain")->status == 204);
  REQUIRE(c.Put("/api/v1/entries/k", "outside", "text/plain")->status == 204);
  REQUIRE(c.Put("/api/v1/ns/other/entries/k2", "v", "text/plain")->status == 204);
  CHECK(c.Get("/api/v1/ns/plugin-x/entries/k")->body == "in-x");
  CHECK(c.Get("/api/v1/entries/k")->body == "outside");
  auto list = parse(c.Get("/api/v1/ns/plugin-x/entries")->body);
  REQUIRE(list["entries"].Size() == 1);
  CHECK(std::string(list["entries"][0]["key"].GetString()) == "k");
  auto st = parse(c.Get("/api/v1/ns/plugin-x/stats")->body);
  CHECK(st["total_entries"].GetUint64() == 1);
  CHECK(st["hit_count"].GetUint64() == 1);
  CHECK(st["categories"]["p"].GetUint64() == 1);
  auto inv = c.Post("/api/v1/ns/plugin-x/invalidate", R"({"pattern": "*"})", "application/json");
  CHECK(parse(inv->body)["invalidated"].GetUint64() == 1);
  CHECK(c.Get("/api/v1/entries/k")->status == 200);
  auto cleared = c.Post("/api/v1/ns/plugin-x/clear", "", "application/json");
  CHECK(parse(cleared->body)["removed"].GetUint64() == 1);
  CHECK(c.Get("/api/v1/ns/other/entries/k2")->status == 200);
  CHECK(c.Get("/api/v1/entries/k")->status == 200);
  CHECK(c.Post("/api/v1/ns/plugin-x/cleanup", "", "application/json")->status == 404);
  CHECK(c.Get("/api/v1/ns/%00x/stats")->status == 400);
}

TEST_CASE("serve: /metrics is the Prometheus text of cachectl stats") {
  TempDir dir;
  Server s(make_cache(dir));
  auto c = s.client();
  REQUIRE(c.Put("/api/v1/entries/k", "v", "text/plain")->status == 204);
  auto m = c.Get("/metrics");
  REQUIRE(m);
  CHECK(m->status == 200);
  CHECK(m->get_header_value("Content-Type").starts_with("text/plain; version=0.0.4"));
  CHECK(m->body.find("# TYPE larder_entries gauge") != std::string::npos);
  CHECK(std::regex_search(m->body, std::regex(R"(\nlarder_entries\{cache="[^"]+"\} 1\n)")));
  CHECK(m->body.find("larder_sets_total") != std::string::npos);
}

TEST_CASE("serve: bad input gets 400, 404, 405, 413 or 431, and the server goes on") {
  TempDir dir;
  Server s(make_cache(dir, 4096));  // values up to the store's byte limit: 4096
  auto c = s.client();
  CHECK(c.Get("/nowhere")->status == 404);
  CHECK(c.Get("/api/v1/nothing")->status == 404);
  auto del = c.Delete("/api/v1/stats");
  CHECK(del->status == 405);
  CHECK(del->get_header_value("Allow") == "GET, HEAD");
  CHECK(c.Put("/api/v1/invalidate", "{}", "application/json")->status == 405);
  CHECK(error_of(c.Get("/api/v1/entries/bad%zzkey")).find("percent-encoding") != std::string::npos);
  CHECK(c.Get("/api/v1/entries/bad%4")->status == 400);
  CHECK(c.Get("/api/v1/entries?pattern=%G1")->status == 400);
  CHECK(c.Put("/api/v1/entries/k?ttl=-1", "v", "text/plain")->status == 400);
  CHECK(c.Put("/api/v1/entries/k?ttl=soon", "v", "text/plain")->status == 400);
  CHECK(c.Put("/api/v1/entries/k?ttl=nan", "v", "text/plain")->status == 400);
  CHECK(c.Get("/api/v1/entries/" + std::string(kMaxKeyBytes + 1, 'k'))->status == 400);
  CHECK(c.Put("/api/v1/entries/" + std::string(kMaxKeyBytes, 'k'), "v", "text/plain")->status ==
        204);
  auto big = c.Put("/api/v1/entries/big", std::string(5000, 'x'), "application/octet-stream");
  CHECK(big->status == 413);
  CHECK(c.Get("/api/v1/entries/big")->status == 404);

  // A 2 GB Content-Length with a small body: 413 at once, nothing allocated, connection closed.
  {
    const int fd = connect_to(s.port());
    send_text(fd,
              "PUT /api/v1/entries/k HTTP/1.1\r\nHost: x\r\nContent-Length: 2000000000\r\n\r\n"
              "small");
    const std::string reply = read_all(fd);
    ::close(fd);
    CHECK(reply.starts_with("HTTP/1.1 413"));
    CHECK(reply.find("Connection: close") != std::string::npos);
  }
  // A head of 70 KB: 431 and the connection closed.
  {
    const int fd = connect_to(s.port());
    send_text(fd, "GET /api/v1/stats HTTP/1.1\r\nHost: x\r\nX-Big: " + std::string(70'000, 'a') +
                      "\r\n\r\n");
    const std::string reply = read_all(fd);
    ::close(fd);
    CHECK(reply.starts_with("HTTP/1.1 431"));
  }
  // Garbage instead of a request line.
  {
    const int fd = connect_to(s.port());
    send_text(fd, "\x01\x02 not http\r\n\r\n");
    read_all(fd);
    ::close(fd);
  }
  CHECK(c.Get("/api/v1/stats")->status == 200);  // still serving
}

TEST_CASE("serve: tokens give roles and namespaces; 401 and 403 otherwise") {
  TempDir dir;
  const auto root = make_cache(dir);
  Server s(root, {"--tokens", all_tokens(dir)});
  auto anon = s.client();
  auto none = anon.Get("/api/v1/stats");
  CHECK(none->status == 401);
  CHECK(none->get_header_value("WWW-Authenticate").starts_with("Bearer"));
  CHECK(s.client("not-a-token-at-all-000").Get("/api/v1/stats")->status == 401);
  httplib::Headers basic = {{"Authorization", "Basic YTpi"}};
  CHECK(anon.Get("/api/v1/stats", basic)->status == 401);
  // The dashboard page itself needs no token.
  auto page = anon.Get("/");
  CHECK(page->status == 200);
  CHECK(page->get_header_value("Content-Type").starts_with("text/html"));

  auto read = s.client(kRead), write = s.client(kWrite), admin = s.client(kAdmin),
       plugin = s.client(kPlugin);
  CHECK(read.Get("/api/v1/stats")->status == 200);
  CHECK(read.Get("/metrics")->status == 200);
  CHECK(read.Get("/api/v1/entries")->status == 200);
  CHECK(read.Put("/api/v1/entries/k", "v", "text/plain")->status == 403);
  CHECK(read.Delete("/api/v1/entries/k")->status == 403);
  CHECK(read.Post("/api/v1/invalidate", R"({"key": "k"})", "application/json")->status == 403);

  CHECK(write.Put("/api/v1/entries/k", "v", "text/plain")->status == 204);
  CHECK(read.Get("/api/v1/entries/k")->status == 200);
  CHECK(write.Post("/api/v1/invalidate", R"({"key": "k"})", "application/json")->status == 200);
  CHECK(write.Post("/api/v1/clear", "", "application/json")->status == 403);
  CHECK(write.Post("/api/v1/cleanup", "", "application/json")->status == 403);
  CHECK(admin.Post("/api/v1/cleanup", "", "application/json")->status == 200);
  CHECK(admin.Post("/api/v1/clear", "", "application/json")->status == 200);

  // Confined to plugin-x: its own namespace only.
  CHECK(plugin.Put("/api/v1/ns/plugin-x/entries/k", "v", "text/plain")->status == 204);
  CHECK(plugin.Get("/api/v1/ns/plugin-x/entries/k")->status == 200);
  CHECK(plugin.Get("/api/v1/ns/plugin-x/stats")->status == 200);
  CHECK(plugin.Post("/api/v1/ns/plugin-x/invalidate", R"({"key": "k"})", "application/json")
            ->status == 200);
  CHECK(plugin.Post("/api/v1/ns/plugin-x/clear", "", "application/json")->status == 403);
  CHECK(plugin.Get("/api/v1/entries")->status == 403);
  CHECK(plugin.Get("/api/v1/stats")->status == 403);
  CHECK(plugin.Get("/metrics")->status == 403);
  CHECK(plugin.Get("/api/v1/ns/plugin-y/entries/k")->status == 403);
  CHECK(plugin.Put("/api/v1/ns/plugin-y/entries/k", "v", "text/plain")->status == 403);
  // A refused PUT's body is not taken for the next request on the same connection.
  CHECK(plugin.Get("/api/v1/ns/plugin-x/stats")->status == 200);
}

TEST_CASE("serve: refuses an unsafe tokens file and a public address without tokens") {
  TempDir dir;
  const auto root = make_cache(dir);
  auto run = [&](std::vector<std::string> extra) {
    std::vector<std::string> a = {"--root", root.string(), "serve"};
    a.insert(a.end(), extra.begin(), extra.end());
    Child c(LARDER_CACHECTL, a, true);
    const int status = c.wait_at_most(std::chrono::seconds(20));
    return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  };
  CHECK(run({"--listen", "0.0.0.0:0"}) == 2);
  CHECK(run({"--listen", "127.0.0.1:0", "--tokens",
             tokens_file(dir, std::string(kAdmin) + " admin\n", 0644)}) == 2);
  CHECK(run({"--listen", "127.0.0.1:0", "--tokens",
             tokens_file(dir, std::string(kAdmin) + " boss\n")}) == 2);
  CHECK(run({"--listen", "127.0.0.1:0", "--tokens", (dir / "missing").string()}) == 2);
  CHECK(run({"--listen", "nowhere"}) == 2);
  CHECK(run({"--listen", "127.0.0.1:0", "--socket", (dir / "s").string()}) == 2);
}

TEST_CASE("serve: SIGINT stops it with exit 0") {
  TempDir dir;
  Server s(make_cache(dir));
  CHECK(s.client().Get("/api/v1/stats")->status == 200);
  const int status = s.stop(SIGINT);
  CHECK(WIFEXITED(status));
  CHECK(WEXITSTATUS(status) == 0);
}

TEST_CASE("serve: 300 silent or slow connections do not keep a client from being served") {
  TempDir dir;
  Server s(make_cache(dir));
  std::vector<int> idle;
  for (int i = 0; i < 300; ++i) idle.push_back(connect_to(s.port()));
  // Half of them start a request and trickle it.
  for (std::size_t i = 0; i < idle.size(); i += 2) send_text(idle[i], "GET /api/v1/st");
  auto c = s.client();
  const auto start = std::chrono::steady_clock::now();
  auto r = c.Get("/api/v1/stats");
  const auto took = std::chrono::steady_clock::now() - start;
  REQUIRE(r);
  CHECK(r->status == 200);
  CHECK(took < std::chrono::seconds(1));
  for (std::size_t i = 0; i < idle.size(); i += 2) send_text(idle[i], "a");
  CHECK(c.Get("/api/v1/stats")->status == 200);
  // The server closes the silent ones on its own (idle for 3 s; the trickling ones when their
  // head's 10 s run out): every connection ends with EOF from the server's side.
  for (const int fd : idle) {
    CHECK(read_all(fd).empty());
    ::close(fd);
  }
}

TEST_CASE("serve: 100 concurrent clients for 5 s lose nothing") {
  TempDir dir;
  Server s(make_cache(dir));
  const auto until = std::chrono::steady_clock::now() + std::chrono::seconds(5);
  std::atomic<int> failures{0};
  std::vector<int> written(100, 0);
  std::vector<std::thread> clients;
  for (int t = 0; t < 100; ++t)
    clients.emplace_back([&, t] {
      auto c = s.client();
      for (int i = 0; std::chrono::steady_clock::now() < until; ++i) {
        const std::string key = fmt::format("/api/v1/entries/c{}-{}", t, i);
        auto put = c.Put(key + "?ttl=0", fmt::format("value {} {}", t, i), "text/plain");
        if (!put || put->status != 204) {
          ++failures;
          break;
        }
        written[static_cast<std::size_t>(t)] = i + 1;
        auto got = c.Get(key);
        if (!got || got->body != fmt::format("value {} {}", t, i)) ++failures;
      }
    });
  for (auto& t : clients) t.join();
  CHECK(failures == 0);
  std::uint64_t total = 0;
  for (int n : written) total += static_cast<std::uint64_t>(n);
  auto stats = parse(s.client().Get("/api/v1/stats")->body);
  CHECK(stats["total_entries"].GetUint64() == total);
  CHECK(total > 100);
  MESSAGE(total << " entries written and read back by 100 clients in 5 s");
}

TEST_CASE("serve: a shared cache written by another process is visible through the server") {
  TempDir dir;
  Config cfg;
  cfg.cache_root = dir / "cache";
  cfg.strategy = Strategy::shared;
  cfg.cleanup_interval = std::chrono::seconds(0);
  Cache owner = Cache::open(cfg);  // this process owns the store; the server is its client
  REQUIRE(owner.set("from-owner", "hello"));
  Server s(cfg.cache_root);
  auto c = s.client();
  auto got = c.Get("/api/v1/entries/from-owner");
  REQUIRE(got);
  CHECK(got->status == 200);
  CHECK(got->body == "hello");
  REQUIRE(c.Put("/api/v1/entries/from-http?ttl=0", "world", "text/plain")->status == 204);
  CHECK(owner.get("from-http") == "world");
  CHECK(owner.stats().hit_count >= 1);  // the server's GET counted in the owner's store
}

TEST_CASE("serve: the dashboard renders in headless Chromium with the count and the chart") {
  TempDir dir;
  const auto root = make_cache(dir);
  Server s(root, {"--tokens", all_tokens(dir)});
  auto c = s.client(kAdmin);
  for (int i = 0; i < 3; ++i)
    REQUIRE(c.Put(fmt::format("/api/v1/entries/k{}", i), "v", "text/plain")->status == 204);
  REQUIRE(c.Get("/api/v1/entries/k0")->status == 200);
  REQUIRE(c.Get("/api/v1/entries/nope")->status == 404);
  const std::string url = fmt::format("http://127.0.0.1:{}/#token={}", s.port(), kAdmin);
  auto chromium = [&](const std::vector<std::string>& what, const std::filesystem::path& out) {
    std::vector<std::string> a = {"--headless",
                                  "--no-sandbox",
                                  "--disable-gpu",
                                  "--no-first-run",
                                  "--user-data-dir=" + (dir / "profile").string(),
                                  "--virtual-time-budget=5000",
                                  "--window-size=1200,900"};
    a.insert(a.end(), what.begin(), what.end());
    a.push_back(url);
    const pid_t pid = ::fork();
    REQUIRE(pid >= 0);
    if (pid == 0) {
      const int fd = ::open(out.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0600);
      const int null = ::open("/dev/null", O_WRONLY);
      ::dup2(fd, STDOUT_FILENO);
      ::dup2(null, STDERR_FILENO);
      std::vector<char*> argv = {const_cast<char*>("chromium")};
      for (auto& x : a) argv.push_back(x.data());
      argv.push_back(nullptr);
      ::execvp("chromium", argv.data());
      ::_exit(127);
    }
    return wait_bounded(pid);
  };
  const auto dom_file = dir / "dom.html";
  const int status = chromium({"--dump-dom"}, dom_file);
  REQUIRE(WIFEXITED(status));
  REQUIRE(WEXITSTATUS(status) == 0);
  std::ifstream in(dom_file);
  std::stringstream dom;
  dom << in.rdbuf();
  const std::string html = dom.str();
  CHECK(html.find("data-ready=\"true\"") != std::string::npos);
  CHECK(std::regex_search(html, std::regex(R"(id="entries-count">3<)")));
  CHECK(std::regex_search(html, std::regex(R"(id="hit-rate">50\.0 %<)")));
  // The chart's line starts at the rate so far, 50 %: y = 115 - 0.5 x 110.
  CHECK(std::regex_search(
      html, std::regex(R"(<polyline id="hit-line"[^>]*points="0\.0,60\.0 [0-9.]+,[0-9.]+)")));
  CHECK(html.find(">k0<") != std::string::npos);  // the most read entries
  const auto shot = dir / "screenshot.png";
  const int shot_status = chromium({"--screenshot=" + shot.string()}, dir / "shot.out");
  CHECK(WIFEXITED(shot_status));
  CHECK(std::filesystem::exists(shot));
  CHECK(std::filesystem::file_size(shot) > 10'000);
}

TEST_CASE("serve: on a Unix socket of mode 0600, removed when it stops") {
  TempDir dir;
  const auto root = make_cache(dir);
  const auto path = dir / "serve.sock";
  Child child(LARDER_CACHECTL, {"--root", root.string(), "serve", "--socket", path.string()}, true);
  REQUIRE(child.wait_for_line_with("listening on unix:" + path.string()));
  struct stat st {};
  REQUIRE(::stat(path.c_str(), &st) == 0);
  CHECK(S_ISSOCK(st.st_mode));
  CHECK((st.st_mode & 0777) == 0600);
  const int fd = ::socket(AF_UNIX, SOCK_STREAM, 0);
  REQUIRE(fd >= 0);
  sockaddr_un a{};
  a.sun_family = AF_UNIX;
  std::snprintf(a.sun_path, sizeof a.sun_path, "%s", path.c_str());
  REQUIRE(::connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) == 0);
  timeval tv{20, 0};
  ::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  send_text(fd, "GET /api/v1/stats HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
  const std::string reply = read_all(fd);
  ::close(fd);
  CHECK(reply.starts_with("HTTP/1.1 200"));
  CHECK(reply.find("\"total_entries\"") != std::string::npos);
  child.signal(SIGTERM);
  const int status = child.wait_at_most(std::chrono::seconds(20));
  CHECK(WIFEXITED(status));
  CHECK(WEXITSTATUS(status) == 0);
  CHECK_FALSE(std::filesystem::exists(path));
}

TEST_CASE("serve: a keep-alive connection is not held back by Nagle's algorithm") {
  // A response is written in pieces (head, body). Without TCP_NODELAY on the served socket the
  // body waits for the client's delayed ACK: 40 ms a request, over 1 s for these 25. With it,
  // a few ms; the bound leaves a wide margin for a slow machine.
  TempDir dir;
  Server s(make_cache(dir));
  auto c = s.client();
  c.set_keep_alive(true);
  c.set_tcp_nodelay(true);
  REQUIRE(c.Put("/api/v1/entries/k", std::string(1024, 'v'), "text/plain")->status == 204);
  REQUIRE(c.Get("/api/v1/entries/k")->status == 200);  // connected
  const auto start = std::chrono::steady_clock::now();
  for (int i = 0; i < 25; ++i) REQUIRE(c.Get("/api/v1/entries/k")->status == 200);
  const auto took = std::chrono::steady_clock::now() - start;
  CHECK(took < std::chrono::milliseconds(500));
}
