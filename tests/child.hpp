// A child process running larder-test-helper, for the multi-process tests: its stdout lines are
// collected by a reader thread, its stdin stays open until close_stdin() (helpers in "hold" mode
// wait for that), and it can be signalled and reaped. Thread-safety: lines() and wait_for_line()
// may be called while the reader thread runs.
#pragma once

#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <fcntl.h>

#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

namespace larder::test {

class Child {
 public:
  explicit Child(const std::vector<std::string>& args, bool quiet_stderr = true)
      : Child(LARDER_TEST_HELPER, args, quiet_stderr) {}
  // Runs `program` (a path) with `args`.
  Child(const char* program, const std::vector<std::string>& args, bool quiet_stderr) {
    int out[2], in[2];
    // Close-on-exec: a later child must not inherit this one's pipe ends (it held this child's
    // stdin open, so close_stdin() gave no EOF until that later child exited: children told to
    // go at once ran one after another).
    if (::pipe2(out, O_CLOEXEC) != 0 || ::pipe2(in, O_CLOEXEC) != 0)
      throw std::runtime_error("pipe failed");
    pid_ = ::fork();
    if (pid_ < 0) throw std::runtime_error("fork failed");
    if (pid_ == 0) {
      ::dup2(out[1], STDOUT_FILENO);
      ::dup2(in[0], STDIN_FILENO);
      if (quiet_stderr) {
        const int null = ::open("/dev/null", O_WRONLY);
        if (null >= 0) ::dup2(null, STDERR_FILENO);
      }
      ::close(out[0]);
      ::close(out[1]);
      ::close(in[0]);
      ::close(in[1]);
      std::vector<char*> argv;
      argv.push_back(const_cast<char*>(program));
      for (const auto& a : args) argv.push_back(const_cast<char*>(a.c_str()));
      argv.push_back(nullptr);
      ::execv(program, argv.data());
      ::_exit(127);
    }
    ::close(out[1]);
    ::close(in[0]);
    stdin_ = in[1];
    reader_ = std::thread([this, fd = out[0]] {
      FILE* f = ::fdopen(fd, "r");
      char line[512];
      while (std::fgets(line, sizeof line, f) != nullptr) {
        std::string s(line);
        if (!s.empty() && s.back() == '\n') s.pop_back();
        std::lock_guard lock(mu_);
        lines_.push_back(std::move(s));
        cv_.notify_all();
      }
      std::fclose(f);
      std::lock_guard lock(mu_);
      eof_ = true;
      cv_.notify_all();
    });
  }
  ~Child() {
    if (pid_ > 0 && !reaped_) {
      ::kill(pid_, SIGKILL);
      wait();
    }
    close_stdin();
    if (reader_.joinable()) reader_.join();
  }
  Child(const Child&) = delete;
  Child& operator=(const Child&) = delete;

  pid_t pid() const { return pid_; }
  void signal(int sig) const { ::kill(pid_, sig); }
  // Stops the child with SIGSTOP and returns once it is stopped (signals arrive asynchronously).
  bool stop() {
    ::kill(pid_, SIGSTOP);
    int status = 0;
    return ::waitpid(pid_, &status, WUNTRACED) == pid_ && WIFSTOPPED(status);
  }
  void close_stdin() {
    if (stdin_ >= 0) ::close(stdin_);
    stdin_ = -1;
  }
  // Reaps the child; returns its wait status.
  int wait() {
    if (!reaped_) {
      ::waitpid(pid_, &status_, 0);
      reaped_ = true;
    }
    if (reader_.joinable()) reader_.join();
    return status_;
  }
  // Reaps the child, killing it (SIGKILL) if it has not exited within `timeout`: a hang is a
  // failure, not a stuck suite. Returns its wait status.
  int wait_at_most(std::chrono::seconds timeout) {
    const auto until = std::chrono::steady_clock::now() + timeout;
    while (!reaped_) {
      if (::waitpid(pid_, &status_, WNOHANG) == pid_) {
        reaped_ = true;
        break;
      }
      if (std::chrono::steady_clock::now() >= until) ::kill(pid_, SIGKILL);
      ::usleep(10'000);
    }
    if (reader_.joinable()) reader_.join();
    return status_;
  }
  std::vector<std::string> lines() {
    std::lock_guard lock(mu_);
    return lines_;
  }
  std::size_t line_count() {
    std::lock_guard lock(mu_);
    return lines_.size();
  }
  // Waits (bounded) until the child printed at least n lines. False on timeout or EOF.
  bool wait_for_lines(std::size_t n, std::chrono::seconds timeout = std::chrono::seconds(30)) {
    std::unique_lock lock(mu_);
    return cv_.wait_for(lock, timeout, [&] { return lines_.size() >= n || eof_; }) &&
           lines_.size() >= n;
  }
  // Waits (bounded) until the child printed a line containing `part`. False on timeout or EOF.
  bool wait_for_line_with(const std::string& part,
                          std::chrono::seconds timeout = std::chrono::seconds(30)) {
    std::unique_lock lock(mu_);
    const auto seen = [&] {
      for (const auto& l : lines_)
        if (l.find(part) != std::string::npos) return true;
      return false;
    };
    return cv_.wait_for(lock, timeout, [&] { return seen() || eof_; }) && seen();
  }

 private:
  pid_t pid_ = -1;
  int stdin_ = -1;
  int status_ = 0;
  bool reaped_ = false;
  std::thread reader_;
  std::mutex mu_;
  std::condition_variable cv_;
  std::vector<std::string> lines_;
  bool eof_ = false;
};

}  // namespace larder::test
