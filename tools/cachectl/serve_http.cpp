// GuardedServer (serve_http.hpp): the bounded connection loop, its stream and its thread pool.
#include "serve_http.hpp"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <condition_variable>
#include <cstring>
#include <deque>
#include <functional>
#include <mutex>
#include <string>
#include <system_error>
#include <thread>
#include <vector>

namespace cachectl::serve {

namespace {

using Clock = std::chrono::steady_clock;
using std::chrono::milliseconds;

thread_local bool t_close_after = false;

// The longest a wait blocks before it looks at whether the server is stopping.
constexpr milliseconds kSlice{200};

// Waits up to `timeout` for `events` on fd, in slices, giving up when `stopping` turns true.
// True when the socket is ready (or has an error the next call will report).
bool wait_for(int fd, short events, milliseconds timeout, const std::atomic<socket_t>& listener) {
  const auto until = Clock::now() + timeout;
  for (;;) {
    const auto left = std::chrono::duration_cast<milliseconds>(until - Clock::now());
    if (left.count() <= 0) return false;
    pollfd p{fd, events, 0};
    const int r = ::poll(&p, 1, static_cast<int>(std::min(left, kSlice).count()));
    if (r > 0) return true;
    if (r < 0 && errno != EINTR) return true;  // let the read or write say what is wrong
    if (listener.load() == INVALID_SOCKET) return false;
  }
}

// A connection's bytes for httplib's request parser. It buffers reads, watches the request's
// head for its end (CRLF CRLF) to enforce the head's size and deadline, and then the body's.
class GuardedStream final : public httplib::Stream {
 public:
  GuardedStream(int fd, const Limits& limits, const std::atomic<socket_t>& listener)
      : fd_(fd), limits_(limits), listener_(listener) {}

  // A new request starts: its head is read next.
  void start_request() {
    in_head_ = true;
    matched_ = 0;
    head_bytes_ = 0;
    deadline_ = Clock::now() + limits_.head;
  }
  bool head_too_large() const { return head_too_large_; }
  bool has_buffered() const { return pos_ < len_; }

  bool is_readable() const override {
    return pos_ < len_ || wait_for(fd_, POLLIN, read_wait(), listener_);
  }
  bool is_writable() const override { return wait_for(fd_, POLLOUT, limits_.io, listener_); }

  ssize_t read(char* ptr, size_t size) override {
    if (pos_ == len_) {
      if (!wait_for(fd_, POLLIN, read_wait(), listener_)) return -1;
      const ssize_t n = ::recv(fd_, buf_, sizeof buf_, 0);
      if (n <= 0) return n;
      pos_ = 0;
      len_ = static_cast<std::size_t>(n);
    }
    std::size_t n = std::min(size, len_ - pos_);
    if (in_head_) {
      for (std::size_t i = 0; i < n; ++i) {
        const char c = buf_[pos_ + i];
        static constexpr char kEnd[] = "\r\n\r\n";
        matched_ = c == kEnd[matched_] ? matched_ + 1 : (c == '\r' ? 1 : 0);
        if (matched_ == 4) {  // the head ends here: the body (if any) has its own deadline
          in_head_ = false;
          deadline_ = Clock::now() + limits_.body;
          n = i + 1;
          break;
        }
      }
      head_bytes_ += n;
      if (in_head_ && head_bytes_ > limits_.max_head_bytes) {
        head_too_large_ = true;
        return -1;
      }
    }
    std::memcpy(ptr, buf_ + pos_, n);
    pos_ += n;
    return static_cast<ssize_t>(n);
  }

  ssize_t write(const char* ptr, size_t size) override {
    // A head past its limit is answered 431 by the connection loop, not by httplib's parser.
    if (head_too_large_ || !is_writable()) return -1;
    return ::send(fd_, ptr, size, MSG_NOSIGNAL);
  }

  void get_remote_ip_and_port(std::string& ip, int& port) const override {
    address(::getpeername, ip, port);
  }
  void get_local_ip_and_port(std::string& ip, int& port) const override {
    address(::getsockname, ip, port);
  }
  socket_t socket() const override { return fd_; }

 private:
  // How long a read may wait: the I/O timeout, cut at the request's deadline.
  milliseconds read_wait() const {
    const auto left = std::chrono::duration_cast<milliseconds>(deadline_ - Clock::now());
    return std::max(milliseconds(0), std::min(left, limits_.io));
  }

  template <class F>
  void address(F f, std::string& ip, int& port) const {
    sockaddr_storage a{};
    socklen_t n = sizeof a;
    ip.clear();
    port = 0;
    if (f(fd_, reinterpret_cast<sockaddr*>(&a), &n) != 0) return;
    char text[INET6_ADDRSTRLEN] = {};
    if (a.ss_family == AF_INET) {
      const auto* in = reinterpret_cast<const sockaddr_in*>(&a);
      ::inet_ntop(AF_INET, &in->sin_addr, text, sizeof text);
      port = ntohs(in->sin_port);
    } else if (a.ss_family == AF_INET6) {
      const auto* in = reinterpret_cast<const sockaddr_in6*>(&a);
      ::inet_ntop(AF_INET6, &in->sin6_addr, text, sizeof text);
      port = ntohs(in->sin6_port);
    }
    ip = text;
  }

  int fd_;
  const Limits& limits_;
  const std::atomic<socket_t>& listener_;
  char buf_[16 * 1024];
  std::size_t pos_ = 0, len_ = 0;
  bool in_head_ = true;
  int matched_ = 0;  // how much of CRLF CRLF the head's last bytes matched
  std::size_t head_bytes_ = 0;
  bool head_too_large_ = false;
  Clock::time_point deadline_ = Clock::now();
};

// Threads for connections: one per connection being served, started on demand up to `max`, kept
// once started. A connection that finds every thread busy at the maximum waits in enqueue, which
// holds httplib's accept loop (so more connections wait in the kernel's backlog, not in memory).
class ElasticPool final : public httplib::TaskQueue {
 public:
  explicit ElasticPool(std::size_t max) : max_(std::max<std::size_t>(1, max)) {}
  ~ElasticPool() override { shutdown(); }

  void enqueue(std::function<void()> fn) override {
    std::unique_lock lock(mu_);
    space_.wait(lock, [&] { return stop_ || busy_ + jobs_.size() < max_; });
    if (stop_) {  // the server stops: the job sees it and only closes its socket
      lock.unlock();
      fn();
      return;
    }
    jobs_.push_back(std::move(fn));
    if (threads_.size() < busy_ + jobs_.size()) {
      try {
        threads_.emplace_back([this] { work(); });
      } catch (const std::system_error&) {
        // No thread to be had now: the job waits for a busy thread to finish its connection.
      }
    }
    work_.notify_one();
  }

  void shutdown() override {
    {
      std::lock_guard lock(mu_);
      if (stop_ && threads_.empty()) return;
      stop_ = true;
    }
    work_.notify_all();
    space_.notify_all();
    for (auto& t : threads_) t.join();
    threads_.clear();
  }

 private:
  void work() {
    std::unique_lock lock(mu_);
    for (;;) {
      work_.wait(lock, [&] { return !jobs_.empty() || stop_; });
      if (jobs_.empty()) return;  // stopping, nothing left
      auto fn = std::move(jobs_.front());
      jobs_.pop_front();
      ++busy_;
      lock.unlock();
      fn();
      lock.lock();
      --busy_;
      space_.notify_one();
    }
  }

  const std::size_t max_;
  std::mutex mu_;
  std::condition_variable work_, space_;
  std::deque<std::function<void()>> jobs_;
  std::vector<std::thread> threads_;
  std::size_t busy_ = 0;
  bool stop_ = false;
};

void send_all(int fd, const std::string& text) {
  std::size_t done = 0;
  while (done < text.size()) {
    const ssize_t n = ::send(fd, text.data() + done, text.size() - done, MSG_NOSIGNAL);
    if (n <= 0) return;
    done += static_cast<std::size_t>(n);
  }
}

}  // namespace

void close_after_response() {
  t_close_after = true;
}

GuardedServer::GuardedServer(const Limits& limits) : limits_(limits) {
  new_task_queue = [max = limits.max_connections] { return new ElasticPool(max); };
  set_keep_alive_timeout(std::max<time_t>(1, limits.idle.count() / 1000));
  set_keep_alive_max_count(limits.max_requests);
}

bool GuardedServer::set_backlog(int n) {
  return ::listen(svr_sock_, n) == 0;  // Linux takes a new backlog for a listening socket
}

bool GuardedServer::process_and_close_socket(socket_t sock) {
  connections_.fetch_add(1, std::memory_order_relaxed);
  // A response goes out in several writes (head, body): without this, Nagle's algorithm holds
  // the body until the peer's delayed ACK, 40 ms per request. Not a TCP socket: no effect.
  const int one = 1;
  ::setsockopt(sock, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  GuardedStream stream(sock, limits_, svr_sock_);
  // Keep-alive: requests one after another until the peer closes, stays idle, a request fails,
  // a handler asks for the close, or the server stops.
  for (std::size_t served = 1;; ++served) {
    if (svr_sock_ == INVALID_SOCKET) break;
    if (!stream.has_buffered() && !wait_for(sock, POLLIN, limits_.idle, svr_sock_)) break;
    stream.start_request();
    t_close_after = false;
    bool closed = false;
    const bool last = served >= limits_.max_requests;  // httplib says Connection: close
    const bool ok = process_request(stream, last, closed, nullptr);
    if (stream.head_too_large()) {
      const std::string body = "{\"error\": \"the request head is larger than " +
                               std::to_string(limits_.max_head_bytes) + " bytes\"}\n";
      send_all(sock,
               "HTTP/1.1 431 Request Header Fields Too Large\r\nContent-Type: "
               "application/json\r\nConnection: close\r\nContent-Length: " +
                   std::to_string(body.size()) + "\r\n\r\n" + body);
      break;
    }
    if (!ok || closed || last || t_close_after) break;
  }
  ::shutdown(sock, SHUT_RDWR);
  ::close(sock);
  connections_.fetch_sub(1, std::memory_order_relaxed);
  return true;
}

}  // namespace cachectl::serve
