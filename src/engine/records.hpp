// Binary layouts of the records the engine stores (documented in docs/format.md) and the keys of
// its index column families. Every record starts with a format byte; integers are little-endian
// in values and big-endian in index keys (so byte order is numeric order).
// Thread-safety: pure functions.
#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <string_view>

#include "larder/larder.hpp"

namespace larder::engine {

// Entries: format 1 kept the ttl in whole seconds, format 2 (written) in milliseconds. Both
// decode (a format-1 ttl is read as seconds x 1000).
inline constexpr std::uint8_t kEntryFormat = 2;
inline constexpr std::uint8_t kEntryFormatSeconds = 1;
// Access records: 1 without, 2 with the S3-FIFO fields (queue, freq, queue_tick). Both decode;
// format 2 is written.
inline constexpr std::uint8_t kAccessFormat = 2;
// counters["format"]. 1: index families (order, expiry, category) and per-category counters on
// disk; 2: those retired, the index held in memory (a format-1 store is migrated on open);
// 3: entries may carry or-byte merge operands (invalidate sets the invalid flag without a read),
// so a larder without the merge operator must not open it (a format-2 store is relabelled with
// its first operand); 4: entries may be format 2 (ttl in milliseconds), which an older larder
// would drop as malformed (a format-2 or -3 store is relabelled with its first write).
inline constexpr std::uint32_t kStoreFormat = 4;
inline constexpr std::uint32_t kIndexInMemoryFormat = 2;
inline constexpr std::uint8_t kFlagInvalid = 0x01;

struct EntryHeader {
  std::uint8_t flags = 0;
  std::int64_t created_ns = 0;
  std::int64_t ttl_ms = 0;  // 0: never expires
  std::string category;
  std::map<std::string, std::string> metadata;
  bool invalid() const { return (flags & kFlagInvalid) != 0; }
};

// Byte offset of the flags byte in an encoded entry (invalidate flips it in place).
inline constexpr std::size_t kEntryFlagsOffset = 1;

std::string encode_entry(const EntryHeader& header, std::string_view value);
// Appends the header encode_entry writes before the value (so that encode_entry(h, v) equals
// the header followed by v) to *out, from its fields; `metadata` may be null (none).
void append_entry_head(std::string* out, std::uint8_t flags, std::int64_t created_ns,
                       std::int64_t ttl_ms, std::string_view category,
                       const std::map<std::string, std::string>* metadata);
// Decodes the header; *value_offset is where the value starts. False when malformed.
bool decode_entry(std::string_view record, EntryHeader* header, std::size_t* value_offset);
// Decodes flags, created and ttl and finds the value (category and metadata skipped, nothing
// allocated): the get path's need. False when malformed.
bool decode_entry_value(std::string_view record, std::uint8_t* flags, std::int64_t* created_ns,
                        std::int64_t* ttl_ms, std::size_t* value_offset);
// Decodes only flags, created and ttl (the compaction filter's and status check's need).
bool decode_entry_times(std::string_view record, std::uint8_t* flags, std::int64_t* created_ns,
                        std::int64_t* ttl_ms);

struct AccessRecord {
  std::int64_t last_access_ns = 0;
  std::uint64_t last_tick = 0;     // logical time of the last set or hit (LRU order)
  std::uint64_t access_count = 0;  // 1 on insert, +1 per hit or overwrite (LFU order)
  std::uint64_t insert_tick = 0;   // logical time of the first insert (FIFO order)
  std::uint64_t size = 0;          // value bytes
  bool has_expiry = false;         // an expiry-index record exists at expiry_t
  std::uint64_t expiry_t = 0;      // 0 = invalid, else expired-at time in ns (>= 1)
  std::uint64_t stale_t = 0;       // stale-at time in ns (0 with no ttl)
  std::string category;
  // S3-FIFO (kept under every policy, used by s3fifo): the queue (S3Queue), the frequency f
  // (0..3: larger counts decide nothing more) and the tick at which the entry entered its queue's
  // tail (its position). queue_tick 0: no S3-FIFO position yet (written by another policy).
  std::uint8_t queue = 0;
  std::uint8_t freq = 0;
  std::uint64_t queue_tick = 0;
};

// S3-FIFO's queues of cached entries (persisted in access records).
enum class S3Queue : std::uint8_t { small = 0, main = 1 };

// A ghost (a key recently evicted from S3-FIFO's small queue), stored in the counters family
// under kGhostPrefix + key: format byte 1, LE64 tick (its position in the ghost FIFO), LE64 size.
inline constexpr std::uint8_t kGhostFormat = 1;
inline constexpr std::string_view kGhostPrefix = "g/";
inline constexpr std::string_view kGhostEnd = "g0";  // '/' + 1
struct GhostRecord {
  std::uint64_t tick = 0, size = 0;
};
std::string encode_ghost(const GhostRecord& g);
bool decode_ghost(std::string_view bytes, GhostRecord* g);

std::string encode_access(const AccessRecord& record);
bool decode_access(std::string_view bytes, AccessRecord* record);

// Times derived from created_ns and ttl: the one formula every status decision uses.
struct Deadlines {
  std::int64_t stale_at = 0;    // age >= ttl from here
  std::int64_t expired_at = 0;  // age >= stale_factor x ttl from here
};
Deadlines deadlines(std::int64_t created_ns, std::int64_t ttl_ms, double stale_factor);
EntryStatus status_at(std::uint8_t flags, std::int64_t created_ns, std::int64_t ttl_ms,
                      double stale_factor, std::int64_t now_ns);
// Expiry-index time for a stored expiry (clamped to >= 1 so that 0 can mean "invalid").
std::uint64_t expiry_time(std::int64_t expired_at);

void put_be64(std::string& out, std::uint64_t v);
std::uint64_t get_be64(std::string_view bytes);  // bytes.size() >= 8
void put_le64(std::string& out, std::uint64_t v);
std::uint64_t get_le64(std::string_view bytes);  // bytes.size() >= 8

// Index keys.
std::string expiry_key(std::uint64_t t, std::string_view key);
std::string category_key(std::string_view category, std::string_view key);
std::string category_prefix(std::string_view category);
// Empty for the ttl policy, which keeps no order index.
std::string order_key(EvictionPolicy policy, const AccessRecord& record, std::string_view key);
// The user key inside an order key of `policy`, or inside an expiry key.
std::string_view user_key_of_order(EvictionPolicy policy, std::string_view order_key);
std::string_view user_key_of_expiry(std::string_view expiry_key);
std::uint64_t time_of_expiry(std::string_view expiry_key);

}  // namespace larder::engine
