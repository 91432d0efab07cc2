// The remote tier's connections: connecting (AUTH, SELECT), the pool, the breaker and running
// commands with a bounded reply (redis_tier.hpp).
#include <algorithm>
#include <cerrno>
#include <charconv>
#include <cstring>

#include <fmt/format.h>

#include "remote/redis_tier.hpp"
#include "util/fs.hpp"
#include "util/ttl.hpp"

namespace larder::remote {

namespace detail {

util::Result<RedisTier::ConnPtr> RedisTier::connect(milliseconds read_timeout) const {
  const timeval tv = to_timeval(url_.connect_timeout);
  redisContext* ctx = url_.transport == RemoteUrl::Transport::tcp
                          ? redisConnectWithTimeout(url_.host.c_str(), url_.port, tv)
                          : redisConnectUnixWithTimeout(url_.path.c_str(), tv);
  ConnPtr c(new Conn{ctx});
  if (ctx == nullptr) return util::fail("redis {}: out of memory", url_.display());
  if (ctx->err != 0) return util::fail("cannot connect to {}: {}", url_.display(), ctx->errstr);
  bound_replies(ctx);
  if (redisSetTimeout(ctx, to_timeval(read_timeout)) != REDIS_OK)
    return util::fail("redis {}: cannot set the timeout", url_.display());
  const auto check = [&](const ReplyPtr& r, std::string_view what) -> util::Status {
    if (!r) return util::fail("redis {}: {}: {}", url_.display(), what, why_failed(ctx, "failed"));
    if (r->type == REDIS_REPLY_ERROR)
      return util::fail("redis {}: {} refused: {}", url_.display(), what,
                        std::string_view(r->str, r->len));
    return {};
  };
  if (!url_.password.empty()) {
    std::vector<std::string> auth{"AUTH"};
    if (!url_.user.empty()) auth.push_back(url_.user);
    auth.push_back(url_.password);
    if (auto ok = check(command(ctx, auth, kReplySlack), "AUTH"); !ok)
      return util::fail(ok.error());
  }
  if (url_.db != 0) {
    if (auto ok = check(command(ctx, {"SELECT", std::to_string(url_.db)}, kReplySlack),
                        fmt::format("SELECT {}", url_.db));
        !ok)
      return util::fail(ok.error());
  }
  return c;
}

bool RedisTier::breaker_open() const {
  return breaker_.refusing(hooks_.clock.now_ns());
}

void RedisTier::failed(const std::string& why) {
  {
    std::lock_guard lock(state_mu_);
    last_error_ = why;
  }
  breaker_.failure(hooks_.clock.now_ns());
  if (!down_.exchange(true)) {
    if (log_)
      log_->logf(util::Level::warn, "remote tier unusable, using the local tier only: {}", why);
    if (hooks_.on_state) hooks_.on_state(false, why);
  }
}

void RedisTier::succeeded() {
  {
    std::lock_guard lock(state_mu_);
    last_error_.clear();
  }
  breaker_.success();
  if (down_.exchange(false)) {
    if (log_) log_->logf(util::Level::info, "remote tier {} reachable again", url_.display());
    if (hooks_.on_state) hooks_.on_state(true, {});
  }
}

std::string RedisTier::last_error() const {
  std::lock_guard lock(state_mu_);
  return last_error_;
}

RedisTier::ConnPtr RedisTier::acquire(bool* pooled) {
  *pooled = false;
  if (breaker_open()) return nullptr;
  {
    std::lock_guard lock(pool_mu_);
    if (!idle_.empty()) {
      ConnPtr c = std::move(idle_.back());
      idle_.pop_back();
      *pooled = true;
      return c;
    }
  }
  auto c = connect(url_.operation_timeout);
  if (!c) {
    failed(c.error());
    return nullptr;
  }
  return std::move(*c);
}

void RedisTier::release(ConnPtr c) {
  std::lock_guard lock(pool_mu_);
  if (idle_.size() < kMaxIdle) idle_.push_back(std::move(c));
}

bool RedisTier::run(const std::vector<std::vector<std::string>>& commands,
                    std::vector<Reply>* replies, const Meanwhile& meanwhile) {
  bool ran = !meanwhile;
  const std::function<void()> once = [&] {
    if (!ran) {
      ran = true;
      meanwhile();
    }
  };
  bool ok = false;
  // A pooled connection may have died since (a restarted server): one fresh try then.
  for (int attempt = 0; attempt < 2; ++attempt) {
    bool pooled = false;
    const Attempt a = run_once(commands, replies, &pooled, once);
    ok = a == Attempt::done;
    if (a != Attempt::transport_failed || !pooled) break;
    if (replies != nullptr) replies->clear();
  }
  once();
  return ok;
}

RedisTier::Attempt RedisTier::run_once(const std::vector<std::vector<std::string>>& commands,
                                       std::vector<Reply>* replies, bool* pooled,
                                       const std::function<void()>& meanwhile) {
  ConnPtr c = acquire(pooled);
  if (!c) return Attempt::failed;
  for (const auto& args : commands) {
    std::vector<const char*> argv;
    std::vector<std::size_t> lens;
    for (const auto& a : args) {
      argv.push_back(a.data());
      lens.push_back(a.size());
    }
    if (redisAppendCommandArgv(c->ctx, static_cast<int>(argv.size()), argv.data(), lens.data()) !=
        REDIS_OK) {
      failed(fmt::format("redis {}: {}", url_.display(), c->ctx->errstr));
      return Attempt::failed;
    }
  }
  const bool sent = send_buffered(c->ctx);
  const int send_errno = errno;
  meanwhile();
  errno = send_errno;
  std::string error_reply;
  for (std::size_t i = 0; i < commands.size(); ++i) {
    void* raw = nullptr;
    const ReadResult got = sent ? read_reply(c->ctx, &raw, max_reply_bytes_) : ReadResult::failed;
    if (got == ReadResult::oversized) {
      // A record larger than this cache takes (or a peer that is not Redis): this call fails
      // and the connection goes, but Redis is not taken for unusable.
      if (log_)
        log_->logf(util::Level::warn,
                   "remote tier: a reply from {} was longer than {} bytes; not read (the call "
                   "fails)",
                   url_.display(), max_reply_bytes_);
      return Attempt::oversized;
    }
    if (got != ReadResult::ok || raw == nullptr) {
      // The connection is dropped: its stream may be out of step. A pooled one that the server
      // closed (not one that timed out) gets one more try on a fresh connection.
      const bool timed_out =
          c->ctx->err == REDIS_ERR_IO && (errno == EAGAIN || errno == EWOULDBLOCK);
      if (*pooled && !timed_out) return Attempt::transport_failed;
      failed(fmt::format("redis {}: {}", url_.display(),
                         timed_out ? std::string("no answer within operation_timeout")
                                   : why_failed(c->ctx, "no answer")));
      return Attempt::failed;
    }
    const ReplyPtr r(static_cast<redisReply*>(raw), &freeReplyObject);
    if (r->type == REDIS_REPLY_ERROR && error_reply.empty())
      error_reply = fmt::format("redis {}: {} answered: {}", url_.display(), commands[i][0],
                                std::string_view(r->str, r->len));
    if (replies != nullptr) {
      replies->emplace_back();
      convert(r.get(), &replies->back(), 0);
    }
  }
  release(std::move(c));
  if (!error_reply.empty()) {
    failed(error_reply);
    return Attempt::failed;
  }
  succeeded();
  return Attempt::done;
}

}  // namespace detail

}  // namespace larder::remote
