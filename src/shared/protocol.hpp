// The shared strategy's wire protocol between a client and the owner of a shared cache.
//
// A frame is a 4-byte little-endian payload length followed by the payload, at most
// kMaxFrameBytes. A payload is a cereal portable-binary archive of a Request or a Reply, each
// starting with the protocol version and the request id (the reply echoes it, so a late or
// foreign reply is never taken for another request's answer). Operation codes are explicit and
// never reused. A frame that is too long or does not decode drops the connection it came on.
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

// 2: adds inspect and admin (cachectl).
inline constexpr std::uint16_t kProtocolVersion = 2;
inline constexpr std::uint32_t kMaxFrameBytes = 256u << 20;

enum class Op : std::uint8_t {
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
};

struct Request {
  std::uint64_t id = 0;
  Op op = Op::get;
  std::string text;                    // key, category or pattern
  bool flag = false;                   // get_entry: include_stale; inspect: with values
  std::vector<std::string> keys;       // get_many, inspect
  std::vector<core::SetRequest> sets;  // set, set_many
  std::uint8_t code = 0;               // admin: the core::AdminOp
  std::int64_t number = 0;             // admin: its argument
};

enum class ReplyStatus : std::uint8_t { ok = 0, bad_request = 1 };

struct Reply {
  std::uint64_t id = 0;
  ReplyStatus status = ReplyStatus::ok;
  std::string error;                               // bad_request: why
  bool flag = false;                               // set, exists, remove, invalidate
  std::uint64_t count = 0;                         // clear*, invalidate_*, cleanup
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

const char* to_string(Op op);

}  // namespace larder::shared
