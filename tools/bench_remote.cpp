// larder-bench remote: the remote tier beside a bare hiredis round trip to the same Redis, in
// the same run (docs/performance.md, "Remote tier"). Rows, each the median of per-round figures:
//   bare GET / bare SET       one hiredis command per key, one connection (the floor)
//   local hit                 Cache::get of a key held locally (no Redis involved)
//   remote hit                Cache::get on a cache that does not hold the key: a local miss,
//                             a remote GET, the local copy stored
//   set (both tiers)          Cache::set with a remote: the local write plus one pipelined
//                             round trip (SET, SADD, XADD)
//   local set                 Cache::set without a remote (for the target's sum)
//   get_many / set_many       batches of 100, the remote's share pipelined
// Ratios: remote hit / bare GET (target <= 1.3), set / (bare SET + local set) (<= 1.5); batched
// ops/s (>= 100k). Without --url it starts redis-server (from PATH) on a Unix socket in a
// temporary directory, without persistence.
#include "bench_remote.hpp"

#include <fcntl.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <hiredis/hiredis.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <functional>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include <fmt/format.h>

#include "larder/larder.hpp"
#include "remote/url.hpp"

namespace fs = std::filesystem;

namespace {

double seconds_of(const std::function<void()>& body) {
  const auto t0 = std::chrono::steady_clock::now();
  body();
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v.empty() ? 0 : v[v.size() / 2];
}

// A redis-server of our own, stopped when this goes.
class OwnRedis {
 public:
  explicit OwnRedis(const fs::path& dir) : socket_((dir / "redis.sock").string()) {
    fs::create_directories(dir);
    pid_ = ::fork();
    if (pid_ < 0) throw std::runtime_error("fork failed");
    if (pid_ == 0) {
      ::prctl(PR_SET_PDEATHSIG, SIGKILL);  // dies with the benchmark
      const int null = ::open("/dev/null", O_WRONLY);
      if (null >= 0) {
        ::dup2(null, STDOUT_FILENO);
        ::dup2(null, STDERR_FILENO);
      }
      ::execlp("redis-server", "redis-server", "--port", "0", "--unixsocket", socket_.c_str(),
               "--save", "", "--appendonly", "no", "--dir", dir.c_str(), nullptr);
      ::_exit(127);
    }
    for (int i = 0; i < 1000; ++i) {
      const timeval tv{0, 200'000};
      redisContext* c = redisConnectUnixWithTimeout(socket_.c_str(), tv);
      const bool up = c != nullptr && c->err == 0;
      if (c != nullptr) redisFree(c);
      if (up) return;
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    throw std::runtime_error("redis-server (from PATH) did not start");
  }
  ~OwnRedis() {
    ::kill(pid_, SIGKILL);
    ::waitpid(pid_, nullptr, 0);
  }
  OwnRedis(const OwnRedis&) = delete;
  OwnRedis& operator=(const OwnRedis&) = delete;
  std::string url() const { return "redis+unix://" + socket_; }

 private:
  std::string socket_;
  pid_t pid_ = -1;
};

redisContext* connect_bare(const larder::remote::RemoteUrl& u) {
  const timeval tv{1, 0};
  redisContext* c = u.transport == larder::remote::RemoteUrl::Transport::tcp
                        ? redisConnectWithTimeout(u.host.c_str(), u.port, tv)
                        : redisConnectUnixWithTimeout(u.path.c_str(), tv);
  if (c == nullptr || c->err != 0) throw std::runtime_error("cannot connect to Redis");
  auto run = [&](std::vector<std::string> args) {
    std::vector<const char*> argv;
    std::vector<std::size_t> lens;
    for (auto& a : args) {
      argv.push_back(a.data());
      lens.push_back(a.size());
    }
    auto* r = static_cast<redisReply*>(
        redisCommandArgv(c, static_cast<int>(argv.size()), argv.data(), lens.data()));
    if (r != nullptr) freeReplyObject(r);
  };
  if (!u.password.empty()) {
    if (u.user.empty())
      run({"AUTH", u.password});
    else
      run({"AUTH", u.user, u.password});
  }
  if (u.db != 0) run({"SELECT", std::to_string(u.db)});
  return c;
}

}  // namespace

int bench_remote(const std::string& url_in, std::size_t keys, std::size_t value_size, int rounds) {
  const fs::path tmp =
      fs::temp_directory_path() / fmt::format("larder-bench-remote-{}", ::getpid());
  fs::create_directories(tmp);
  std::unique_ptr<OwnRedis> own;
  std::string url = url_in;
  try {
    if (url.empty()) {
      own = std::make_unique<OwnRedis>(tmp / "redis");
      url = own->url();
    }
    auto parsed = larder::remote::parse_url(url);
    if (!parsed) {
      std::fprintf(stderr, "larder-bench remote: %s\n", parsed.error().c_str());
      return 2;
    }
    redisContext* bare = connect_bare(*parsed);
    const std::string value(value_size, 'v');
    std::vector<double> r_get, r_set, r_local_hit, r_remote_hit, r_set_both, r_local_set,
        r_get_many, r_set_many, ratio_hit, ratio_set;
    for (int round = 0; round < rounds; ++round) {
      const std::string prefix = fmt::format("bench{}", round);
      const std::string rurl =
          url + (url.find('?') == std::string::npos ? "?" : "&") + "prefix=" + prefix;
      auto config = [&](const std::string& name, bool with_remote) {
        larder::Config c;
        c.cache_root = tmp / fmt::format("{}-{}", name, round);
        c.strategy = larder::Strategy::process_isolated;
        c.max_entries = 0;
        c.max_size_bytes = 0;
        c.cleanup_interval = std::chrono::seconds(0);
        if (with_remote) c.remote = rurl;
        return c;
      };
      const double bare_set = seconds_of([&] {
        for (std::size_t i = 0; i < keys; ++i) {
          const std::string k = fmt::format("bare:{}:{}", round, i);
          auto* r = static_cast<redisReply*>(
              redisCommand(bare, "SET %b %b", k.data(), k.size(), value.data(), value.size()));
          if (r != nullptr) freeReplyObject(r);
        }
      });
      const double bare_get = seconds_of([&] {
        for (std::size_t i = 0; i < keys; ++i) {
          const std::string k = fmt::format("bare:{}:{}", round, i);
          auto* r = static_cast<redisReply*>(redisCommand(bare, "GET %b", k.data(), k.size()));
          if (r != nullptr) freeReplyObject(r);
        }
      });
      larder::Cache local_only = larder::Cache::open(config("local", false));
      const double local_set = seconds_of([&] {
        for (std::size_t i = 0; i < keys; ++i) (void)local_only.set(fmt::format("k{}", i), value);
      });
      larder::Cache a = larder::Cache::open(config("a", true));
      const double set_both = seconds_of([&] {
        for (std::size_t i = 0; i < keys; ++i) (void)a.set(fmt::format("k{}", i), value);
      });
      const double local_hit = seconds_of([&] {
        for (std::size_t i = 0; i < keys; ++i) (void)a.get(fmt::format("k{}", i));
      });
      larder::Cache b = larder::Cache::open(config("b", true));
      const double remote_hit = seconds_of([&] {
        for (std::size_t i = 0; i < keys; ++i) (void)b.get(fmt::format("k{}", i));
      });
      const larder::Stats bs = b.stats();
      if (bs.remote_hit_count != keys)
        std::fprintf(stderr, "larder-bench remote: round %d: %llu remote hits of %zu gets\n", round,
                     static_cast<unsigned long long>(bs.remote_hit_count), keys);
      if (bs.total_entries != keys)  // stats() stores the copies still waiting first
        std::fprintf(stderr,
                     "larder-bench remote: round %d: %llu local copies of %zu remote hits\n", round,
                     static_cast<unsigned long long>(bs.total_entries), keys);
      constexpr std::size_t kBatch = 100;
      const double set_many = seconds_of([&] {
        for (std::size_t i = 0; i < keys; i += kBatch) {
          std::vector<std::pair<std::string, std::string>> items;
          for (std::size_t j = i; j < std::min(keys, i + kBatch); ++j)
            items.emplace_back(fmt::format("m{}", j), value);
          (void)a.set_many(items);
        }
      });
      larder::Cache c = larder::Cache::open(config("c", true));
      const double get_many = seconds_of([&] {
        for (std::size_t i = 0; i < keys; i += kBatch) {
          std::vector<std::string> ks;
          for (std::size_t j = i; j < std::min(keys, i + kBatch); ++j)
            ks.push_back(fmt::format("m{}", j));
          (void)c.get_many(ks);
        }
      });
      const double n = static_cast<double>(keys);
      r_get.push_back(n / bare_get);
      r_set.push_back(n / bare_set);
      r_local_hit.push_back(n / local_hit);
      r_remote_hit.push_back(n / remote_hit);
      r_set_both.push_back(n / set_both);
      r_local_set.push_back(n / local_set);
      r_get_many.push_back(n / get_many);
      r_set_many.push_back(n / set_many);
      ratio_hit.push_back(remote_hit / bare_get);
      ratio_set.push_back(set_both / (bare_set + local_set));
    }
    redisFree(bare);
    const auto us = [](double ops) { return 1e6 / ops; };
    std::printf("remote tier on %s, %zu keys of %zu B, medians of %d rounds\n",
                parsed->display().c_str(), keys, value_size, rounds);
    const auto row = [&](const char* name, const std::vector<double>& ops) {
      std::printf("  %-22s %10.0f ops/s %8.1f us/op\n", name, median(ops), us(median(ops)));
    };
    row("bare GET (hiredis)", r_get);
    row("bare SET (hiredis)", r_set);
    row("local hit", r_local_hit);
    row("remote hit", r_remote_hit);
    row("local set (no remote)", r_local_set);
    row("set (both tiers)", r_set_both);
    row("get_many x100 (remote)", r_get_many);
    row("set_many x100 (both)", r_set_many);
    std::printf("  remote hit / bare GET            %.2f  (target <= 1.3)\n", median(ratio_hit));
    std::printf("  set / (bare SET + local set)     %.2f  (target <= 1.5)\n", median(ratio_set));
    std::printf("  batched get_many %.0f ops/s, set_many %.0f ops/s  (target >= 100000)\n",
                median(r_get_many), median(r_set_many));
  } catch (const std::exception& e) {
    std::fprintf(stderr, "larder-bench remote: %s\n", e.what());
    own.reset();
    std::error_code ec;
    fs::remove_all(tmp, ec);
    return 1;
  }
  own.reset();
  std::error_code ec;
  fs::remove_all(tmp, ec);
  return 0;
}
