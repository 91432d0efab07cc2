#include "shared/protocol.hpp"

#include <cereal/archives/portable_binary.hpp>
#include <cereal/types/map.hpp>
#include <cereal/types/optional.hpp>
#include <cereal/types/string.hpp>
#include <cereal/types/vector.hpp>

#include <sstream>

#include <fmt/format.h>

namespace larder {

namespace {

using Clock = std::chrono::system_clock;

std::int64_t to_ns(Clock::time_point t) {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(t.time_since_epoch()).count();
}
Clock::time_point from_ns(std::int64_t ns) {
  return Clock::time_point(
      std::chrono::duration_cast<Clock::duration>(std::chrono::nanoseconds(ns)));
}

}  // namespace

// cereal finds these by argument-dependent lookup.
template <class Archive>
void save(Archive& ar, const EntryInfo& i) {
  std::optional<std::int64_t> expires;
  if (i.expires_at) expires = to_ns(*i.expires_at);
  ar(i.key, i.category, static_cast<std::uint8_t>(i.status), i.size_bytes, to_ns(i.created_at),
     to_ns(i.last_accessed), expires, i.access_count, i.metadata, to_ns(i.observed_at));
}

template <class Archive>
void load(Archive& ar, EntryInfo& i) {
  std::uint8_t status = 0;
  std::int64_t created = 0, accessed = 0, observed = 0;
  std::optional<std::int64_t> expires;
  ar(i.key, i.category, status, i.size_bytes, created, accessed, expires, i.access_count,
     i.metadata, observed);
  if (status > static_cast<std::uint8_t>(EntryStatus::invalid))
    throw std::runtime_error(fmt::format("unknown entry status {}", status));
  i.status = static_cast<EntryStatus>(status);
  i.created_at = from_ns(created);
  i.last_accessed = from_ns(accessed);
  i.expires_at = expires ? std::optional(from_ns(*expires)) : std::nullopt;
  i.observed_at = from_ns(observed);
}

template <class Archive>
void serialize(Archive& ar, Entry& e) {
  ar(e.value, e.info);
}

template <class Archive>
void serialize(Archive& ar, Stats& s) {
  ar(s.hit_count, s.miss_count, s.set_count, s.delete_count, s.eviction_count, s.expiration_count,
     s.invalidation_count, s.error_count, s.cleanup_count, s.total_entries, s.total_size_bytes,
     s.fresh_entries, s.stale_entries, s.expired_entries, s.invalid_entries, s.categories);
}

namespace core {
template <class Archive>
void serialize(Archive& ar, SetRequest& q) {
  ar(q.key, q.value, q.ttl_s, q.category, q.metadata);
}
}  // namespace core

namespace shared {

template <class Archive>
void serialize(Archive& ar, Request& r) {
  ar(r.id, r.op, r.text, r.flag, r.keys, r.sets, r.code, r.number);
}

template <class Archive>
void serialize(Archive& ar, Reply& r) {
  ar(r.id, r.status, r.error, r.flag, r.count, r.value, r.values, r.flags, r.strings, r.entry,
     r.info, r.stats, r.entries, r.fields);
}

namespace {

template <class T>
std::string encode_any(const T& value) {
  std::ostringstream out(std::ios::binary);
  {
    cereal::PortableBinaryOutputArchive ar(out);
    const std::uint16_t version = kProtocolVersion;
    ar(version, value);
  }
  return std::move(out).str();
}

template <class T>
bool decode_any(std::string_view payload, T* out, std::string* error) {
  try {
    std::istringstream in(std::string(payload), std::ios::binary);
    cereal::PortableBinaryInputArchive ar(in);
    std::uint16_t version = 0;
    ar(version);
    if (version != kProtocolVersion) {
      *error = fmt::format("protocol version {} (this side speaks {})", version, kProtocolVersion);
      return false;
    }
    T value;
    ar(value);
    if (in.peek() != std::char_traits<char>::eof()) {
      *error = "trailing bytes after the message";
      return false;
    }
    *out = std::move(value);
    return true;
  } catch (const std::exception& e) {
    *error = fmt::format("malformed message: {}", e.what());
    return false;
  }
}

}  // namespace

std::string encode(const Request& r) {
  return encode_any(r);
}
std::string encode(const Reply& r) {
  return encode_any(r);
}
bool decode(std::string_view payload, Request* out, std::string* error) {
  if (!decode_any(payload, out, error)) return false;
  if (out->op < Op::set || out->op > Op::admin) {
    *error = fmt::format("unknown operation {}", static_cast<unsigned>(out->op));
    return false;
  }
  return true;
}
bool decode(std::string_view payload, Reply* out, std::string* error) {
  return decode_any(payload, out, error);
}

const char* to_string(Op op) {
  switch (op) {
    case Op::set:
      return "set";
    case Op::get:
      return "get";
    case Op::get_entry:
      return "get_entry";
    case Op::exists:
      return "exists";
    case Op::metadata:
      return "metadata";
    case Op::remove:
      return "remove";
    case Op::clear:
      return "clear";
    case Op::clear_category:
      return "clear_category";
    case Op::invalidate:
      return "invalidate";
    case Op::invalidate_category:
      return "invalidate_category";
    case Op::invalidate_pattern:
      return "invalidate_pattern";
    case Op::keys:
      return "keys";
    case Op::keys_in_category:
      return "keys_in_category";
    case Op::cleanup:
      return "cleanup";
    case Op::stats:
      return "stats";
    case Op::flush:
      return "flush";
    case Op::get_many:
      return "get_many";
    case Op::set_many:
      return "set_many";
    case Op::peek:
      return "peek";
    case Op::inspect:
      return "inspect";
    case Op::admin:
      return "admin";
  }
  return "unknown";
}

}  // namespace shared
}  // namespace larder
