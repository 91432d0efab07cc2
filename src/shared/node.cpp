#include "shared/node.hpp"

#include <fcntl.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <list>
#include <mutex>
#include <thread>

#include <fmt/format.h>

#include "core/backend.hpp"
#include "core/cache_dir.hpp"
#include "core/log.hpp"
#include "kv/rocks_kv.hpp"
#include "shared/client.hpp"
#include "shared/dispatch.hpp"
#include "shared/protocol.hpp"
#include "shared/server.hpp"
#include "shared/socket.hpp"
#include "stats/counter_file.hpp"
#include "util/breaker.hpp"
#include "util/clock.hpp"
#include "util/fork.hpp"
#include "util/fs.hpp"
#include "util/lock_file.hpp"
#include "util/log.hpp"

namespace larder::shared {

namespace fs = std::filesystem;
using core::LocalService;
using core::SetRequest;
using steady = std::chrono::steady_clock;

namespace {

// The smallest wait a client call gets, whatever lock_timeout says: one round trip must fit.
constexpr auto kMinWait = std::chrono::milliseconds(10);

std::chrono::nanoseconds fail_fast_wait(const core::Resolved& r) {
  return std::max<std::chrono::milliseconds>(r.config.lock_timeout, kMinWait);
}
// The least time a client gets to send one frame whole before the owner drops it.
constexpr auto kFrameTimeout = std::chrono::milliseconds(5000);

// What a routed call returns when the owner cannot answer, and how many reads that makes miss.
template <class T>
struct Fallback {
  T value;
  std::size_t misses = 0;
};
template <class T>
Fallback(T) -> Fallback<T>;
template <class T>
Fallback(T, std::size_t) -> Fallback<T>;

class Node final : public core::Service {
 public:
  explicit Node(const core::Resolved& r)
      : r_(r), log_(core::make_logger(r.config.log)), fork_generation_(util::fork_generation()) {}

  ~Node() override {
    server_.reset();  // no more clients served
    pool_.close_all();
    local_ptr_.store(nullptr);
    local_.reset();
    backend_.reset();  // flushes and closes the store
    if (counter_file_)
      (void)stats::fold_stats(r_.io(), counter_file_.get(), stats::FoldMode::close, now(), {},
                              nullptr);
    lock_.close();  // only now may another process take over
  }

  void start() {
    core::CacheDir::check_root(r_);
    // From here on the directory is reached through the descriptor (Resolved::io()).
    util::Status usable = core::CacheDir::open(r_);
    if (usable) (void)core::prepare_root(r_, log_);
    if (usable) usable = lock_.open(r_.io() / kOwnerLockName);
    if (usable) {
      auto path = socket_path(r_.dir, r_.io());
      if (path) {
        // The socket as the user knows it (the path may reach it through the pinned directory).
        fs::path shown =
            path->parent_path() == r_.io() ? r_.dir / path->filename() : fs::path(*path);
        pool_.set_socket(std::move(*path), std::move(shown));
      } else {
        usable = path.status();
      }
    }
    if (usable && (counter_file_ = core::CacheDir::counter_file(r_, log_, local_counters_)))
      counters_ = &counter_file_->counters();
    if (!usable) {
      log_.logf(util::Level::error, "shared cache unusable, using a memory cache instead: {}",
                usable.error());
      set_last_error(usable.error());
      broken_ = true;
      // Degrade to memory, as an unusable process_isolated directory does: calls keep working.
      core::Resolved memory = r_;
      memory.dir.clear();
      memory.config.strategy = Strategy::disabled;
      backend_ = core::Backend::open(memory);
      local_ = std::make_unique<LocalService>(backend_);
      local_ptr_.store(local_.get(), std::memory_order_release);
      return;
    }
    become_owner();
  }

  // ---- Service: each call is one operation of the table (operations.hpp), run by call().

  bool set(const SetRequest& q) override { return call<op::Set>(Fallback{false}, q); }
  // Encoded from the caller's bytes: the value is copied once, into the request.
  bool set(const core::SetView& v) override { return call<op::Set>(Fallback{false}, v); }
  std::optional<std::string> get(std::string_view key) override {
    return call<op::Get>(Fallback{std::optional<std::string>(), 1}, key);
  }

  std::vector<std::optional<std::string>> get_many(const std::vector<std::string>& keys) override {
    std::vector<std::optional<std::string>> out;
    out.reserve(keys.size());
    // The owner answers a prefix (a reply must fit one frame): ask again for the rest.
    while (out.size() < keys.size()) {
      const std::vector<std::string> rest(keys.begin() + static_cast<std::ptrdiff_t>(out.size()),
                                          keys.end());
      auto part = call<op::GetMany>(
          Fallback{std::vector<std::optional<std::string>>(rest.size()), rest.size()}, rest);
      if (part.empty() || part.size() > rest.size()) part.resize(rest.size());
      for (auto& v : part) out.push_back(std::move(v));
    }
    return out;
  }

  std::vector<bool> set_many(const std::vector<SetRequest>& items) override {
    auto out = call<op::SetMany>(Fallback{std::vector<bool>(items.size(), false)}, items);
    out.resize(items.size(), false);
    return out;
  }
  bool add(const SetRequest& q) override { return call<op::Add>(Fallback{false}, q); }
  bool touch(std::string_view key, std::int64_t ttl_ms) override {
    return call<op::Touch>(Fallback{false}, key, ttl_ms);
  }
  std::optional<std::int64_t> incr(const SetRequest& q, std::int64_t delta) override {
    return call<op::Incr>(Fallback{std::optional<std::int64_t>()}, q, delta);
  }
  bool set_all(const std::vector<SetRequest>& items) override {
    return call<op::SetAll>(Fallback{false}, items);
  }
  bool compare_and_set(const SetRequest& q, std::string_view expected) override {
    return call<op::CompareAndSet>(Fallback{false}, q, expected);
  }
  std::optional<Entry> get_and_touch(std::string_view key, std::int64_t ttl_ms) override {
    return call<op::GetAndTouch>(Fallback{std::optional<Entry>(), 1}, key, ttl_ms);
  }

  // No answer from the owner: not granted, *wait_ms -1 (nobody to wait for that we can see).
  bool acquire_lease(std::string_view key, std::int64_t holder, std::int64_t timeout_ms,
                     std::int64_t* wait_ms) override {
    const LeaseGrant g = call<op::LeaseAcquire>(Fallback{LeaseGrant{}}, key, holder, timeout_ms);
    *wait_ms = g.wait_ms;
    return g.granted;
  }
  void release_lease(std::string_view key, std::int64_t holder) override {
    (void)call<op::LeaseRelease>(Fallback{std::monostate{}}, key, holder);
  }

  core::EventBatch events_since(std::uint64_t from, std::size_t max) override {
    core::EventBatch none;
    none.next = from;  // unreachable owner: ask again from the same place
    return call<op::Events>(Fallback{none}, from, std::uint64_t{max});
  }

  std::optional<Entry> get_entry(std::string_view key, bool include_stale) override {
    return call<op::GetEntry>(Fallback{std::optional<Entry>(), 1}, key, include_stale);
  }
  bool exists(std::string_view key) override { return call<op::Exists>(Fallback{false}, key); }
  std::optional<std::string> peek(std::string_view key) override {
    return call<op::Peek>(Fallback{std::optional<std::string>()}, key);
  }
  std::optional<EntryInfo> metadata(std::string_view key) override {
    return call<op::Metadata>(Fallback{std::optional<EntryInfo>()}, key);
  }
  bool remove(std::string_view key) override { return call<op::Remove>(Fallback{false}, key); }
  bool invalidate(std::string_view key) override {
    return call<op::Invalidate>(Fallback{false}, key);
  }

  std::size_t clear(std::string_view scope) override {
    return call<op::Clear>(Fallback{std::uint64_t{0}}, scope);
  }
  std::size_t clear_category(std::string_view c, std::string_view scope) override {
    return call<op::ClearCategory>(Fallback{std::uint64_t{0}}, c, scope);
  }
  std::size_t invalidate_category(std::string_view c, std::string_view scope) override {
    return call<op::InvalidateCategory>(Fallback{std::uint64_t{0}}, c, scope);
  }
  std::size_t invalidate_pattern(std::string_view g, std::string_view scope) override {
    return call<op::InvalidatePattern>(Fallback{std::uint64_t{0}}, g, scope);
  }
  std::size_t cleanup() override { return call<op::Cleanup>(Fallback{std::uint64_t{0}}); }

  std::vector<std::string> keys(std::string_view scope) override {
    return call<op::Keys>(Fallback{std::vector<std::string>()}, scope);
  }
  std::vector<std::string> keys_in_category(std::string_view c, std::string_view scope) override {
    return call<op::KeysInCategory>(Fallback{std::vector<std::string>()}, c, scope);
  }

  Stats stats() override {
    Stats own_only;  // the owner cannot answer: this process's own counters
    counters_->copy_to(own_only);
    return call<op::GetStats>(Fallback{own_only});
  }

  void flush() override {
    (void)call<op::Flush>(Fallback{std::monostate{}});
    if (counter_file_ && !inherited())
      (void)stats::fold_stats(r_.io(), counter_file_.get(), stats::FoldMode::save, now(), {},
                              nullptr);
  }

  std::vector<std::optional<Entry>> inspect(const std::vector<std::string>& keys,
                                            bool with_values) override {
    auto out = call<op::Inspect>(Fallback{std::vector<std::optional<Entry>>(keys.size())}, keys,
                                 with_values);
    out.resize(keys.size());
    return out;
  }

  core::AdminResult admin(core::AdminCommand command, std::int64_t arg) override {
    core::AdminResult failed;
    failed.error = fmt::format("no answer from the cache's owner within {} ms{}",
                               r_.config.lock_timeout.count(),
                               last_error().empty() ? "" : ": " + last_error());
    return call<op::Admin>(Fallback{failed}, static_cast<std::uint8_t>(command), arg);
  }

  void count_error(std::string_view what) override {
    if (auto* l = local()) return l->count_error(what);
    counters_->error++;
    if (!what.empty()) log_.log(util::Level::warn, what);
  }

  bool degraded() const override {
    if (inherited() || broken_ || serve_failed_.load()) return true;
    if (auto* l = local()) return l->degraded();
    return unreachable_.load();
  }

  std::string last_error() const override {
    if (auto* l = local()) {
      if (std::string e = l->last_error(); !e.empty()) return e;
    }
    std::lock_guard lock(error_mu_);
    return last_error_;
  }

  fs::path directory() const override { return r_.dir; }
  std::shared_ptr<core::Backend> backend() const override {
    std::lock_guard lock(role_mu_);
    return backend_;
  }
  const Config& config() const override { return r_.config; }
  bool inherited() const override { return util::fork_generation() != fork_generation_; }

 private:
  enum class Result : std::uint8_t { ok, owner, failed };

  LocalService* local() const { return local_ptr_.load(std::memory_order_acquire); }

  std::chrono::system_clock::time_point now() const {
    return r_.config.clock ? r_.config.clock() : std::chrono::system_clock::now();
  }

  void set_last_error(std::string message) {
    std::lock_guard lock(error_mu_);
    last_error_ = std::move(message);
  }

  // Runs operation Op: locally while this process owns the store (Op::run, the code a client's
  // request runs on the owner), else sent to the owner (encoded straight from `args`, only when
  // it has to be sent: an owner's own calls copy no key or value). When the owner cannot answer,
  // returns `failed.value` and counts `failed.misses` (reads that missed because of it).
  template <class Op, class... A>
  typename Op::Result call(Fallback<typename Op::Result> failed, const A&... args) {
    if (inherited()) {
      counters_->miss += failed.misses;
      return std::move(failed.value);
    }
    std::optional<std::string> payload;
    for (int round = 0; round < 3; ++round) {
      if (auto* l = local()) return Op::run(*l, args...);
      if (!payload) payload = encode_request<Op>(0, args...);
      Reply reply;
      const Result res = exchange(&*payload, Op::name, resend_of<Op>(args...), &reply);
      if (res == Result::owner) continue;
      if (res == Result::ok && reply.status == ReplyStatus::ok) {
        typename Op::Result out{};
        std::string error;
        if (decode_result(reply.result, &out, &error)) return out;
        reply.error = error;
      }
      if (res == Result::ok) {
        counters_->error++;
        log_.logf(util::Level::warn, "{} refused by the owner: {}", Op::name, reply.error);
      }
      break;
    }
    counters_->miss += failed.misses;
    return std::move(failed.value);
  }

  // One request to the owner, within lock_timeout. `owner`: nobody was serving and this
  // process took over (the caller runs the call locally).
  Result exchange(std::string* payload, const char* name, Resend resend, Reply* reply) {
    const auto start = steady::now();
    if (fail_fast_.refusing(mono_.now_ns())) {
      counters_->error++;
      return Result::failed;
    }
    const auto wait = std::max<std::chrono::milliseconds>(r_.config.lock_timeout, kMinWait);
    const Deadline deadline = start + wait;
    std::string why;
    auto pause = std::chrono::microseconds(500);
    bool timed_out = false;
    for (int attempt = 0;; ++attempt) {
      // Every path through the loop is bounded by the deadline (an owner that keeps closing
      // connections, e.g. one speaking another protocol version, must not trap the caller).
      if (attempt > 0 && steady::now() >= deadline) {
        timed_out = true;
        break;
      }
      NoConnection why_not = NoConnection::unreachable;
      auto connection = pool_.take(deadline, &why_not);
      if (!connection) {
        why = connection.error();
        if (why_not == NoConnection::untrusted) {
          counters_->error++;
          log_.log(util::Level::error, why);
        }
        if (why_not == NoConnection::no_owner && become_owner()) return Result::owner;
        if (local() != nullptr) return Result::owner;  // another thread took over
        if (steady::now() >= deadline) {
          timed_out = true;
          break;
        }
        std::this_thread::sleep_for(std::min<steady::duration>(pause, deadline - steady::now()));
        pause = std::min(pause * 2, std::chrono::microseconds(10'000));
        continue;
      }
      const int fd = *connection;
      const std::uint64_t id = next_id_.fetch_add(1);
      set_request_id(payload, id);
      IoResult io = send_frame(fd, *payload, deadline);
      if (io != IoResult::ok) {  // not delivered as a whole: the owner cannot have run it
        close_socket(fd);
        why = fmt::format("sending the request: {}", to_string(io));
        if (io == IoResult::timeout || io == IoResult::too_large) {
          timed_out = io == IoResult::timeout;
          break;
        }
        continue;
      }
      std::string payload;
      io = recv_frame(fd, &payload, deadline);
      if (io == IoResult::ok) {
        std::string error;
        const bool decoded = decode(payload, reply, &error);
        if (decoded && reply->status == ReplyStatus::closing) {
          // The owner closed this connection without running the request: send it again.
          close_socket(fd);
          why = "the owner closed the connection";
          continue;
        }
        if (decoded && reply->id == id) {
          if (inherited())
            close_socket(fd);
          else
            pool_.give_back(fd);
          unreachable_.store(false);
          fail_fast_.success();
          return Result::ok;
        }
        close_socket(fd);
        why = error.empty() ? "reply to another request" : error;
        break;
      }
      close_socket(fd);
      why = fmt::format("waiting for the reply: {}", to_string(io));
      if (io == IoResult::timeout) {
        timed_out = true;
        break;
      }
      if (resend == Resend::never) break;  // the owner may have run it before going away
    }
    counters_->error++;
    unreachable_.store(true);
    if (timed_out) fail_fast_.failure(mono_.now_ns());
    const std::string message =
        fmt::format("{} on the shared cache {} failed{}: {}", name, r_.dir.string(),
                    timed_out ? fmt::format(" after {} ms", wait.count()) : "", why);
    log_.log(util::Level::warn, message);
    set_last_error(message);
    return Result::failed;
  }

  // Takes the owner lock if it is free and starts serving. True when this process is the owner.
  bool become_owner() {
    std::lock_guard lock(role_mu_);
    if (local() != nullptr) return true;
    std::string error;
    if (!kv::rocksdb_usable(&error)) {  // a forked child: stay a client
      log_.logf(util::Level::debug, "not taking over the shared cache: {}", error);
      return false;
    }
    if (auto taken = lock_.try_lock(util::LockMode::exclusive); !util::held(taken)) {
      if (!taken) log_.logf(util::Level::warn, "owner election: {}", taken.error());
      return false;
    }
    const auto t0 = steady::now();
    try {
      backend_ = core::Backend::open(r_);
    } catch (const std::exception& e) {
      log_.logf(util::Level::error, "cannot open the shared store: {}", e.what());
      set_last_error(e.what());
      lock_.unlock();
      return false;
    }
    local_ = std::make_unique<LocalService>(backend_);
    ServerOptions so;
    so.reply_timeout = std::max<std::chrono::milliseconds>(r_.config.lock_timeout, kMinWait);
    so.frame_timeout = std::max<std::chrono::milliseconds>(r_.config.lock_timeout, kFrameTimeout);
    LocalService* served = local_.get();
    server_ = std::make_unique<Server>([served](const Request& q) { return dispatch(*served, q); },
                                       log_, backend_->counters(), so);
    if (auto serving = server_->start(pool_.path()); !serving) {
      serve_failed_ = true;
      backend_->counters().error++;
      log_.logf(util::Level::error, "owner cannot serve other processes: {}", serving.error());
      set_last_error(serving.error());
    }
    (void)lock_.write_content(fmt::format("pid={}\nstarted={}\nsocket={}\n", ::getpid(),
                                          util::iso8601_utc(std::chrono::system_clock::now()),
                                          pool_.shown().string()));
    local_ptr_.store(local_.get(), std::memory_order_release);
    log_.logf(util::Level::info, "pid {} owns the shared cache {} (store opened in {} ms)",
              ::getpid(), r_.dir.string(),
              std::chrono::duration_cast<std::chrono::milliseconds>(steady::now() - t0).count());
    return true;
  }

  core::Resolved r_;
  util::Logger log_;
  std::uint64_t fork_generation_;
  bool broken_ = false;                    // no lock file or socket path: a memory cache (degraded)
  std::atomic<bool> serve_failed_{false};  // the owner could not listen: others cannot use it
  util::LockFile lock_;

  mutable std::mutex role_mu_;
  std::shared_ptr<core::Backend> backend_;
  std::unique_ptr<LocalService> local_;
  std::atomic<LocalService*> local_ptr_{nullptr};
  std::unique_ptr<Server> server_;

  std::unique_ptr<stats::CounterFile> counter_file_;
  stats::Counters local_counters_;
  stats::Counters* counters_ = &local_counters_;

  ConnectionPool pool_;
  std::atomic<std::uint64_t> next_id_{1};
  // After an owner did not answer within the wait, calls fail at once for as long again (a
  // stopped owner must not cost every call the whole wait); one call then tries again.
  util::MonotonicClock mono_{r_.config.monotonic_clock};
  util::Breaker fail_fast_{{1, fail_fast_wait(r_), fail_fast_wait(r_)}};
  std::atomic<bool> unreachable_{false};
  mutable std::mutex error_mu_;
  std::string last_error_;
};

}  // namespace

std::shared_ptr<core::Service> open_node(const core::Resolved& r) {
  // In a forked child the node (its lock, sockets, threads) belongs to the parent: leak it.
  std::shared_ptr<Node> node(new Node(r), [](Node* n) {
    if (!n->inherited()) delete n;
  });
  node->start();
  return node;
}

}  // namespace larder::shared
