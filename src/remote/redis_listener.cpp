// The Redis tier's change stream: the listener thread that applies other caches' changes, and
// the replay of writes Redis could not take (redis_tier.hpp).
#include <algorithm>
#include <charconv>

#include <fmt/format.h>

#include "remote/redis_tier.hpp"
#include "util/fs.hpp"

namespace larder::remote::detail {

bool RedisTier::apply_pending(const Change& c) {
  switch (c.kind) {
    case Change::Kind::key: {
      std::optional<Entry> e = hooks_.local_entry ? hooks_.local_entry(c.arg) : std::nullopt;
      return e ? put(c.arg, *e) : remove(c.arg);
    }
    case Change::Kind::category:
      return remove_category(c.arg, c.scope);
    case Change::Kind::pattern:
      return remove_matching(c.arg, c.scope);
    case Change::Kind::clear:
      return remove_all(c.scope);
  }
  return true;
}

void RedisTier::replay_pending() {
  std::deque<Change> todo;
  std::uint64_t dropped = 0;
  {
    std::lock_guard lock(pending_mu_);
    todo.swap(pending_);
    std::swap(dropped, pending_dropped_);
  }
  if (todo.empty()) return;
  std::size_t done = 0;
  // Each failed replay remembers itself again (put/remove/... do), so stop at the first one
  // and put the rest back in order.
  // A key change stays counted in unsynced_ until its replay is done (a failed one counts
  // again when it remembers itself).
  while (!todo.empty()) {
    Change c = std::move(todo.front());
    todo.pop_front();
    const bool ok = apply_pending(c);
    if (c.kind == Change::Kind::key) count_unsynced(c.arg, -1);
    if (!ok) break;
    ++done;
  }
  if (!todo.empty()) {
    std::lock_guard lock(pending_mu_);
    for (auto& c : todo) {
      if (pending_.size() < kMaxPending) {
        pending_.push_back(std::move(c));
      } else if (c.kind == Change::Kind::key) {
        if (auto it = unsynced_.find(c.arg); it != unsynced_.end() && --it->second <= 0)
          unsynced_.erase(it);
      }
    }
  }
  if (log_)
    log_->logf(util::Level::info,
               "remote tier: replayed {} write(s) made while Redis was unreachable{}", done,
               dropped > 0 ? fmt::format(" ({} more were not kept)", dropped) : std::string());
}

void RedisTier::note_fetch(StreamId at) {
  std::lock_guard lock(early_mu_);
  if (positioned_) return;
  if (!have_early_ || at < early_) early_ = at;
  have_early_ = true;
}

void RedisTier::set_applied(std::string_view id) {
  const std::optional<StreamId> at = parse_id(id);
  if (!at) return;
  std::lock_guard lock(early_mu_);
  positioned_ = true;
  applied_ = *at;
}

void RedisTier::save_position(const std::string& id) {
  if (state_file_.empty()) return;
  (void)util::atomic_write_file(state_file_, fmt::format("{}\n{}\n", url_.prefix, id));
}

void RedisTier::listen() {
  // Where this tier last read the stream (a previous process's position, if it was on this
  // prefix), so changes made while nobody here listened are applied too.
  std::string last;
  if (!state_file_.empty()) {
    if (auto content = util::read_file(state_file_); content && content->size() < 256) {
      const std::size_t nl = content->find('\n');
      if (nl != std::string::npos && content->substr(0, nl) == url_.prefix) {
        std::string id = content->substr(nl + 1);
        while (!id.empty() && (id.back() == '\n' || id.back() == '\r')) id.pop_back();
        if (parse_id(id)) last = id;
      }
    }
  }
  const std::string stream = url_.prefix + ":events";
  milliseconds pause{100};
  std::string saved = last;
  auto saved_at = Clock::now();
  const auto stopping = [&](milliseconds wait) {
    std::unique_lock lock(stop_mu_);
    return stop_cv_.wait_for(lock, wait, [&] { return stop_; });
  };
  while (!stopping(milliseconds(0))) {
    auto conn = connect(url_.operation_timeout + kBlock);
    if (!conn) {
      failed(conn.error());
      if (stopping(pause)) break;
      pause = std::min(pause * 2, milliseconds(2000));
      continue;
    }
    redisContext* ctx = (*conn)->ctx;
    pause = milliseconds(100);
    bool ok = true;
    std::string refused;  // an error reply's text
    // Writes that did not reach Redis go first: a gap found below drops the local copies, and
    // the replay reads them. Pooled connections from before are likely dead.
    {
      std::lock_guard lock(pool_mu_);
      idle_.clear();
    }
    breaker_.probe_now();
    replay_pending();
    bool replayed = false;
    {
      std::lock_guard lock(pending_mu_);
      replayed = pending_.empty();
    }
    if (!replayed) {  // Redis refused them: try again later, before anything else
      if (stopping(pause)) break;
      continue;
    }
    if (last.empty()) {
      // First start on this prefix: from the stream's end, or from where the earliest fetch
      // made so far read, if that is earlier.
      const ReplyPtr r =
          command(ctx, {"XREVRANGE", stream, "+", "-", "COUNT", "1"}, listener_reply_bytes_);
      ok = r != nullptr && r->type != REDIS_REPLY_ERROR;
      if (r != nullptr && r->type == REDIS_REPLY_ERROR) refused.assign(r->str, r->len);
      StreamId end{0, 0};
      if (ok && r->type == REDIS_REPLY_ARRAY && r->elements == 1 &&
          r->element[0]->type == REDIS_REPLY_ARRAY && r->element[0]->elements >= 1 &&
          r->element[0]->element[0]->type == REDIS_REPLY_STRING)
        end = parse_id({r->element[0]->element[0]->str, r->element[0]->element[0]->len})
                  .value_or(StreamId{0, 0});
      if (ok) {
        std::lock_guard lock(early_mu_);
        if (have_early_ && early_ < end) end = early_;
        positioned_ = true;
        applied_ = end;
        last = fmt::format("{}-{}", end.first, end.second);
      }
    } else {
      // Back after a while: were changes removed from the stream before this tier read them?
      // Trimming removes the oldest items, so they were if the stream's first item is past this
      // tier's position (its own last item is gone), if it is empty but has had items past it,
      // or if it is gone (Redis lost its data) while this tier had read some. Conservative: a
      // position whose next items all survive may still count as a gap.
      const ReplyPtr r = command(ctx, {"XINFO", "STREAM", stream}, listener_reply_bytes_);
      ok = r != nullptr;
      const StreamId mine = parse_id(last).value_or(StreamId{0, 0});
      bool gap = false;
      StreamId newest{0, 0};
      if (ok && r->type == REDIS_REPLY_ERROR) {
        if (std::string_view(r->str, r->len).find("no such key") != std::string_view::npos) {
          gap = mine > StreamId{0, 0};
        } else {
          ok = false;
          refused.assign(r->str, r->len);
        }
      } else if (ok && r->type == REDIS_REPLY_ARRAY) {
        long long length = -1;
        StreamId first{0, 0};
        for (std::size_t i = 0; i + 1 < r->elements; i += 2) {
          const redisReply* name = r->element[i];
          const redisReply* value = r->element[i + 1];
          if (name->type != REDIS_REPLY_STRING) continue;
          const std::string_view n(name->str, name->len);
          if (n == "length" && value->type == REDIS_REPLY_INTEGER) length = value->integer;
          if (value->type != REDIS_REPLY_STRING) continue;
          const StreamId id = parse_id({value->str, value->len}).value_or(StreamId{0, 0});
          if (n == "last-generated-id") newest = id;
          if (n == "recorded-first-entry-id") first = id;
        }
        gap = length == 0 ? newest > mine : (length > 0 && first > mine);
      }
      if (ok && gap) {
        if (log_)
          log_->logf(util::Level::warn,
                     "remote tier: changes were removed from the stream before this cache read "
                     "them; dropping the local copies");
        if (hooks_.on_gap)
          hooks_.on_gap(std::max(newest, mine),
                        [this](std::string_view key) { return unsynced(key); });
        last = newest > StreamId{0, 0} ? fmt::format("{}-{}", newest.first, newest.second) : last;
      }
      if (ok) set_applied(last);
    }
    if (!ok) {
      failed(fmt::format("redis {}: {}", url_.display(),
                         !refused.empty()         ? "reading the change stream: " + refused
                         : ctx->errstr[0] != '\0' ? why_failed(ctx, "")
                                                  : std::string("reading the change stream")));
      if (stopping(pause)) break;
      continue;
    }
    succeeded();
    listening_ = true;
    while (!stopping(milliseconds(0))) {
      const ReplyPtr r = command(ctx,
                                 {"XREAD", "COUNT", std::to_string(kReadCount), "BLOCK",
                                  std::to_string(kBlock.count()), "STREAMS", stream, last},
                                 listener_reply_bytes_);
      if (r == nullptr || r->type == REDIS_REPLY_ERROR) {
        listening_ = false;
        failed(r == nullptr
                   ? fmt::format("redis {}: {}", url_.display(), why_failed(ctx, "no answer"))
                   : fmt::format("redis {}: XREAD answered: {}", url_.display(),
                                 std::string_view(r->str, r->len)));
        break;
      }
      if (down_.load()) succeeded();  // a call failed meanwhile, but Redis answers again
      if (r->type == REDIS_REPLY_ARRAY && r->elements == 1 &&
          r->element[0]->type == REDIS_REPLY_ARRAY && r->element[0]->elements == 2) {
        const redisReply* items = r->element[0]->element[1];
        for (std::size_t i = 0; items->type == REDIS_REPLY_ARRAY && i < items->elements; ++i) {
          const redisReply* item = items->element[i];
          if (item->type != REDIS_REPLY_ARRAY || item->elements != 2 ||
              item->element[0]->type != REDIS_REPLY_STRING)
            continue;
          last.assign(item->element[0]->str, item->element[0]->len);
          const redisReply* fields = item->element[1];
          std::string o, sc;
          std::vector<std::string> args;  // a key item names one key or more
          int kind = 0;
          for (std::size_t f = 0; fields->type == REDIS_REPLY_ARRAY && f + 1 < fields->elements;
               f += 2) {
            const redisReply* n = fields->element[f];
            const redisReply* v = fields->element[f + 1];
            if (n->type != REDIS_REPLY_STRING || v->type != REDIS_REPLY_STRING) continue;
            const std::string_view name(n->str, n->len);
            const std::string_view value(v->str, v->len);
            if (name == "o")
              o = value;
            else if (name == "a" && args.size() < kMaxEventArgs)
              args.emplace_back(value);
            else if (name == "s")
              sc = value;
            else if (name == "t" && value.size() == 1)
              kind = value[0] - '0';
          }
          if (o == origin_ || kind < 1 || kind > 4 || !hooks_.on_change) continue;
          const auto k = static_cast<Change::Kind>(kind);
          const StreamId id = parse_id(last).value_or(StreamId{0, 0});
          if (args.empty()) args.emplace_back();
          // Only a key item names several; for the others the first is the argument.
          if (k != Change::Kind::key) args.resize(1);
          for (std::string& a : args) hooks_.on_change(Change{k, std::move(a), sc, id});
        }
      }
      set_applied(last);
      {
        std::lock_guard lock(pending_mu_);
        ok = pending_.empty();
      }
      if (!ok && !breaker_open()) replay_pending();
      if (last != saved && Clock::now() - saved_at > std::chrono::seconds(1)) {
        save_position(last);
        saved = last;
        saved_at = Clock::now();
      }
      // After items, a short pause gathers the next ones into one read: a burst of writes (this
      // cache's own, which it reads back too) wakes the listener once per pause, not per item.
      if (r->type == REDIS_REPLY_ARRAY && stopping(kGather)) break;
    }
    if (stopping(milliseconds(0))) break;
    if (stopping(pause)) break;
  }
  if (last.empty()) {
    std::lock_guard lock(early_mu_);
    if (have_early_) last = fmt::format("{}-{}", early_.first, early_.second);
  }
  if (last != saved && !last.empty()) save_position(last);
}

}  // namespace larder::remote::detail
