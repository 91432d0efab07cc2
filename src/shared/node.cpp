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
#include "shared/client.hpp"
#include "shared/dispatch.hpp"
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
// The least time a client gets to send one frame whole before the owner drops it.
constexpr auto kFrameTimeout = std::chrono::milliseconds(5000);

// Whether a request whose reply was lost may be sent again (the owner may have run it).
enum class Resend : std::uint8_t { never, when_lost };
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
    if (auto safe = util::check_private_directory(r_.root); !safe)
      throw ConfigError(fmt::format("cache_root: {}", safe.error()));
    util::Status usable = util::create_private_directories(r_.dir);
    if (usable) {
      if (auto safe = util::check_private_directory(r_.dir); !safe)
        throw ConfigError(fmt::format("cache_root: {}", safe.error()));
      // From here on the directory is reached through the descriptor (Resolved::io()).
      auto pin = util::PinnedDir::open(r_.dir);
      if (pin)
        r_.pinned = std::move(*pin);
      else
        usable = pin.status();
    }
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
    if (r_.config.enable_statistics && usable) {
      if (auto file = stats::CounterFile::create(r_.io())) {
        counter_file_ = std::move(*file);
        counters_ = &counter_file_->counters();
      }
    }
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

  // ---- Service

  bool set(const SetRequest& q) override {
    return route(
        [&] {
          Request req;
          req.opcode = Opcode::set;
          req.sets = {q};
          return req;
        },
        Resend::when_lost, Fallback{false}, [&](LocalService& l) { return l.set(q); },
        [](Reply& r) { return r.flag; });
  }

  std::optional<std::string> get(std::string_view key) override {
    return route(
        [&] {
          Request req;
          req.opcode = Opcode::get;
          req.text = std::string(key);
          return req;
        },
        Resend::when_lost, Fallback{std::optional<std::string>(), 1},
        [&](LocalService& l) { return l.get(key); }, [](Reply& r) { return std::move(r.value); });
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
            req.opcode = Opcode::get_many;
            req.keys = rest;
            return req;
          },
          Resend::when_lost,
          Fallback{std::vector<std::optional<std::string>>(rest.size()), rest.size()},
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
          req.opcode = Opcode::set_many;
          req.sets = items;
          return req;
        },
        Resend::when_lost, Fallback{std::vector<bool>(items.size(), false)},
        [&](LocalService& l) { return l.set_many(items); },
        [&](Reply& r) {
          r.flags.resize(items.size(), false);
          return std::move(r.flags);
        });
  }

  // Not resent after a lost reply: the owner may have carried it out (an add would then report
  // false, an incr add twice).
  bool add(const SetRequest& q) override {
    return route([&] { return set_request(Opcode::add, {q}); }, Resend::never, Fallback{false},
                 [&](LocalService& l) { return l.add(q); }, [](Reply& r) { return r.flag; });
  }

  bool touch(std::string_view key, std::int64_t ttl_ms) override {
    return route(
        [&] {
          Request req = text_request(Opcode::touch, key);
          req.number = ttl_ms;
          return req;
        },
        Resend::when_lost, Fallback{false}, [&](LocalService& l) { return l.touch(key, ttl_ms); },
        [](Reply& r) { return r.flag; });
  }

  std::optional<std::int64_t> incr(const SetRequest& q, std::int64_t delta) override {
    return route(
        [&] {
          Request req = set_request(Opcode::incr, {q});
          req.number = delta;
          return req;
        },
        Resend::never, Fallback{std::optional<std::int64_t>()},
        [&](LocalService& l) { return l.incr(q, delta); },
        [](Reply& r) {
          return r.flag ? std::optional(static_cast<std::int64_t>(r.count)) : std::nullopt;
        });
  }

  bool set_all(const std::vector<SetRequest>& items) override {
    return route([&] { return set_request(Opcode::set_all, items); }, Resend::when_lost,
                 Fallback{false}, [&](LocalService& l) { return l.set_all(items); },
                 [](Reply& r) { return r.flag; });
  }

  // No answer from the owner: not granted, *wait_ms -1 (nobody to wait for that we can see).
  bool acquire_lease(std::string_view key, std::int64_t holder, std::int64_t timeout_ms,
                     std::int64_t* wait_ms) override {
    *wait_ms = -1;
    return route(
        [&] {
          Request req = text_request(Opcode::lease_acquire, key);
          req.number = timeout_ms;
          req.holder = holder;
          return req;
        },
        Resend::when_lost, Fallback{false},
        [&](LocalService& l) { return l.acquire_lease(key, holder, timeout_ms, wait_ms); },
        [&](Reply& r) {
          *wait_ms = static_cast<std::int64_t>(r.count);
          return r.flag;
        });
  }

  void release_lease(std::string_view key, std::int64_t holder) override {
    (void)route(
        [&] {
          Request req = text_request(Opcode::lease_release, key);
          req.holder = holder;
          return req;
        },
        Resend::when_lost, Fallback{false},
        [&](LocalService& l) {
          l.release_lease(key, holder);
          return true;
        },
        [](Reply&) { return true; });
  }

  core::EventBatch events_since(std::uint64_t from, std::size_t max) override {
    core::EventBatch none;
    none.next = from;  // unreachable owner: ask again from the same place
    return route(
        [&] {
          Request req = text_request(Opcode::events, {});
          req.number = static_cast<std::int64_t>(from);
          req.holder = static_cast<std::int64_t>(max);
          return req;
        },
        Resend::when_lost, Fallback{none},
        [&](LocalService& l) { return l.events_since(from, max); },
        [&](Reply& r) {
          core::EventBatch b;
          const std::string kinds = r.value.value_or(std::string());
          for (std::size_t i = 0; i < r.strings.size() && i < kinds.size(); ++i) {
            const auto kind = static_cast<std::uint8_t>(kinds[i]);
            if (kind > static_cast<std::uint8_t>(Event::Kind::expire)) continue;  // not ours
            b.events.push_back({static_cast<Event::Kind>(kind), std::move(r.strings[i])});
          }
          b.next = r.count;
          const auto d = r.fields.find("dropped");
          if (d != r.fields.end()) b.dropped = std::strtoull(d->second.c_str(), nullptr, 10);
          return b;
        });
  }

  std::optional<Entry> get_entry(std::string_view key, bool include_stale) override {
    return route(
        [&] {
          Request req = text_request(Opcode::get_entry, key);
          req.flag = include_stale;
          return req;
        },
        Resend::when_lost, Fallback{std::optional<Entry>(), 1},
        [&](LocalService& l) { return l.get_entry(key, include_stale); },
        [](Reply& r) { return std::move(r.entry); });
  }

  bool exists(std::string_view key) override {
    return route([&] { return text_request(Opcode::exists, key); }, Resend::when_lost,
                 Fallback{false}, [&](LocalService& l) { return l.exists(key); },
                 [](Reply& r) { return r.flag; });
  }

  std::optional<std::string> peek(std::string_view key) override {
    return route([&] { return text_request(Opcode::peek, key); }, Resend::when_lost,
                 Fallback{std::optional<std::string>()},
                 [&](LocalService& l) { return l.peek(key); },
                 [](Reply& r) { return std::move(r.value); });
  }

  std::optional<EntryInfo> metadata(std::string_view key) override {
    return route([&] { return text_request(Opcode::metadata, key); }, Resend::when_lost,
                 Fallback{std::optional<EntryInfo>()},
                 [&](LocalService& l) { return l.metadata(key); },
                 [](Reply& r) { return std::move(r.info); });
  }

  bool remove(std::string_view key) override {
    return route([&] { return text_request(Opcode::remove, key); }, Resend::never, Fallback{false},
                 [&](LocalService& l) { return l.remove(key); }, [](Reply& r) { return r.flag; });
  }

  bool invalidate(std::string_view key) override {
    return route([&] { return text_request(Opcode::invalidate, key); }, Resend::never,
                 Fallback{false}, [&](LocalService& l) { return l.invalidate(key); },
                 [](Reply& r) { return r.flag; });
  }

  std::size_t clear(std::string_view scope) override {
    return count_call(Opcode::clear, {}, scope, [&](LocalService& l) { return l.clear(scope); });
  }
  std::size_t clear_category(std::string_view c, std::string_view scope) override {
    return count_call(Opcode::clear_category, c, scope,
                      [&](LocalService& l) { return l.clear_category(c, scope); });
  }
  std::size_t invalidate_category(std::string_view c, std::string_view scope) override {
    return count_call(Opcode::invalidate_category, c, scope,
                      [&](LocalService& l) { return l.invalidate_category(c, scope); });
  }
  std::size_t invalidate_pattern(std::string_view g, std::string_view scope) override {
    return count_call(Opcode::invalidate_pattern, g, scope,
                      [&](LocalService& l) { return l.invalidate_pattern(g, scope); });
  }
  std::size_t cleanup() override {
    return count_call(Opcode::cleanup, {}, {}, [&](LocalService& l) { return l.cleanup(); });
  }

  std::vector<std::string> keys(std::string_view scope) override {
    return route(
        [&] {
          Request req = text_request(Opcode::keys, {});
          req.scope = std::string(scope);
          return req;
        },
        Resend::when_lost, Fallback{std::vector<std::string>()},
        [&](LocalService& l) { return l.keys(scope); },
        [](Reply& r) { return std::move(r.strings); });
  }

  std::vector<std::string> keys_in_category(std::string_view c, std::string_view scope) override {
    return route(
        [&] {
          Request req = text_request(Opcode::keys_in_category, c);
          req.scope = std::string(scope);
          return req;
        },
        Resend::when_lost, Fallback{std::vector<std::string>()},
        [&](LocalService& l) { return l.keys_in_category(c, scope); },
        [](Reply& r) { return std::move(r.strings); });
  }

  Stats stats() override {
    auto own_only = [&] {
      Stats s;
      counters_->copy_to(s);
      return s;
    };
    return route([&] { return text_request(Opcode::stats, {}); }, Resend::when_lost,
                 Fallback{own_only()}, [&](LocalService& l) { return l.stats(); },
                 [&](Reply& r) { return r.stats ? *r.stats : own_only(); });
  }

  void flush() override {
    route([&] { return text_request(Opcode::flush, {}); }, Resend::when_lost, Fallback{0},
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
          req.opcode = Opcode::inspect;
          req.keys = keys;
          req.flag = with_values;
          return req;
        },
        Resend::when_lost, Fallback{std::vector<std::optional<Entry>>(keys.size())},
        [&](LocalService& l) { return l.inspect(keys, with_values); },
        [&](Reply& r) {
          r.entries.resize(keys.size());
          return std::move(r.entries);
        });
  }

  core::AdminResult admin(core::AdminCommand command, std::int64_t arg) override {
    core::AdminResult failed;
    failed.error = fmt::format("no answer from the cache's owner within {} ms{}",
                               r_.config.lock_timeout.count(),
                               last_error().empty() ? "" : ": " + last_error());
    // Only reads are worth repeating after a lost reply; the others change the store.
    const Resend resend =
        command == core::AdminCommand::settings || command == core::AdminCommand::verify
            ? Resend::when_lost
            : Resend::never;
    return route(
        [&] {
          Request req;
          req.opcode = Opcode::admin;
          req.code = static_cast<std::uint8_t>(command);
          req.number = arg;
          return req;
        },
        resend, Fallback{failed}, [&](LocalService& l) { return l.admin(command, arg); },
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

  static Request text_request(Opcode opcode, std::string_view text) {
    Request req;
    req.opcode = opcode;
    req.text = std::string(text);
    return req;
  }

  static Request set_request(Opcode opcode, const std::vector<SetRequest>& sets) {
    Request req;
    req.opcode = opcode;
    req.sets = sets;
    return req;
  }

  template <class F>
  std::size_t count_call(Opcode opcode, std::string_view text, std::string_view scope,
                         F&& on_local) {
    return route(
        [&] {
          Request req = text_request(opcode, text);
          req.scope = std::string(scope);
          return req;
        },
        Resend::never, Fallback{std::size_t{0}}, on_local,
        [](Reply& r) { return static_cast<std::size_t>(r.count); });
  }

  // Runs a call locally while this process owns the store, else sends it to the owner (the
  // request is only built, by `make`, when it has to be sent: an owner's own calls copy no key
  // or value). When the owner cannot answer, returns `failed.value` and counts `failed.misses`
  // (reads that missed because of it).
  template <class Make, class T, class Local, class FromReply>
  T route(const Make& make, Resend resend, Fallback<T> failed, Local&& on_local,
          FromReply&& from_reply) {
    if (inherited()) {
      counters_->miss += failed.misses;
      return std::move(failed.value);
    }
    std::optional<Request> req;
    for (int round = 0; round < 3; ++round) {
      if (auto* l = local()) return on_local(*l);
      if (!req) req = make();
      Reply reply;
      const Result res = exchange(*req, resend, &reply);
      if (res == Result::owner) continue;
      if (res == Result::ok && reply.status == ReplyStatus::ok) return from_reply(reply);
      if (res == Result::ok) {
        counters_->error++;
        log_.logf(util::Level::warn, "{} refused by the owner: {}", to_string(req->opcode),
                  reply.error);
      }
      break;
    }
    counters_->miss += failed.misses;
    return std::move(failed.value);
  }

  // One request to the owner, within lock_timeout. `owner`: nobody was serving and this
  // process took over (the caller runs the call locally).
  Result exchange(Request& req, Resend resend, Reply* reply) {
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
        const bool decoded = decode(payload, reply, &error);
        if (decoded && reply->status == ReplyStatus::closing) {
          // The owner closed this connection without running the request: send it again.
          close_socket(fd);
          why = "the owner closed the connection";
          continue;
        }
        if (decoded && reply->id == req.id) {
          if (inherited())
            close_socket(fd);
          else
            pool_.give_back(fd);
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
      if (resend == Resend::never) break;  // the owner may have run it before going away
    }
    counters_->error++;
    unreachable_.store(true);
    if (timed_out) fail_fast_until_.store((steady::now() + wait).time_since_epoch().count());
    const std::string message = fmt::format(
        "{} on the shared cache {} failed{}: {}", to_string(req.opcode), r_.dir.string(),
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
