// The shared strategy's wire protocol between a client and the owner of a shared cache.
//
// A frame is a 4-byte little-endian payload length followed by the payload, at most
// kMaxFrameBytes. A payload is the protocol version (u16) then a Request or a Reply, starting
// with the request id (the reply echoes it, so a late or foreign reply is never taken for another
// request's answer). A request is its id, its opcode (u8) and the operation's arguments; a reply
// is the id, a status, an error text and, when the status is ok, the operation's Result. The
// operations and their fields are the table in operations.hpp; codec.hpp encodes each field
// (docs/shared.md). A frame that is too long or does not decode drops the connection it came on.
//
// Thread-safety: pure functions.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

#include "shared/codec.hpp"
#include "shared/operations.hpp"

namespace larder::shared {

// 2: adds inspect and admin (cachectl). 3: a bounded hand-written encoding instead of cereal's
// (whose decoder allocated whatever a length claimed). 4: requests carry a scope (the namespace an
// enumerating call stays in). 5: statistics carry the remote tier's three counters. 6: ttls
// (set requests, touch) in milliseconds. 7: each operation carries its own arguments and result
// (the operation table) instead of one request and one reply struct for all.
inline constexpr std::uint16_t kProtocolVersion = 7;
inline constexpr std::uint32_t kMaxFrameBytes = 256u << 20;
inline constexpr std::size_t kFrameHeaderBytes = 4;
// A frame's payload length from its 4-byte header (the first kFrameHeaderBytes of `header`;
// the caller has them). Larger than kMaxFrameBytes: the peer is refused.
inline std::uint32_t frame_length(const void* header) {
  const auto* b = static_cast<const unsigned char*>(header);
  return std::uint32_t{b[0]} | (std::uint32_t{b[1]} << 8) | (std::uint32_t{b[2]} << 16) |
         (std::uint32_t{b[3]} << 24);
}
// Appends the header of a frame of `length` payload bytes to *out.
inline void put_frame_length(std::string* out, std::uint32_t length) {
  for (int i = 0; i < 4; ++i) out->push_back(static_cast<char>((length >> (8 * i)) & 0xff));
}

struct Request {
  std::uint64_t id = 0;
  Operation op;
  Opcode opcode() const {
    return std::visit([](const auto& o) { return std::decay_t<decltype(o)>::code; }, op);
  }
};

// closing: sent by the owner (id 0) just before it closes an idle connection or stops serving:
// no request on this connection that it did not answer was run, so the client may send it again
// (to whoever serves next) even when the call is not idempotent.
enum class ReplyStatus : std::uint8_t { ok = 0, bad_request = 1, closing = 2 };

struct Reply {
  std::uint64_t id = 0;
  ReplyStatus status = ReplyStatus::ok;
  std::string error;   // bad_request: why
  std::string result;  // ok: the operation's Result, encoded (decode_result)
};

// The payload of a request of operation Op with these arguments (Op's args() types, in order),
// encoded straight from them: a client's call copies its key and value once, into the frame.
// The id can be changed in place (set_request_id).
template <class Op, class... A>
std::string encode_request(std::uint64_t id, const A&... args);
void set_request_id(std::string* payload, std::uint64_t id);

// Payloads (without the length prefix).
std::string encode(const Request& r);
std::string encode(const Reply& r);
// False (and *error says why) for a payload that is not a Request / Reply of this version.
bool decode(std::string_view payload, Request* out, std::string* error);
bool decode(std::string_view payload, Reply* out, std::string* error);

// A Result as a reply carries it, and back (false, *error says why, when malformed; *out is
// then unspecified).
template <class R>
std::string encode_result(const R& result) {
  Writer w;
  put(w, result);
  return w.take();
}
template <class R>
bool decode_result(std::string_view bytes, R* out, std::string* error) {
  try {
    Reader r(bytes);
    get(r, *out);  // (*out is unspecified when this fails)
    if (!r.done()) {
      *error = "trailing bytes after the result";
      return false;
    }
    return true;
  } catch (const std::exception& e) {  // DecodeError, or bad_alloc within the bound
    *error = fmt::format("malformed result: {}", e.what());
    return false;
  }
}

// ---- implementation

void put_request_header(Writer& w, std::uint64_t id, Opcode opcode);

template <class Op, class... A>
std::string encode_request(std::uint64_t id, const A&... args) {
  static_assert(sizeof...(A) == std::tuple_size_v<decltype(Op{}.args())>,
                "an operation's arguments are its args(), in order");
  Writer w;
  put_request_header(w, id, Op::code);
  (put(w, args), ...);
  return w.take();
}

}  // namespace larder::shared
