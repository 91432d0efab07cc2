#include "shared/protocol.hpp"

#include <fmt/format.h>

namespace larder::shared {

namespace {

void put_version(Writer& w) {
  w.u8(static_cast<std::uint8_t>(kProtocolVersion & 0xff));
  w.u8(static_cast<std::uint8_t>(kProtocolVersion >> 8));
}

template <class F>
bool decode_payload(std::string_view payload, std::string* error, F&& body) {
  try {
    Reader r(payload);
    const std::uint8_t lo = r.u8();
    const auto version = static_cast<std::uint16_t>(lo | (r.u8() << 8));
    if (version != kProtocolVersion) {
      *error = fmt::format("protocol version {} (this side speaks {})", version, kProtocolVersion);
      return false;
    }
    if (!body(r)) return false;
    if (!r.done()) {
      *error = "trailing bytes after the message";
      return false;
    }
    return true;
  } catch (const std::exception& e) {  // DecodeError, or bad_alloc within the bound
    *error = fmt::format("malformed message: {}", e.what());
    return false;
  }
}

}  // namespace

void put_request_header(Writer& w, std::uint64_t id, Opcode opcode) {
  put_version(w);
  w.u64(id);
  w.u8(static_cast<std::uint8_t>(opcode));
}

void set_request_id(std::string* payload, std::uint64_t id) {
  for (int i = 0; i < 8; ++i)
    (*payload)[2 + static_cast<std::size_t>(i)] = static_cast<char>((id >> (8 * i)) & 0xff);
}

std::string encode(const Request& q) {
  return std::visit(
      [&](const auto& o) {
        using Op = std::decay_t<decltype(o)>;
        return std::apply([&](const auto&... a) { return encode_request<Op>(q.id, a...); },
                          o.args());
      },
      q.op);
}

std::string encode(const Reply& p) {
  Writer w;
  put_version(w);
  w.u64(p.id);
  w.u8(static_cast<std::uint8_t>(p.status));
  put(w, p.error);
  w.bytes(p.result);
  return w.take();
}

bool decode(std::string_view payload, Request* out, std::string* error) {
  return decode_payload(payload, error, [&](Reader& r) {
    Request q;
    q.id = r.u64();
    const std::uint8_t code = r.u8();
    const bool known = with_opcode(code, [&]<class Op>() {
      Op o;
      std::apply([&](auto&... field) { (get(r, field), ...); }, o.args());
      q.op = std::move(o);
    });
    if (!known) {
      *error = fmt::format("unknown operation {}", code);
      return false;
    }
    *out = std::move(q);
    return true;
  });
}

bool decode(std::string_view payload, Reply* out, std::string* error) {
  return decode_payload(payload, error, [&](Reader& r) {
    Reply p;
    p.id = r.u64();
    const std::uint8_t status = r.u8();
    if (status > static_cast<std::uint8_t>(ReplyStatus::closing))
      throw DecodeError(fmt::format("unknown reply status {}", status));
    p.status = static_cast<ReplyStatus>(status);
    get(r, p.error);
    p.result = std::string(r.bytes(r.left()));
    *out = std::move(p);
    return true;
  });
}

const char* to_string(Opcode opcode) {
  const char* name = "unknown";
  (void)with_opcode(static_cast<std::uint8_t>(opcode), [&]<class Op>() { name = Op::name; });
  return name;
}

}  // namespace larder::shared
