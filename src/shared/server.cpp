#include "shared/server.hpp"

#include <fcntl.h>
#include <poll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <condition_variable>
#include <cstring>
#include <deque>
#include <map>
#include <mutex>
#include <thread>
#include <vector>

#include "shared/socket.hpp"
#include "util/fork.hpp"

namespace larder::shared {

namespace fs = std::filesystem;
using steady = std::chrono::steady_clock;

namespace {

constexpr std::size_t kReadChunk = 64 * 1024;
constexpr std::size_t kReadPerWake = 1024 * 1024;  // per connection per loop turn (fairness)
constexpr auto kAcceptPause = std::chrono::milliseconds(100);
// The longest a `closing` reply may take to send (a peer that does not read does not get it).
constexpr auto kClosingSendTime = std::chrono::milliseconds(5);
// A worker that answered a request waits this long (blocked in poll) for the same client's next
// one, reading it itself when it is at most kLingerMaxFrame bytes.
constexpr auto kLinger = std::chrono::milliseconds(2);
constexpr std::uint32_t kLingerMaxFrame = 1u << 20;

struct Conn {
  int fd = -1;
  char head[kFrameHeaderBytes] = {};  // the current frame's length bytes (head_len of them)
  std::size_t head_len = 0;
  std::string buf;         // then its payload (moved to the worker whole: not copied)
  std::uint32_t need = 0;  // payload length, once the 4 length bytes are in
  // Bytes of the current frame received so far; 0 between frames.
  std::size_t frame_bytes() const { return head_len + buf.size(); }
  steady::time_point frame_started;
  steady::time_point last_active;
  bool busy = false;  // a request is with a worker: not read, not closed until answered
};

struct Job {
  int fd;
  std::string payload;
};

}  // namespace

class Server::Impl {
 public:
  Impl(Handler handler, const util::Logger& log, stats::Counters& counters, ServerOptions o)
      : handler_(std::move(handler)), log_(log), counters_(counters), o_(o) {}

  util::Status start(const fs::path& path) {
    auto listening = listen_unix(path);
    if (!listening) return listening.status();
    listen_fd_ = *listening;
    path_ = path;
    if (::pipe2(wake_, O_CLOEXEC | O_NONBLOCK) != 0) {
      const int err = errno;
      close_socket(listen_fd_);
      listen_fd_ = -1;
      return util::fail("cannot create a pipe: {}", std::strerror(err));
    }
    util::close_in_forked_child(wake_[0]);
    util::close_in_forked_child(wake_[1]);
    job_event_ = ::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    if (job_event_ < 0) {
      util::Failure why = util::fail("cannot create an eventfd: {}", std::strerror(errno));
      close_listener();
      return why;
    }
    util::close_in_forked_child(job_event_);
    for (std::size_t i = 0; i < o_.workers; ++i) {
      try {
        workers_.emplace_back([this] { work(); });
      } catch (const std::system_error& e) {
        log_.logf(util::Level::warn, "serving with {} worker threads: {}", workers_.size(),
                  e.what());
        break;
      }
    }
    try {
      if (workers_.empty()) throw std::runtime_error("no worker thread could be started");
      loop_ = std::thread([this] { run(); });
    } catch (const std::exception& e) {
      util::Failure why = util::fail("cannot start serving: {}", e.what());
      stop_workers();
      close_listener();
      return why;
    }
    return {};
  }

  void stop() {
    if (listen_fd_ < 0) return;
    stopping_.store(true);
    wake();
    if (loop_.joinable()) loop_.join();
    stop_workers();
    close_listener();
  }

 private:
  void wake() {
    const char byte = 1;
    (void)!::write(wake_[1], &byte, 1);
  }

  // Wakes workers waiting in linger_for_next (work is queued, or we stop).
  void signal_jobs() {
    if (job_event_ < 0) return;
    const std::uint64_t one = 1;
    (void)!::write(job_event_, &one, sizeof one);
  }

  void stop_workers() {
    {
      std::lock_guard lock(mu_);
      workers_stop_ = true;
    }
    signal_jobs();
    jobs_cv_.notify_all();
    for (auto& t : workers_) t.join();
    workers_.clear();
  }

  void close_listener() {
    if (listen_fd_ >= 0) {
      ::unlink(path_.c_str());
      close_socket(listen_fd_);
      listen_fd_ = -1;
    }
    if (job_event_ >= 0) {
      util::forget_in_forked_child(job_event_);
      ::close(job_event_);
      job_event_ = -1;
    }
    for (int& fd : wake_) {
      if (fd < 0) continue;
      util::forget_in_forked_child(fd);
      ::close(fd);
      fd = -1;
    }
  }

  // ---- the event loop (owns conns_)

  void run() {
    std::vector<pollfd> fds;
    std::vector<int> order;
    auto accept_paused_until = steady::time_point::min();
    bool draining = false;
    for (;;) {
      absorb_done();
      const auto now = steady::now();
      if (stopping_.load() && !draining) {
        draining = true;
        // No new connections from here on (a client then finds no owner and waits to take
        // over); the ones already queued are told to go away below.
        ::unlink(path_.c_str());
        // Answer what has arrived whole; read nothing new after this.
        for (auto& [fd, c] : conns_)
          if (!c.busy) read_some(c, now, true);
      }
      if (draining) {
        bool busy = false;
        for (auto& [fd, c] : conns_) busy = busy || c.busy;
        if (!busy) break;
      }
      expire(now);
      fds.clear();
      order.clear();
      fds.push_back({wake_[0], POLLIN, 0});
      const bool accepting = !draining && now >= accept_paused_until;
      if (accepting) fds.push_back({listen_fd_, POLLIN, 0});
      const bool over_budget = pending_bytes_ >= o_.max_pending_bytes;
      if (over_budget) shed_largest_partial();
      if (!draining && pending_bytes_ < o_.max_pending_bytes) {
        for (auto& [fd, c] : conns_) {
          if (c.busy) continue;
          fds.push_back({fd, POLLIN, 0});
          order.push_back(fd);
        }
      }
      const int n = ::poll(fds.data(), fds.size(), poll_timeout_ms(now, accept_paused_until));
      if (n < 0 && errno != EINTR) {
        log_.logf(util::Level::error, "owner's event loop: poll: {}", std::strerror(errno));
        std::this_thread::sleep_for(std::chrono::milliseconds(10));
        continue;
      }
      if (n <= 0) continue;
      if (fds[0].revents != 0) {
        char drain[256];
        while (::read(wake_[0], drain, sizeof drain) > 0) {
        }
      }
      std::size_t next = 1;
      if (accepting) {
        if (fds[1].revents != 0 && !accept_all())
          accept_paused_until = steady::now() + kAcceptPause;
        next = 2;
      }
      const auto after = steady::now();
      for (std::size_t i = 0; i < order.size(); ++i) {
        if (fds[next + i].revents == 0) continue;
        auto it = conns_.find(order[i]);
        if (it != conns_.end() && !read_some(it->second, after, false)) close_conn(it);
      }
    }
    for (auto it = conns_.begin(); it != conns_.end();) it = close_conn(it, true);
    // Connections still queued on the listener were never read: tell them so (else closing the
    // listener resets them, and a client could not know its request was not run).
    for (int i = 0; i < 4096; ++i) {
      const int fd = ::accept4(listen_fd_, nullptr, nullptr, SOCK_CLOEXEC | SOCK_NONBLOCK);
      if (fd < 0) break;
      Reply closing;
      closing.status = ReplyStatus::closing;
      (void)send_frame(fd, encode(closing), steady::now() + kClosingSendTime);
      close_socket(fd);
    }
  }

  int poll_timeout_ms(steady::time_point now, steady::time_point accept_paused_until) const {
    auto next = now + std::chrono::seconds(1);
    if (accept_paused_until > now) next = std::min(next, accept_paused_until);
    for (const auto& [fd, c] : conns_) {
      if (c.busy) continue;
      if (c.frame_bytes() != 0)
        next = std::min(next, c.frame_started + o_.frame_timeout);
      else
        next = std::min(next, c.last_active + o_.idle_timeout);
    }
    const auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(next - now).count();
    return static_cast<int>(std::clamp<std::int64_t>(ms + 1, 1, 1000));
  }

  // Accepts every waiting connection. False when out of descriptors (the caller pauses).
  bool accept_all() {
    for (int i = 0; i < 64; ++i) {
      const int fd = ::accept4(listen_fd_, nullptr, nullptr, SOCK_CLOEXEC | SOCK_NONBLOCK);
      if (fd < 0) {
        if (errno == EINTR || errno == ECONNABORTED) continue;
        if (errno == EAGAIN || errno == EWOULDBLOCK) return true;
        counters_.error++;
        log_.logf(util::Level::warn, "cannot accept a connection ({}); pausing for {} ms",
                  std::strerror(errno), kAcceptPause.count());
        // Free a descriptor for the next try.
        if (auto idle = longest_idle(); idle != conns_.end()) close_conn(idle, true);
        return false;
      }
      util::close_in_forked_child(fd);
      const long uid = peer_uid(fd);
      if (uid < 0 || (uid != static_cast<long>(::geteuid()) && uid != 0)) {
        counters_.error++;
        log_.logf(util::Level::warn, "refused a connection from uid {} (serving uid {} only)", uid,
                  ::geteuid());
        close_socket(fd);
        continue;
      }
      if (conns_.size() >= o_.max_connections) {
        auto idle = longest_idle();
        if (idle == conns_.end()) {
          counters_.error++;
          log_.logf(util::Level::warn, "refused a connection: {} connections, all busy",
                    conns_.size());
          close_socket(fd);
          continue;
        }
        log_.logf(util::Level::debug, "closing the connection idle the longest to make room");
        close_conn(idle, true);
      }
      Conn c;
      c.fd = fd;
      c.last_active = steady::now();
      conns_.emplace(fd, std::move(c));
    }
    return true;
  }

  std::map<int, Conn>::iterator longest_idle() {
    auto best = conns_.end();
    for (auto it = conns_.begin(); it != conns_.end(); ++it) {
      if (it->second.busy || it->second.frame_bytes() != 0) continue;
      if (best == conns_.end() || it->second.last_active < best->second.last_active) best = it;
    }
    return best;
  }

  void shed_largest_partial() {
    auto worst = conns_.end();
    for (auto it = conns_.begin(); it != conns_.end(); ++it) {
      if (it->second.busy || it->second.frame_bytes() == 0) continue;
      if (worst == conns_.end() || it->second.frame_bytes() > worst->second.frame_bytes())
        worst = it;
    }
    if (worst == conns_.end()) return;  // only answered frames hold memory: wait for workers
    counters_.error++;
    log_.logf(util::Level::warn,
              "closed a connection holding {} bytes of an incomplete frame: requests in flight "
              "hold more than {} bytes",
              worst->second.frame_bytes(), o_.max_pending_bytes);
    close_conn(worst);
  }

  void expire(steady::time_point now) {
    for (auto it = conns_.begin(); it != conns_.end();) {
      Conn& c = it->second;
      if (!c.busy && c.frame_bytes() != 0 && now - c.frame_started > o_.frame_timeout) {
        counters_.error++;
        log_.logf(util::Level::warn,
                  "closed a connection whose frame did not arrive within {} ms ({} bytes in)",
                  o_.frame_timeout.count(), c.frame_bytes());
        it = close_conn(it);
      } else if (!c.busy && c.frame_bytes() == 0 && now - c.last_active > o_.idle_timeout) {
        it = close_conn(it, true);
      } else {
        ++it;
      }
    }
  }

  // Closes a connection. With `tell`, a connection the workers do not hold first gets a
  // `closing` reply: what it sent and was not answered was not run (the client may resend it).
  std::map<int, Conn>::iterator close_conn(std::map<int, Conn>::iterator it, bool tell = false) {
    if (tell && !it->second.busy) {
      Reply closing;
      closing.status = ReplyStatus::closing;
      (void)send_frame(it->first, encode(closing), steady::now() + kClosingSendTime);
    }
    pending_bytes_ -= it->second.frame_bytes();
    close_socket(it->first);
    return conns_.erase(it);
  }

  // Reads what is available on `c`, handing a complete frame to the workers. False when the
  // connection must be closed (peer gone, oversized frame, error).
  bool read_some(Conn& c, steady::time_point now, bool draining) {
    std::size_t read_now = 0;
    while (read_now < kReadPerWake) {
      std::size_t want = 0;
      const bool in_head = c.head_len < kFrameHeaderBytes;
      if (in_head) {
        want = kFrameHeaderBytes - c.head_len;
      } else {
        want = std::min<std::size_t>(c.need - c.buf.size(), kReadChunk);
        if (!draining && pending_bytes_ + want > o_.max_pending_bytes) return true;  // shed later
      }
      const std::size_t at = in_head ? c.head_len : c.buf.size();
      if (!in_head) c.buf.resize(at + want);
      const bool starts = c.frame_bytes() == 0;
      const ssize_t r = ::recv(c.fd, in_head ? c.head + at : c.buf.data() + at, want, 0);
      if (r <= 0) {
        if (!in_head) c.buf.resize(at);
        if (r < 0 && errno == EINTR) continue;
        if (r < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) return true;
        return false;  // closed or broken
      }
      if (in_head)
        c.head_len += static_cast<std::size_t>(r);
      else
        c.buf.resize(at + static_cast<std::size_t>(r));
      if (starts) c.frame_started = now;
      pending_bytes_ += static_cast<std::size_t>(r);
      read_now += static_cast<std::size_t>(r);
      if (in_head && c.head_len == kFrameHeaderBytes) {
        c.need = frame_length(c.head);
        if (c.need > kMaxFrameBytes) {
          counters_.error++;
          log_.log(util::Level::warn, "dropped a client connection: frame too large");
          return false;
        }
      }
      if (c.head_len == kFrameHeaderBytes && c.buf.size() == c.need) {
        Job job{c.fd, std::move(c.buf)};
        pending_bytes_ -= kFrameHeaderBytes;  // the payload stays counted until it is answered
        c.buf = std::string();
        c.head_len = 0;
        c.need = 0;
        c.busy = true;
        {
          std::lock_guard lock(mu_);
          jobs_.push_back(std::move(job));
        }
        jobs_cv_.notify_one();
        signal_jobs();
        return true;
      }
    }
    return true;
  }

  // Connections the workers are done with.
  void absorb_done() {
    std::vector<std::pair<int, std::pair<std::size_t, bool>>> done;
    {
      std::lock_guard lock(mu_);
      done.swap(done_);
    }
    const auto now = steady::now();
    for (const auto& [fd, result] : done) {
      pending_bytes_ -= result.first;
      auto it = conns_.find(fd);
      if (it == conns_.end()) continue;
      it->second.busy = false;
      it->second.last_active = now;
      if (!result.second) close_conn(it);
    }
  }

  // ---- workers

  void work() {
    for (;;) {
      Job job;
      {
        std::unique_lock lock(mu_);
        jobs_cv_.wait(lock, [&] { return workers_stop_ || !jobs_.empty(); });
        if (jobs_.empty()) return;
        job = std::move(jobs_.front());
        jobs_.pop_front();
        if (jobs_.empty()) {  // nothing queued now: lingering workers may wait again
          std::uint64_t n = 0;
          (void)!::read(job_event_, &n, sizeof n);
        }
      }
      bool keep = answer(job);
      // A client usually sends its next request right after reading a reply: wait for it here a
      // little while no other work is queued, instead of two thread hand-offs per request.
      std::string next;
      while (keep && linger_for_next(job.fd, &next, &keep))
        keep = answer(Job{job.fd, std::move(next)});
      {
        std::lock_guard lock(mu_);
        done_.push_back({job.fd, {job.payload.size(), keep}});
      }
      wake();
    }
  }

  // Waits up to kLinger for a small next frame on fd while nothing else is queued. True with the
  // payload in *out; false to hand the connection back to the loop (*keep false: close it).
  bool linger_for_next(int fd, std::string* out, bool* keep) {
    {
      std::lock_guard lock(mu_);
      if (!jobs_.empty() || workers_stop_ || stopping_.load()) return false;
    }
    // Sleep in the kernel until the client writes, work is queued (job_event_), or kLinger ends.
    pollfd p[2] = {{fd, POLLIN, 0}, {job_event_, POLLIN, 0}};
    const int n = ::poll(p, 2, static_cast<int>(kLinger.count()));
    if (n <= 0 || (p[0].revents & (POLLIN | POLLHUP | POLLERR)) == 0) return false;
    {
      unsigned char len[4];
      const ssize_t got = ::recv(fd, len, sizeof len, MSG_PEEK);
      if (got <= 0) {  // closed or broken: the loop would close it too
        *keep = got < 0 && (errno == EAGAIN || errno == EINTR);
        return false;
      }
      if (got < 4) return false;  // a partial header: the loop's deadlines handle it
      const std::uint32_t need = frame_length(len);
      if (need > kLingerMaxFrame) return false;  // large frames go through the loop's budget
      const IoResult r = recv_frame(fd, out, steady::now() + o_.frame_timeout);
      if (r != IoResult::ok) {
        counters_.error++;
        log_.logf(util::Level::warn, "dropped a client connection: {}", to_string(r));
        *keep = false;
        return false;
      }
      return true;
    }
  }

  // True when the connection stays open.
  bool answer(const Job& job) {
    Request q;
    std::string error;
    if (!decode(job.payload, &q, &error)) {
      counters_.error++;
      log_.logf(util::Level::warn, "dropped a client connection: {}", error);
      return false;
    }
    Reply r;
    try {
      r = handler_(q);
    } catch (const std::exception& e) {  // e.g. bad_alloc on a huge request
      r = Reply{};
      r.id = q.id;
      r.status = ReplyStatus::bad_request;
      r.error = e.what();
    }
    std::string out = encode(r);
    if (out.size() > kMaxFrameBytes) {
      // Too large to send (e.g. get_many of many large values): say so instead of dropping it.
      Reply refused;
      refused.id = q.id;
      refused.status = ReplyStatus::bad_request;
      refused.error = fmt::format("the reply would be {} bytes, more than a frame holds ({})",
                                  out.size(), kMaxFrameBytes);
      out = encode(refused);
    }
    return send_frame(job.fd, out, steady::now() + o_.reply_timeout) == IoResult::ok;
  }

  Handler handler_;
  const util::Logger& log_;
  stats::Counters& counters_;
  ServerOptions o_;
  fs::path path_;
  int listen_fd_ = -1;
  int wake_[2] = {-1, -1};
  int job_event_ = -1;  // eventfd: written when a job is queued (or on stop)
  std::atomic<bool> stopping_{false};
  std::thread loop_;
  std::map<int, Conn> conns_;      // the loop thread's
  std::size_t pending_bytes_ = 0;  // the loop thread's: partial frames + frames being answered

  std::mutex mu_;
  std::condition_variable jobs_cv_;
  std::deque<Job> jobs_;
  std::vector<std::pair<int, std::pair<std::size_t, bool>>> done_;  // fd, (bytes, keep open)
  bool workers_stop_ = false;
  std::vector<std::thread> workers_;
};

Server::Server(Handler handler, const util::Logger& log, stats::Counters& counters,
               ServerOptions options)
    : impl_(std::make_unique<Impl>(std::move(handler), log, counters, options)) {}

Server::~Server() {
  stop();
}

util::Status Server::start(const fs::path& path) {
  return impl_->start(path);
}

void Server::stop() {
  impl_->stop();
}

}  // namespace larder::shared
