// hiredis I/O with bounds and without SIGPIPE (redis_tier.hpp).
#include <sys/socket.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <random>

#include <fmt/format.h>

#include "remote/redis_tier.hpp"

namespace larder::remote::detail {

// hiredis writes with write(2), which raises SIGPIPE (killing the host) when the peer went away.
// So this writes what hiredis has buffered itself, with send(MSG_NOSIGNAL), before hiredis reads
// the answers (with nothing left to write, hiredis only reads). The process's handling of
// SIGPIPE is not touched. Returns false with ctx->err / errstr set (errno kept: EAGAIN is the
// send timeout) when the buffer could not be written.
bool send_buffered(redisContext* ctx) {
  std::size_t len = sdslen(ctx->obuf);
  std::size_t done = 0;
  while (done < len) {
    const ssize_t n = ::send(ctx->fd, ctx->obuf + done, len - done, MSG_NOSIGNAL);
    if (n < 0) {
      if (errno == EINTR) continue;
      const int saved = errno;
      ctx->err = REDIS_ERR_IO;
      std::snprintf(ctx->errstr, sizeof(ctx->errstr), "%s", std::strerror(saved));
      errno = saved;  // the connection is dropped: what is left in its buffer does not matter
      return false;
    }
    done += static_cast<std::size_t>(n);
  }
  if (sdsalloc(ctx->obuf) > (64u << 10)) {  // as hiredis does: a large buffer is not kept
    sdsfree(ctx->obuf);
    ctx->obuf = sdsempty();
  } else {
    sdsclear(ctx->obuf);
  }
  return ctx->obuf != nullptr;
}

// hiredis allocates an array reply's element table as the reply declares it: a reply declaring
// more than kMaxReplyElements elements is refused instead (the reader fails with "Out of
// memory", the connection is dropped). Installed on every connection (bound_replies).
namespace {
void* (*g_create_array)(const redisReadTask*, int) = nullptr;
}  // namespace
static void* bounded_create_array(const redisReadTask* task, int elements) {
  if (elements < 0 || static_cast<std::size_t>(elements) > kMaxReplyElements) return nullptr;
  return g_create_array(task, elements);
}
void bound_replies(redisContext* ctx) {
  static redisReplyObjectFunctions bounded = [&] {
    redisReplyObjectFunctions f = *ctx->reader->fn;
    g_create_array = f.createArray;
    f.createArray = bounded_create_array;
    return f;
  }();
  ctx->reader->fn = &bounded;
}

// Why a connection failed: its error text, or what a reader failing with REDIS_ERR_OOM means
// here as a rule; `otherwise` when it has none.
std::string why_failed(const redisContext* ctx, const char* otherwise) {
  if (ctx->err == REDIS_ERR_OOM)
    return fmt::format("a reply declared more than {} elements, or memory ran out (not read)",
                       kMaxReplyElements);
  return ctx->errstr[0] != '\0' ? std::string(ctx->errstr) : std::string(otherwise);
}

// The next reply, reading at most `max_bytes` of a reply not yet complete: hiredis buffers a
// bulk string until all of it is there, whatever length the peer declares. oversized: the peer
// sent more (the connection must be dropped); failed: ctx->err says why.
ReadResult read_reply(redisContext* ctx, void** reply, std::uint64_t max_bytes) {
  *reply = nullptr;
  if (redisGetReplyFromReader(ctx, reply) != REDIS_OK) return ReadResult::failed;
  while (*reply == nullptr) {
    if (redisBufferRead(ctx) != REDIS_OK) return ReadResult::failed;
    if (ctx->reader->len - ctx->reader->pos > max_bytes) return ReadResult::oversized;
    if (redisGetReplyFromReader(ctx, reply) != REDIS_OK) return ReadResult::failed;
  }
  return ReadResult::ok;
}

// One command and its answer (nullptr: the connection failed, ctx->errstr says how, or the
// answer was over `max_bytes`).
ReplyPtr command(redisContext* ctx, const std::vector<std::string>& args, std::uint64_t max_bytes) {
  std::vector<const char*> argv;
  std::vector<std::size_t> lens;
  for (const auto& a : args) {
    argv.push_back(a.data());
    lens.push_back(a.size());
  }
  void* raw = nullptr;
  if (redisAppendCommandArgv(ctx, static_cast<int>(argv.size()), argv.data(), lens.data()) !=
          REDIS_OK ||
      !send_buffered(ctx) || read_reply(ctx, &raw, max_bytes) != ReadResult::ok)
    raw = nullptr;
  return ReplyPtr(static_cast<redisReply*>(raw), &freeReplyObject);
}

std::string random_origin() {
  std::random_device rd;
  return fmt::format("{:08x}{:08x}", rd(), rd());
}

}  // namespace larder::remote::detail
