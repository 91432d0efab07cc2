// The shared protocol's field codec: how each type an operation carries (its arguments and its
// result) is written and read. Integers little-endian of fixed width, booleans one byte 0/1,
// strings and sequences a u32 count then the items, optionals a presence byte, structs their
// fields in order. `put(w, x)` writes x; `get(r, x)` reads into x.
//
// Reading treats every byte as hostile: no count is believed before the bytes left can hold
// that many items, and a message may take at most kDecodeMemoryFactor x its size +
// kDecodeMemorySlack bytes of memory; past that, or on any other malformation, DecodeError.
//
// Thread-safety: Writer and Reader are single-threaded values; the functions are pure.
#pragma once

#include <chrono>
#include <cstdint>
#include <map>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>
#include <tuple>
#include <variant>
#include <vector>

#include <fmt/format.h>

#include "core/service.hpp"
#include "larder/larder.hpp"
#include "stats/counters.hpp"

namespace larder::shared {

inline constexpr std::size_t kDecodeMemoryFactor = 4;
inline constexpr std::size_t kDecodeMemorySlack = 64 * 1024;

struct DecodeError : std::runtime_error {
  using std::runtime_error::runtime_error;
};

class Writer {
 public:
  static constexpr std::size_t kLargeBytes = 4096;
  static constexpr std::size_t kTrailerRoom = 4096;
  void u8(std::uint8_t v) { out_.push_back(static_cast<char>(v)); }
  void u32(std::uint32_t v) {
    for (int i = 0; i < 4; ++i) out_.push_back(static_cast<char>((v >> (8 * i)) & 0xff));
  }
  void u64(std::uint64_t v) {
    for (int i = 0; i < 8; ++i) out_.push_back(static_cast<char>((v >> (8 * i)) & 0xff));
  }
  void bytes(std::string_view v) {
    // A large string (a value) is followed by a few small fields: room for them now, so the
    // buffer is not copied again when they are appended.
    if (v.size() >= kLargeBytes && out_.capacity() - out_.size() < v.size() + kTrailerRoom)
      out_.reserve(out_.size() + v.size() + kTrailerRoom);
    out_.append(v);
  }
  std::string& out() { return out_; }
  std::string take() { return std::move(out_); }

 private:
  std::string out_;
};

class Reader {
 public:
  explicit Reader(std::string_view in)
      : in_(in), budget_(kDecodeMemoryFactor * in.size() + kDecodeMemorySlack) {}

  std::size_t left() const { return in_.size() - pos_; }
  bool done() const { return pos_ == in_.size(); }
  std::uint8_t u8() { return static_cast<std::uint8_t>(take(1)[0]); }
  std::uint32_t u32() {
    const std::string_view b = take(4);
    std::uint32_t v = 0;
    for (int i = 0; i < 4; ++i) v |= std::uint32_t{static_cast<unsigned char>(b[i])} << (8 * i);
    return v;
  }
  std::uint64_t u64() {
    const std::string_view b = take(8);
    std::uint64_t v = 0;
    for (int i = 0; i < 8; ++i) v |= std::uint64_t{static_cast<unsigned char>(b[i])} << (8 * i);
    return v;
  }
  // n bytes of the payload, charged to the memory budget (the caller copies them).
  std::string_view bytes(std::size_t n) {
    if (n > left())
      throw DecodeError(fmt::format("a string of {} bytes with {} bytes left", n, left()));
    charge(n);
    return take(n);
  }
  // A count of elements that each take at least `min_bytes` of the payload and `element_bytes`
  // of memory.
  std::size_t count(std::size_t min_bytes, std::size_t element_bytes) {
    const std::uint32_t n = u32();
    if (n > left() / min_bytes)
      throw DecodeError(fmt::format("{} elements with {} bytes left", n, left()));
    charge(std::size_t{n} * element_bytes);
    return n;
  }
  // What is left of the payload, uncharged (a nested message decoded by its own Reader).
  std::string_view rest() { return take(left()); }

 private:
  std::string_view take(std::size_t n) {
    if (n > left()) throw DecodeError("truncated");
    const std::string_view v = in_.substr(pos_, n);
    pos_ += n;
    return v;
  }
  void charge(std::size_t bytes) {
    if (bytes > budget_)
      throw DecodeError("the message would take more memory than its size allows");
    budget_ -= bytes;
  }

  std::string_view in_;
  std::size_t pos_ = 0;
  std::size_t budget_;
};

// The grant of a compute lease (Service::acquire_lease's two results).
struct LeaseGrant {
  bool granted = false;
  std::int64_t wait_ms = -1;
};

// ---- scalars and containers

inline void put(Writer& w, bool v) {
  w.u8(v ? 1 : 0);
}
inline void put(Writer& w, std::uint8_t v) {
  w.u8(v);
}
inline void put(Writer& w, std::int64_t v) {
  w.u64(static_cast<std::uint64_t>(v));
}
inline void put(Writer& w, std::uint64_t v) {
  w.u64(v);
}
inline void put(Writer& w, std::string_view v) {
  w.u32(static_cast<std::uint32_t>(v.size()));
  w.bytes(v);
}
inline void put(Writer& w, const std::string& v) {
  put(w, std::string_view(v));
}
inline void put(Writer&, std::monostate) {}

inline void get(Reader& r, bool& v) {
  const std::uint8_t b = r.u8();
  if (b > 1) throw DecodeError(fmt::format("bad boolean {}", b));
  v = b == 1;
}
inline void get(Reader& r, std::uint8_t& v) {
  v = r.u8();
}
inline void get(Reader& r, std::int64_t& v) {
  v = static_cast<std::int64_t>(r.u64());
}
inline void get(Reader& r, std::uint64_t& v) {
  v = r.u64();
}
inline void get(Reader& r, std::string& v) {
  v = std::string(r.bytes(r.u32()));
}
inline void get(Reader&, std::monostate&) {}

// The fewest payload bytes an encoded T takes (bounds a count before anything is allocated).
template <class T>
struct MinBytes {
  static constexpr std::size_t value = 1;
};
template <>
struct MinBytes<std::int64_t> {
  static constexpr std::size_t value = 8;
};
template <>
struct MinBytes<std::uint64_t> {
  static constexpr std::size_t value = 8;
};
template <>
struct MinBytes<std::string> {
  static constexpr std::size_t value = 4;
};
template <class T>
struct MinBytes<std::vector<T>> {
  static constexpr std::size_t value = 4;
};
template <>
struct MinBytes<core::SetRequest> {
  static constexpr std::size_t value = 24;  // key 4, value 4, ttl 8, category 4, metadata 4
};
template <>
struct MinBytes<Event> {
  static constexpr std::size_t value = 5;  // kind 1, key 4
};

template <class T>
void put(Writer& w, const std::optional<T>& v);
template <class T>
void get(Reader& r, std::optional<T>& v);
template <class T>
void put(Writer& w, const std::vector<T>& items);
template <class T>
void get(Reader& r, std::vector<T>& items);

inline void put(Writer& w, const std::vector<bool>& items) {
  w.u32(static_cast<std::uint32_t>(items.size()));
  for (bool b : items) put(w, b);
}
inline void get(Reader& r, std::vector<bool>& items) {
  const std::size_t n = r.count(1, 1);  // packed bits in memory, one byte each on the wire
  items.clear();
  items.reserve(n);
  for (std::size_t i = 0; i < n; ++i) {
    bool b = false;
    get(r, b);
    items.push_back(b);
  }
}

inline void put(Writer& w, const std::map<std::string, std::string>& m) {
  w.u32(static_cast<std::uint32_t>(m.size()));
  for (const auto& [k, v] : m) put(w, k), put(w, v);
}
inline void get(Reader& r, std::map<std::string, std::string>& m) {
  m.clear();
  const std::size_t n = r.count(8, 2 * sizeof(std::string) + 32);
  for (std::size_t i = 0; i < n; ++i) {
    std::string k, v;
    get(r, k), get(r, v);
    m.insert_or_assign(std::move(k), std::move(v));
  }
}

// ---- the library's types

inline std::int64_t to_ns(std::chrono::system_clock::time_point t) {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(t.time_since_epoch()).count();
}
inline std::chrono::system_clock::time_point from_ns(std::int64_t ns) {
  return std::chrono::system_clock::time_point(
      std::chrono::duration_cast<std::chrono::system_clock::duration>(
          std::chrono::nanoseconds(ns)));
}

inline void put(Writer& w, const core::SetRequest& s) {
  put(w, s.key), put(w, s.value), put(w, s.ttl_ms), put(w, s.category), put(w, s.metadata);
}
// The same bytes as the SetRequest the view stands for.
inline void put(Writer& w, const core::SetView& s) {
  static const std::map<std::string, std::string> kNone;
  put(w, s.key), put(w, s.value), put(w, s.ttl_ms), put(w, s.category);
  put(w, s.metadata != nullptr ? *s.metadata : kNone);
}
inline void get(Reader& r, core::SetRequest& s) {
  get(r, s.key), get(r, s.value), get(r, s.ttl_ms), get(r, s.category), get(r, s.metadata);
}

inline void put(Writer& w, const EntryInfo& i) {
  put(w, i.key), put(w, i.category);
  w.u8(static_cast<std::uint8_t>(i.status));
  put(w, std::uint64_t{i.size_bytes});
  put(w, to_ns(i.created_at)), put(w, to_ns(i.last_accessed));
  std::optional<std::int64_t> expires;
  if (i.expires_at) expires = to_ns(*i.expires_at);
  put(w, expires);
  put(w, std::uint64_t{i.access_count});
  put(w, i.metadata);
  put(w, to_ns(i.observed_at));
}
inline void get(Reader& r, EntryInfo& i) {
  get(r, i.key), get(r, i.category);
  const std::uint8_t status = r.u8();
  if (status > static_cast<std::uint8_t>(EntryStatus::invalid))
    throw DecodeError(fmt::format("unknown entry status {}", status));
  i.status = static_cast<EntryStatus>(status);
  i.size_bytes = r.u64();
  i.created_at = from_ns(static_cast<std::int64_t>(r.u64()));
  i.last_accessed = from_ns(static_cast<std::int64_t>(r.u64()));
  std::optional<std::int64_t> expires;
  get(r, expires);
  i.expires_at.reset();
  if (expires) i.expires_at = from_ns(*expires);
  i.access_count = r.u64();
  get(r, i.metadata);
  i.observed_at = from_ns(static_cast<std::int64_t>(r.u64()));
}

inline void put(Writer& w, const Entry& e) {
  put(w, e.value), put(w, e.info);
}
inline void get(Reader& r, Entry& e) {
  get(r, e.value), get(r, e.info);
}

// The Stats counters in wire order.
template <class S, class F>
void stats_fields(S& s, F&& f) {
  stats::for_each_counter(s, [&](stats::Counter, std::string_view, auto& v) { f(v); });
  f(s.total_entries), f(s.total_size_bytes), f(s.fresh_entries), f(s.stale_entries);
  f(s.expired_entries), f(s.invalid_entries);
}
inline void put(Writer& w, const Stats& s) {
  stats_fields(s, [&](std::uint64_t v) { w.u64(v); });
  w.u32(static_cast<std::uint32_t>(s.categories.size()));
  for (const auto& [k, v] : s.categories) put(w, k), w.u64(v);
}
inline void get(Reader& r, Stats& s) {
  stats_fields(s, [&](std::uint64_t& v) { v = r.u64(); });
  s.categories.clear();
  const std::size_t n = r.count(12, sizeof(std::string) + 48);
  for (std::size_t i = 0; i < n; ++i) {
    std::string k;
    get(r, k);
    s.categories.insert_or_assign(std::move(k), r.u64());
  }
}

inline void put(Writer& w, const Event& e) {
  w.u8(static_cast<std::uint8_t>(e.kind));
  put(w, e.key);
}
inline void get(Reader& r, Event& e) {
  const std::uint8_t kind = r.u8();
  if (kind > static_cast<std::uint8_t>(Event::Kind::expire))
    throw DecodeError(fmt::format("unknown event kind {}", kind));
  e.kind = static_cast<Event::Kind>(kind);
  get(r, e.key);
}
inline void put(Writer& w, const core::EventBatch& b) {
  put(w, b.events), put(w, b.next), put(w, b.dropped);
}
inline void get(Reader& r, core::EventBatch& b) {
  get(r, b.events), get(r, b.next), get(r, b.dropped);
}

inline void put(Writer& w, const core::AdminResult& a) {
  put(w, a.ok), put(w, a.error), put(w, a.count), put(w, a.lines), put(w, a.fields);
}
inline void get(Reader& r, core::AdminResult& a) {
  get(r, a.ok), get(r, a.error), get(r, a.count), get(r, a.lines), get(r, a.fields);
}

inline void put(Writer& w, const LeaseGrant& g) {
  put(w, g.granted), put(w, g.wait_ms);
}
inline void get(Reader& r, LeaseGrant& g) {
  get(r, g.granted), get(r, g.wait_ms);
}

// ---- optionals and sequences of any of the above

template <class T>
void put(Writer& w, const std::optional<T>& v) {
  put(w, v.has_value());
  if (v) put(w, *v);
}
template <class T>
void get(Reader& r, std::optional<T>& v) {
  bool present = false;
  get(r, present);
  v.reset();
  if (present) get(r, v.emplace());
}
template <class T>
void put(Writer& w, const std::vector<T>& items) {
  w.u32(static_cast<std::uint32_t>(items.size()));
  for (const T& item : items) put(w, item);
}
template <class T>
void get(Reader& r, std::vector<T>& items) {
  items.clear();
  const std::size_t n = r.count(MinBytes<T>::value, sizeof(T));
  items.reserve(n);
  for (std::size_t i = 0; i < n; ++i) get(r, items.emplace_back());
}

}  // namespace larder::shared
