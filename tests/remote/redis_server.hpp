// A real redis-server for the remote-tier tests: started on a Unix socket in a temporary
// directory (no TCP port, no persistence), stopped with the test. It can be killed, stopped
// (SIGSTOP), continued and started again on the same socket. Thread-safety: one test thread.
#pragma once

#include <fcntl.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <hiredis/hiredis.h>

#include <chrono>
#include <filesystem>
#include <memory>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

namespace larder::test {

class RedisServer {
 public:
  // `extra`: more redis-server arguments (e.g. {"--requirepass", "secret"}).
  explicit RedisServer(std::filesystem::path dir, std::vector<std::string> extra = {})
      : dir_(std::move(dir)), extra_(std::move(extra)) {
    start();
  }
  ~RedisServer() { kill(); }
  RedisServer(const RedisServer&) = delete;
  RedisServer& operator=(const RedisServer&) = delete;

  std::string socket() const { return (dir_ / "redis.sock").string(); }
  // redis+unix:// URL of this server with `options` ("prefix=a&operation_timeout=200").
  std::string url(const std::string& options = {}) const {
    return "redis+unix://" + socket() + (options.empty() ? "" : "?" + options);
  }

  void start() {
    std::filesystem::create_directories(dir_);
    std::vector<std::string> args{LARDER_REDIS_SERVER,
                                  "--port",
                                  "0",
                                  "--unixsocket",
                                  socket(),
                                  "--unixsocketperm",
                                  "700",
                                  "--save",
                                  "",
                                  "--appendonly",
                                  "no",
                                  "--dir",
                                  dir_.string(),
                                  "--loglevel",
                                  "warning"};
    args.insert(args.end(), extra_.begin(), extra_.end());
    pid_ = ::fork();
    if (pid_ < 0) throw std::runtime_error("fork failed");
    if (pid_ == 0) {
      // The server dies with the test process, even one killed with SIGKILL.
      ::prctl(PR_SET_PDEATHSIG, SIGKILL);
      const int null = ::open("/dev/null", O_WRONLY);
      if (null >= 0) {
        ::dup2(null, STDOUT_FILENO);
        ::dup2(null, STDERR_FILENO);
      }
      std::vector<char*> argv;
      for (auto& a : args) argv.push_back(a.data());
      argv.push_back(nullptr);
      ::execv(LARDER_REDIS_SERVER, argv.data());
      ::_exit(127);
    }
    // Ready once it answers PING (at most 10 s).
    const auto until = std::chrono::steady_clock::now() + std::chrono::seconds(10);
    while (std::chrono::steady_clock::now() < until) {
      if (ping()) return;
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    throw std::runtime_error("redis-server did not start");
  }
  // Answers (PONG, or NOAUTH from a server that wants a password).
  bool ping() const {
    const std::string r = command({"PING"});
    return r == "PONG" || r.starts_with("NOAUTH");
  }
  // One command on a fresh connection; the reply as text (string, status, integer or error).
  std::string command(const std::vector<std::string>& args) const {
    const timeval tv{1, 0};
    redisContext* c = redisConnectUnixWithTimeout(socket().c_str(), tv);
    if (c == nullptr || c->err != 0) {
      if (c != nullptr) redisFree(c);
      return "(no connection)";
    }
    redisSetTimeout(c, tv);
    std::vector<const char*> argv;
    std::vector<std::size_t> lens;
    for (const auto& a : args) {
      argv.push_back(a.data());
      lens.push_back(a.size());
    }
    auto* r = static_cast<redisReply*>(
        redisCommandArgv(c, static_cast<int>(argv.size()), argv.data(), lens.data()));
    std::string out = "(no reply)";
    if (r != nullptr) {
      if (r->type == REDIS_REPLY_INTEGER)
        out = std::to_string(r->integer);
      else if (r->type == REDIS_REPLY_NIL)
        out = "(nil)";
      else if (r->str != nullptr)
        out.assign(r->str, r->len);
      else
        out = "(array)";
      freeReplyObject(r);
    }
    redisFree(c);
    return out;
  }
  void kill() {
    if (pid_ <= 0) return;
    ::kill(pid_, SIGKILL);
    ::waitpid(pid_, nullptr, 0);
    pid_ = -1;
    std::error_code ec;
    std::filesystem::remove(socket(), ec);
  }
  void stop() const {
    ::kill(pid_, SIGSTOP);
    int status = 0;
    ::waitpid(pid_, &status, WUNTRACED);
  }
  void cont() const { ::kill(pid_, SIGCONT); }

 private:
  std::filesystem::path dir_;
  std::vector<std::string> extra_;
  pid_t pid_ = -1;
};

}  // namespace larder::test
