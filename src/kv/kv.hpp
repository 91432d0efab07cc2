// The ordered key-value interface the cache engine is written against, with one implementation
// over RocksDB (rocks_kv) and one in memory (memory_kv). Column families separate records by
// role; a Batch applies atomically. Keeping the engine on this interface is what makes the RocksDB
// and memory stores behave identically.
//
// Thread-safety: get, scan and write may be called from many threads at once. A scan callback
// must not call write on the same Kv (the memory store holds its lock while scanning).
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <string_view>

#include <absl/functional/function_ref.h>

namespace larder::kv {

// Column families by role. The numbers index arrays; names are in rocks_kv.cpp.
enum class Cf : std::uint8_t {
  entries = 0,   // key -> entry record (immutable header + value)
  access = 1,    // key -> access record (last access, count, index positions, size)
  order = 2,     // eviction-order key + user key -> ""
  expiry = 3,    // BE64(expire time, 0 = invalid) + user key -> BE64(stale time)
  category = 4,  // category + '\0' + user key -> ""
  counters = 5,  // name -> value (totals, tick, format, policy, per-category counts)
};
inline constexpr int kCfCount = 6;

// The column family's name (as RocksDB stores it).
constexpr std::string_view to_string(Cf cf) {
  constexpr std::string_view names[kCfCount] = {"entries", "access",   "order",
                                                "expiry",  "category", "counters"};
  return names[static_cast<int>(cf)];
}

enum class Code : std::uint8_t { ok = 0, not_found = 1, io_error = 2, corruption = 3 };

// The result of a storage call: ok, or the kind of failure and a message naming it. A
// default-constructed Status is ok.
struct [[nodiscard]] Status {
  Code code = Code::ok;
  std::string message;

  bool ok() const { return code == Code::ok; }
  bool not_found() const { return code == Code::not_found; }
  // I/O trouble or corruption: worth counting as an error.
  bool failed() const { return code == Code::io_error || code == Code::corruption; }
  static Status missing() { return {Code::not_found, {}}; }
};

class Batch {
 public:
  virtual ~Batch() = default;
  virtual void put(Cf cf, std::string_view key, std::string_view value) = 0;
  // Puts head followed by tail as the key's value, as put(cf, key, head + tail) would, without
  // the caller building the whole value first (a store may copy the two parts straight in).
  virtual void put_parts(Cf cf, std::string_view key, std::string_view head,
                         std::string_view tail) {
    std::string value;
    value.reserve(head.size() + tail.size());
    value.append(head).append(tail);
    put(cf, key, value);
  }
  virtual void del(Cf cf, std::string_view key) = 0;
  // Deletes keys in [begin, end).
  virtual void delete_range(Cf cf, std::string_view begin, std::string_view end) = 0;
  // ORs `bits` into byte `offset` of the key's stored value without reading it (RocksDB: a merge
  // operand, see or_byte_operand). A value too short for the offset, or no value at all, reads
  // back as an empty value afterwards (callers only mark values they know are stored).
  virtual void or_byte(Cf cf, std::string_view key, std::uint32_t offset, std::uint8_t bits) = 0;
  virtual std::size_t count() const = 0;
};

// or_byte's operand as RocksDB stores it: format byte 1, LE32 offset, the bits.
inline constexpr std::uint8_t kOrByteFormat = 1;
inline constexpr std::size_t kOrByteSize = 6;
std::string or_byte_operand(std::uint32_t offset, std::uint8_t bits);
// False for an operand that does not decode.
bool decode_or_byte(std::string_view operand, std::uint32_t* offset, std::uint8_t* bits);
// Applies one operand to *value (in place). A value too short for the offset becomes empty; so
// does any value under an operand that does not decode (false), which then reads as corrupt.
bool apply_or_byte(std::string_view operand, std::string* value);

// Called for each record in key order; return false to stop.
using ScanFn = std::function<bool(std::string_view key, std::string_view value)>;

class Kv {
 public:
  virtual ~Kv() = default;
  // ok with *value set, not_found, or a failure.
  virtual Status get(Cf cf, std::string_view key, std::string* value) = 0;
  // As get, but passes fn a view of the value instead of copying it out: for a caller that keeps
  // only part of it. The view is valid only during the call, and fn must not call this Kv. ok
  // once fn ran, not_found (fn not called), or a failure.
  virtual Status get_view(Cf cf, std::string_view key,
                          absl::FunctionRef<void(std::string_view)> fn) {
    std::string value;
    Status s = get(cf, key, &value);
    if (s.ok()) fn(value);
    return s;
  }
  // Visits keys in [begin, end) in order (end empty: to the last key).
  virtual Status scan(Cf cf, std::string_view begin, std::string_view end, const ScanFn& fn) = 0;
  virtual std::unique_ptr<Batch> new_batch() = 0;
  virtual Status write(Batch& batch) = 0;
  // Makes everything written so far durable in the store's files (memtable flush). No-op in memory.
  virtual Status flush() = 0;
  // Compacts a column family (reclaims the space of deleted records). No-op in memory.
  virtual Status compact(Cf cf) = 0;
  // Empties a column family by dropping and recreating it, so that records the store can no
  // longer read (a damaged table file) go with it. Returns ok, or why not. Batches must not be
  // built concurrently with it (the engine holds its mutex for both).
  virtual Status reset(Cf cf) = 0;
  // After a failed write: makes the store writable again if it can (RocksDB stops writing after a
  // background error such as a full disk until it is resumed or reopened). Returns ok when the
  // store takes writes again (*reopened: it was closed and reopened, so callers must reload what
  // they cache of it), else why not. Must not run concurrently with itself. No-op in memory.
  virtual Status recover(bool* reopened) {
    *reopened = false;
    return Status();
  }
  // Whether what is written outlives the process (false for the memory store, which a user of
  // it may then spare records that only matter to a later open).
  virtual bool durable() const { return true; }
};

}  // namespace larder::kv
