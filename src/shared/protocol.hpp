// The shared strategy's wire protocol between a client and the owner of a shared cache.
//
// A frame is a 4-byte little-endian payload length followed by the payload, at most
// kMaxFrameBytes. A payload is the protocol version (u16) then a Request or a Reply, starting
// with the request id (the reply echoes it, so a late or foreign reply is never taken for another
// request's answer). Encoding (docs/shared.md): integers little-endian of fixed width, booleans
// one byte 0/1, strings and sequences a u32 count then the items, optionals a presence byte.
// Operation codes are explicit and never reused. A frame that is too long or does not decode
// drops the connection it came on.
//
// Decoding treats every byte as hostile: no count is believed before the bytes left in the
// payload can hold that many items, and a message may take at most kDecodeMemoryFactor x its
// size + kDecodeMemorySlack bytes of memory; past that it is refused as malformed.
//
// Thread-safety: pure functions.
#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "core/service.hpp"
#include "larder/larder.hpp"

namespace larder::shared {

// 2: adds inspect and admin (cachectl). 3: a bounded hand-written encoding instead of cereal's
// (whose decoder allocated whatever a length claimed). 4: requests carry a scope (the namespace an
// enumerating call stays in). 5: statistics carry the remote tier's three counters. 6: ttls
// (set requests, touch) in milliseconds.
inline constexpr std::uint16_t kProtocolVersion = 6;
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
inline constexpr std::size_t kDecodeMemoryFactor = 4;
inline constexpr std::size_t kDecodeMemorySlack = 64 * 1024;

enum class Opcode : std::uint8_t {
  set = 1,
  get = 2,
  get_entry = 3,
  exists = 4,
  metadata = 5,
  remove = 6,
  clear = 7,
  clear_category = 8,
  invalidate = 9,
  invalidate_category = 10,
  invalidate_pattern = 11,
  keys = 12,
  keys_in_category = 13,
  cleanup = 14,
  stats = 15,
  flush = 16,
  get_many = 17,
  set_many = 18,
  peek = 19,
  inspect = 20,
  admin = 21,
  // Version 4: the atomic calls.
  add = 22,
  touch = 23,
  incr = 24,
  set_all = 25,
  // Version 4: cross-process single flight (get_or_compute's compute leases).
  lease_acquire = 26,  // text: key; number: timeout ms; holder. Reply flag: granted; count: wait ms
  lease_release = 27,  // text: key; holder
  // Subscriptions: number: the sequence number to read from; holder: at most this many. Reply
  // strings: the keys; value: their kinds, one byte each; count: next; fields["dropped"].
  events = 28,
};
inline constexpr Opcode kLastOpcode = Opcode::events;

struct Request {
  std::uint64_t id = 0;
  Opcode opcode = Opcode::get;
  std::string text;                    // key, category or pattern
  bool flag = false;                   // get_entry: include_stale; inspect: with values
  std::vector<std::string> keys;       // get_many, inspect
  std::vector<core::SetRequest> sets;  // set, set_many, add, incr (one item), set_all
  std::uint8_t code = 0;               // admin: the core::AdminCommand
  std::int64_t number = 0;             // admin: its argument; touch: ttl in ms; incr: delta
  // keys, keys_in_category, clear, clear_category, invalidate_category, invalidate_pattern: the
  // namespace they stay in (core::in_scope; "" the unnamed one).
  std::string scope;
  std::int64_t holder = 0;  // lease_acquire, lease_release: the caller's pid
};

// closing: sent by the owner (id 0) just before it closes an idle connection or stops serving:
// no request on this connection that it did not answer was run, so the client may send it again
// (to whoever serves next) even when the call is not idempotent.
enum class ReplyStatus : std::uint8_t { ok = 0, bad_request = 1, closing = 2 };

struct Reply {
  std::uint64_t id = 0;
  ReplyStatus status = ReplyStatus::ok;
  std::string error;  // bad_request: why
  bool flag = false;  // set, exists, remove, invalidate, add, touch, set_all; incr: has a value
  std::uint64_t count = 0;  // clear*, invalidate_*, cleanup; incr: the value (two's complement)
  std::optional<std::string> value;                // get, peek
  std::vector<std::optional<std::string>> values;  // get_many
  std::vector<bool> flags;                         // set_many
  std::vector<std::string> strings;                // keys, keys_in_category
  std::optional<Entry> entry;                      // get_entry
  std::optional<EntryInfo> info;                   // metadata
  std::optional<Stats> stats;                      // stats
  std::vector<std::optional<Entry>> entries;       // inspect
  std::map<std::string, std::string> fields;       // admin (with flag = ok, error, count, strings)
};

// Payloads (without the length prefix).
std::string encode(const Request& r);
std::string encode(const Reply& r);
// False (and *error says why) for a payload that is not a Request / Reply of this version.
bool decode(std::string_view payload, Request* out, std::string* error);
bool decode(std::string_view payload, Reply* out, std::string* error);

const char* to_string(Opcode opcode);

}  // namespace larder::shared
