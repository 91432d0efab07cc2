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
#include "core/log.hpp"
#include "kv/rocks_kv.hpp"
#include "shared/protocol.hpp"
#include "shared/server.hpp"
#include "shared/socket.hpp"
#include "stats/counter_file.hpp"
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
constexpr std::size_t kMaxIdleConnections = 16;
// The owner answers get_many with at most about this many value bytes per reply (a reply must
// fit in a frame, kMaxFrameBytes); the client asks again for the keys left.
constexpr std::uint64_t kMaxGetManyReplyBytes = 64u << 20;
// A pooled connection older than this is not reused (the owner closes idle ones after
// kIdleTimeout; reusing one it is about to close could lose a request's reply).
constexpr auto kMaxPooledAge = std::chrono::seconds(10);
// The least time a client gets to send one frame whole before the owner drops it.
constexpr auto kFrameTimeout = std::chrono::milliseconds(5000);

// Answers one request with the owner's LocalService: the same code the owner's own calls run.
Reply dispatch(LocalService& l, const Request& q) {
  Reply r;
  r.id = q.id;
  auto bad = [&](std::string why) {
    r.status = ReplyStatus::bad_request;
    r.error = std::move(why);
    return r;
  };
  const auto settable = core::valid_set;
  const bool key_ok = core::valid_key(q.text);
  switch (q.op) {
    case Op::set:
      if (q.sets.size() != 1) return bad("set carries one item");
      r.flag = settable(q.sets[0]) && l.set(q.sets[0]);
      break;
    case Op::set_many:
      r.flags.reserve(q.sets.size());
      for (const auto& s : q.sets) r.flags.push_back(settable(s) && l.set(s));
      break;
    case Op::get:
      r.value = l.get(q.text);
      break;
    case Op::get_many: {
      // Answer a prefix that fits one frame; r.count says how many (the client asks again for
      // the rest). The prefix ends once its values reach kMaxGetManyReplyBytes, so every key
      // answered is counted once and no key left out is counted. (A single value larger than a
      // frame minus that budget still makes the reply too large: it is refused then.)
      std::uint64_t bytes = 0;
      for (const auto& key : q.keys) {
        r.values.push_back(l.get(key));
        if (r.values.back()) bytes += r.values.back()->size();
        if (bytes >= kMaxGetManyReplyBytes) break;
      }
      r.count = r.values.size();
      break;
    }
    case Op::peek:
      if (key_ok) r.value = l.peek(q.text);
      break;
    case Op::get_entry:
      r.entry = l.get_entry(q.text, q.flag);
      break;
    case Op::exists:
      r.flag = key_ok && l.exists(q.text);
      break;
    case Op::metadata:
      if (key_ok) r.info = l.metadata(q.text);
      break;
    case Op::remove:
      r.flag = key_ok && l.remove(q.text);
      break;
    case Op::invalidate:
      r.flag = key_ok && l.invalidate(q.text);
      break;
    case Op::clear:
      r.count = l.clear();
      break;
    case Op::clear_category:
      r.count = l.clear_category(q.text);
      break;
    case Op::invalidate_category:
      r.count = l.invalidate_category(q.text);
      break;
    case Op::invalidate_pattern:
      if (q.text.empty()) return bad("empty pattern");
      r.count = l.invalidate_pattern(q.text);
      break;
    case Op::keys:
      r.strings = l.keys();
      break;
    case Op::keys_in_category:
      r.strings = l.keys_in_category(q.text);
      break;
    case Op::cleanup:
      r.count = l.cleanup();
      break;
    case Op::stats:
      r.stats = l.stats();
      break;
    case Op::flush:
      l.flush();
      break;
    case Op::inspect:
      r.entries = l.inspect(q.keys, q.flag);
      break;
    case Op::admin: {
      if (q.code < 1 || q.code > core::kLastAdminOp)
        return bad(fmt::format("unknown maintenance operation {}", q.code));
      core::AdminResult a = l.admin(static_cast<core::AdminOp>(q.code), q.number);
      r.flag = a.ok;
      r.error = std::move(a.error);
      r.count = a.count;
      r.strings = std::move(a.lines);
      r.fields = std::move(a.fields);
      break;
    }
  }
  return r;
}

class Node final : public core::Service {
 public:
  explicit Node(const core::Resolved& r)
      : r_(r), log_(core::make_logger(r.config.log)), fork_generation_(util::fork_generation()) {}

  ~Node() override {
    server_.reset();  // no more clients served
    {
      std::lock_guard lock(pool_mu_);
      for (const Pooled& p : idle_) close_socket(p.fd);
      idle_.clear();
    }
    local_ptr_.store(nullptr);
    local_.reset();
    backend_.reset();  // flushes and closes the store
    if (counter_file_)
      (void)stats::fold_stats(r_.io(), counter_file_.get(), stats::FoldMode::close, now(), {},
                              nullptr);
    lock_.close();  // only now may another process take over
  }

  void start() {
    if (auto why = util::unsafe_directory_reason(r_.root); !why.empty())
      throw ConfigError(fmt::format("cache_root: {}", why));
    std::string why = util::create_private_directories(r_.dir);
    if (why.empty()) {
      if (auto unsafe = util::unsafe_directory_reason(r_.dir); !unsafe.empty())
        throw ConfigError(fmt::format("cache_root: {}", unsafe));
      // From here on the directory is reached through the descriptor (Resolved::io()).
      r_.pinned = util::PinnedDir::open(r_.dir, &why);
    }
    if (why.empty()) why = lock_.open(r_.io() / kOwnerLockName);
    if (why.empty()) socket_path_ = socket_path(r_.dir, r_.io(), &why);
    if (r_.config.enable_statistics && why.empty()) {
      std::string error;
      counter_file_ = stats::CounterFile::create(r_.io(), &error);
      if (counter_file_) counters_ = &counter_file_->counters();
    }
    if (!why.empty()) {
      log_.logf(util::Level::error, "shared cache unusable, using a memory cache instead: {}", why);
      set_last_error(why);
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

  // ---- Service

  bool set(const SetRequest& q) override {
    return route(
        [&] {
          Request req;
          req.op = Op::set;
          req.sets = {q};
          return req;
        },
        true, false, 0, [&](LocalService& l) { return l.set(q); }, [](Reply& r) { return r.flag; });
  }

  std::optional<std::string> get(std::string_view key) override {
    return route(
        [&] {
          Request req;
          req.op = Op::get;
          req.text = std::string(key);
          return req;
        },
        true, std::optional<std::string>(), 1, [&](LocalService& l) { return l.get(key); },
        [](Reply& r) { return std::move(r.value); });
  }

  std::vector<std::optional<std::string>> get_many(const std::vector<std::string>& keys) override {
    std::vector<std::optional<std::string>> out;
    out.reserve(keys.size());
    // The owner may answer a prefix (a reply must fit one frame): ask again for the rest.
    while (out.size() < keys.size()) {
      const std::vector<std::string> rest(keys.begin() + static_cast<std::ptrdiff_t>(out.size()),
                                          keys.end());
      std::size_t answered = 0;
      auto part = route(
          [&] {
            Request req;
            req.op = Op::get_many;
            req.keys = rest;
            return req;
          },
          true, std::vector<std::optional<std::string>>(rest.size()), rest.size(),
          [&](LocalService& l) {
            answered = rest.size();
            return l.get_many(rest);
          },
          [&](Reply& r) {
            answered = std::clamp<std::size_t>(r.count, 1, rest.size());
            r.values.resize(answered);
            return std::move(r.values);
          });
      if (answered == 0) answered = rest.size();  // failed: every remaining key missed
      part.resize(answered);
      for (auto& v : part) out.push_back(std::move(v));
    }
    return out;
  }

  std::vector<bool> set_many(const std::vector<SetRequest>& items) override {
    return route(
        [&] {
          Request req;
          req.op = Op::set_many;
          req.sets = items;
          return req;
        },
        true, std::vector<bool>(items.size(), false), 0,
        [&](LocalService& l) { return l.set_many(items); },
        [&](Reply& r) {
          r.flags.resize(items.size(), false);
          return std::move(r.flags);
        });
  }

  std::optional<Entry> get_entry(std::string_view key, bool include_stale) override {
    return route(
        [&] {
          Request req = text_request(Op::get_entry, key);
          req.flag = include_stale;
          return req;
        },
        true, std::optional<Entry>(), 1,
        [&](LocalService& l) { return l.get_entry(key, include_stale); },
        [](Reply& r) { return std::move(r.entry); });
  }

  bool exists(std::string_view key) override {
    return route([&] { return text_request(Op::exists, key); }, true, false, 0,
                 [&](LocalService& l) { return l.exists(key); }, [](Reply& r) { return r.flag; });
  }

  std::optional<std::string> peek(std::string_view key) override {
    return route([&] { return text_request(Op::peek, key); }, true, std::optional<std::string>(), 0,
                 [&](LocalService& l) { return l.peek(key); },
                 [](Reply& r) { return std::move(r.value); });
  }

  std::optional<EntryInfo> metadata(std::string_view key) override {
    return route([&] { return text_request(Op::metadata, key); }, true, std::optional<EntryInfo>(),
                 0, [&](LocalService& l) { return l.metadata(key); },
                 [](Reply& r) { return std::move(r.info); });
  }

  bool remove(std::string_view key) override {
    return route([&] { return text_request(Op::remove, key); }, false, false, 0,
                 [&](LocalService& l) { return l.remove(key); }, [](Reply& r) { return r.flag; });
  }

  bool invalidate(std::string_view key) override {
    return route([&] { return text_request(Op::invalidate, key); }, false, false, 0,
                 [&](LocalService& l) { return l.invalidate(key); },
                 [](Reply& r) { return r.flag; });
  }

  std::size_t clear() override {
    return count_call(Op::clear, {}, [&](LocalService& l) { return l.clear(); });
  }
  std::size_t clear_category(std::string_view c) override {
    return count_call(Op::clear_category, c, [&](LocalService& l) { return l.clear_category(c); });
  }
  std::size_t invalidate_category(std::string_view c) override {
    return count_call(Op::invalidate_category, c,
                      [&](LocalService& l) { return l.invalidate_category(c); });
  }
  std::size_t invalidate_pattern(std::string_view g) override {
    return count_call(Op::invalidate_pattern, g,
                      [&](LocalService& l) { return l.invalidate_pattern(g); });
  }
  std::size_t cleanup() override {
    return count_call(Op::cleanup, {}, [&](LocalService& l) { return l.cleanup(); });
  }

  std::vector<std::string> keys() override {
    return route([&] { return text_request(Op::keys, {}); }, true, std::vector<std::string>(), 0,
                 [&](LocalService& l) { return l.keys(); },
                 [](Reply& r) { return std::move(r.strings); });
  }

  std::vector<std::string> keys_in_category(std::string_view c) override {
    return route([&] { return text_request(Op::keys_in_category, c); }, true,
                 std::vector<std::string>(), 0,
                 [&](LocalService& l) { return l.keys_in_category(c); },
                 [](Reply& r) { return std::move(r.strings); });
  }

  Stats stats() override {
    auto own_only = [&] {
      Stats s;
      counters_->copy_to(s);
      return s;
    };
    return route([&] { return text_request(Op::stats, {}); }, true, own_only(), 0,
                 [&](LocalService& l) { return l.stats(); },
                 [&](Reply& r) { return r.stats ? *r.stats : own_only(); });
  }

  void flush() override {
    route([&] { return text_request(Op::flush, {}); }, true, 0, 0,
          [&](LocalService& l) {
            l.flush();
            return 0;
          },
          [](Reply&) { return 0; });
    if (counter_file_ && !inherited())
      (void)stats::fold_stats(r_.io(), counter_file_.get(), stats::FoldMode::save, now(), {},
                              nullptr);
  }

  std::vector<std::optional<Entry>> inspect(const std::vector<std::string>& keys,
                                            bool with_values) override {
    return route(
        [&] {
          Request req;
          req.op = Op::inspect;
          req.keys = keys;
          req.flag = with_values;
          return req;
        },
        true, std::vector<std::optional<Entry>>(keys.size()), 0,
        [&](LocalService& l) { return l.inspect(keys, with_values); },
        [&](Reply& r) {
          r.entries.resize(keys.size());
          return std::move(r.entries);
        });
  }

  core::AdminResult admin(core::AdminOp op, std::int64_t arg) override {
    core::AdminResult failed;
    failed.error = fmt::format("no answer from the cache's owner within {} ms{}",
                               r_.config.lock_timeout.count(),
                               last_error().empty() ? "" : ": " + last_error());
    // Only reads are worth repeating after a lost reply.
    const bool idempotent = op == core::AdminOp::settings || op == core::AdminOp::verify;
    return route(
        [&] {
          Request req;
          req.op = Op::admin;
          req.code = static_cast<std::uint8_t>(op);
          req.number = arg;
          return req;
        },
        idempotent, failed, 0, [&](LocalService& l) { return l.admin(op, arg); },
        [](Reply& r) {
          core::AdminResult a;
          a.ok = r.flag;
          a.error = std::move(r.error);
          a.count = r.count;
          a.lines = std::move(r.strings);
          a.fields = std::move(r.fields);
          return a;
        });
  }

  void count_error(std::string_view what) override {
    if (auto* l = local()) return l->count_error(what);
    counters_->error++;
    log_.log(util::Level::warn, what);
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

  static Request text_request(Op op, std::string_view text) {
    Request req;
    req.op = op;
    req.text = std::string(text);
    return req;
  }

  template <class F>
  std::size_t count_call(Op op, std::string_view text, F&& on_local) {
    return route([&] { return text_request(op, text); }, false, std::size_t{0}, 0, on_local,
                 [](Reply& r) { return static_cast<std::size_t>(r.count); });
  }

  // Runs a call locally while this process owns the store, else sends it to the owner (the
  // request is only built, by `make`, when it has to be sent: an owner's own calls copy no key
  // or value). On failure returns `failed` and counts `misses` (reads that missed because of it).
  template <class Make, class T, class Local, class FromReply>
  T route(const Make& make, bool idempotent, T failed, std::size_t misses, Local&& on_local,
          FromReply&& from_reply) {
    if (inherited()) {
      counters_->miss += misses;
      return failed;
    }
    std::optional<Request> req;
    for (int round = 0; round < 3; ++round) {
      if (auto* l = local()) return on_local(*l);
      if (!req) req = make();
      Reply reply;
      const Result res = exchange(*req, idempotent, &reply);
      if (res == Result::owner) continue;
      if (res == Result::ok && reply.status == ReplyStatus::ok) return from_reply(reply);
      if (res == Result::ok) {
        counters_->error++;
        log_.logf(util::Level::warn, "{} refused by the owner: {}", to_string(req->op),
                  reply.error);
      }
      break;
    }
    counters_->miss += misses;
    return failed;
  }

  // One request to the owner, within lock_timeout. `owner`: nobody was serving and this
  // process took over (the caller runs the call locally).
  Result exchange(Request& req, bool idempotent, Reply* reply) {
    const auto start = steady::now();
    if (start.time_since_epoch().count() < fail_fast_until_.load()) {
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
      bool refused = false;
      int fd = take_connection(deadline, &refused, &why);
      if (fd < 0) {
        if (refused && become_owner()) return Result::owner;
        if (local() != nullptr) return Result::owner;  // another thread took over
        if (steady::now() >= deadline) {
          timed_out = true;
          break;
        }
        std::this_thread::sleep_for(std::min<steady::duration>(pause, deadline - steady::now()));
        pause = std::min(pause * 2, std::chrono::microseconds(10'000));
        continue;
      }
      req.id = next_id_.fetch_add(1);
      IoResult io = send_frame(fd, encode(req), deadline);
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
        if (decode(payload, reply, &error) && reply->id == req.id) {
          give_back(fd);
          unreachable_.store(false);
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
      if (!idempotent) break;  // the owner may have run it before going away: do not repeat
    }
    counters_->error++;
    unreachable_.store(true);
    if (timed_out) fail_fast_until_.store((steady::now() + wait).time_since_epoch().count());
    const std::string message =
        fmt::format("{} on the shared cache {} failed{}: {}", to_string(req.op), r_.dir.string(),
                    timed_out ? fmt::format(" after {} ms", wait.count()) : "", why);
    log_.log(util::Level::warn, message);
    set_last_error(message);
    return Result::failed;
  }

  int take_connection(Deadline deadline, bool* refused, std::string* why) {
    for (;;) {
      Pooled p;
      {
        std::lock_guard lock(pool_mu_);
        if (idle_.empty()) break;
        p = idle_.back();
        idle_.pop_back();
      }
      // Reuse only a recent connection the owner has not closed (readable while idle = EOF).
      pollfd pf{p.fd, POLLIN, 0};
      if (steady::now() - p.since < kMaxPooledAge && ::poll(&pf, 1, 0) == 0) {
        *refused = false;
        return p.fd;
      }
      close_socket(p.fd);
    }
    const int fd = connect_unix(socket_path_, deadline, refused, why);
    if (fd >= 0 && !owner_is_trusted(fd, why)) {
      close_socket(fd);
      return -1;
    }
    return fd;
  }

  // The process serving the socket must run as our user (or root): never send requests, or
  // believe replies, of a socket another user planted.
  bool owner_is_trusted(int fd, std::string* why) {
    const long uid = peer_uid(fd);
    if (uid == static_cast<long>(::geteuid()) || uid == 0) return true;
    counters_->error++;
    *why = fmt::format("the process serving {} runs as uid {}, not as uid {}: not using it",
                       shown_socket().string(), uid, ::geteuid());
    log_.log(util::Level::error, *why);
    return false;
  }

  void give_back(int fd) {
    std::lock_guard lock(pool_mu_);
    if (idle_.size() < kMaxIdleConnections && !inherited())
      idle_.push_back({fd, steady::now()});
    else
      close_socket(fd);
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
    if (!lock_.try_lock(true, &error)) {
      if (!error.empty()) log_.logf(util::Level::warn, "owner election: {}", error);
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
    if (auto why = server_->start(socket_path_); !why.empty()) {
      serve_failed_ = true;
      backend_->counters().error++;
      log_.logf(util::Level::error, "owner cannot serve other processes: {}", why);
      set_last_error(why);
    }
    (void)lock_.write_content(fmt::format("pid={}\nstarted={}\nsocket={}\n", ::getpid(),
                                          util::iso8601_utc(std::chrono::system_clock::now()),
                                          shown_socket().string()));
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
  fs::path socket_path_;
  // The socket as the user knows it (socket_path_ may reach it through the pinned directory).
  fs::path shown_socket() const {
    return socket_path_.parent_path() == r_.io() ? r_.dir / socket_path_.filename() : socket_path_;
  }
  util::LockFile lock_;

  mutable std::mutex role_mu_;
  std::shared_ptr<core::Backend> backend_;
  std::unique_ptr<LocalService> local_;
  std::atomic<LocalService*> local_ptr_{nullptr};
  std::unique_ptr<Server> server_;

  std::unique_ptr<stats::CounterFile> counter_file_;
  stats::Counters local_counters_;
  stats::Counters* counters_ = &local_counters_;

  struct Pooled {
    int fd = -1;
    steady::time_point since;
  };
  std::mutex pool_mu_;
  std::vector<Pooled> idle_;
  std::atomic<std::uint64_t> next_id_{1};
  std::atomic<steady::rep> fail_fast_until_{0};
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
