// The remote tier's record codec (tier.hpp): an entry as Redis keeps it, plain or signed with
// the remote's secret (HMAC-SHA256). Decoding treats every byte as hostile. Built with or without
// hiredis.
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

#include "remote/tier.hpp"
#include "util/hmac.hpp"
#include "util/ttl.hpp"

namespace larder::remote {

namespace {

void put_u32(std::string* out, std::uint32_t v) {
  for (int i = 0; i < 4; ++i) out->push_back(static_cast<char>((v >> (8 * i)) & 0xff));
}
void put_i64(std::string* out, std::int64_t v) {
  const auto u = static_cast<std::uint64_t>(v);
  for (int i = 0; i < 8; ++i) out->push_back(static_cast<char>((u >> (8 * i)) & 0xff));
}
void put_bytes(std::string* out, std::string_view b) {
  put_u32(out, static_cast<std::uint32_t>(b.size()));
  out->append(b);
}

// Reads from hostile bytes: every length is checked against what is left.
class Reader {
 public:
  explicit Reader(std::string_view b) : b_(b) {}
  bool u32(std::uint32_t* v) {
    if (b_.size() < 4) return false;
    *v = 0;
    for (int i = 0; i < 4; ++i) *v |= std::uint32_t(static_cast<unsigned char>(b_[i])) << (8 * i);
    b_.remove_prefix(4);
    return true;
  }
  bool i64(std::int64_t* v) {
    if (b_.size() < 8) return false;
    std::uint64_t u = 0;
    for (int i = 0; i < 8; ++i) u |= std::uint64_t(static_cast<unsigned char>(b_[i])) << (8 * i);
    *v = static_cast<std::int64_t>(u);
    b_.remove_prefix(8);
    return true;
  }
  bool bytes(std::string* out) {
    std::uint32_t n = 0;
    if (!u32(&n) || n > b_.size()) return false;
    out->assign(b_.substr(0, n));
    b_.remove_prefix(n);
    return true;
  }
  std::string_view rest() const { return b_; }

 private:
  std::string_view b_;
};

// A record in one of the plain (unsigned) formats.
bool plain_record(std::string_view bytes) {
  const auto format = static_cast<std::uint8_t>(bytes[0]);
  return format == kRecordFormat || format == kRecordFormatSeconds;
}

}  // namespace

std::string encode(const Entry& e) {
  std::string out;
  out.reserve(1 + 8 + 8 + 4 + e.category.size() + 4 + e.value.size() + 16 * e.metadata.size());
  out.push_back(static_cast<char>(kRecordFormat));
  put_i64(&out, e.created_ns);
  put_i64(&out, e.ttl_ms);
  put_bytes(&out, e.category);
  put_u32(&out, static_cast<std::uint32_t>(e.metadata.size()));
  for (const auto& [k, v] : e.metadata) {
    put_bytes(&out, k);
    put_bytes(&out, v);
  }
  out.append(e.value);
  return out;
}

std::optional<Entry> decode(std::string_view bytes) {
  if (bytes.empty() || !plain_record(bytes)) return std::nullopt;
  Reader r(bytes.substr(1));
  Entry e;
  std::uint32_t pairs = 0;
  if (!r.i64(&e.created_ns) || !r.i64(&e.ttl_ms) || e.ttl_ms < 0 || !r.bytes(&e.category) ||
      !r.u32(&pairs) || pairs > r.rest().size() / 8)  // each pair takes at least 8 bytes
    return std::nullopt;
  if (static_cast<std::uint8_t>(bytes[0]) == kRecordFormatSeconds)
    e.ttl_ms = util::seconds_to_ms(e.ttl_ms);
  for (std::uint32_t i = 0; i < pairs; ++i) {
    std::string k, v;
    if (!r.bytes(&k) || !r.bytes(&v)) return std::nullopt;
    e.metadata.emplace(std::move(k), std::move(v));
  }
  e.value.assign(r.rest());
  return e;
}

namespace {
constexpr std::string_view kRecordDomain{"larder.record.v1\0", 17};
std::string record_tag(std::string_view secret, std::string_view stored_key,
                       std::string_view record) {
  return util::hmac_sha256(secret, {kRecordDomain, stored_key, std::string_view("\0", 1), record});
}
}  // namespace

std::string seal(std::string_view stored_key, const Entry& e, std::string_view secret) {
  std::string record = encode(e);
  if (secret.empty()) return record;
  std::string out;
  out.reserve(1 + util::kTagBytes + record.size());
  out.push_back(static_cast<char>(kSignedRecordFormat));
  out += record_tag(secret, stored_key, record);
  out += record;
  return out;
}

std::optional<Entry> unseal(std::string_view stored_key, std::string_view bytes,
                            std::string_view secret, RecordFault* fault) {
  *fault = RecordFault::none;
  std::string_view record = bytes;
  if (!bytes.empty() && static_cast<std::uint8_t>(bytes[0]) == kSignedRecordFormat) {
    if (bytes.size() < 1 + util::kTagBytes) {
      *fault = RecordFault::malformed;
      return std::nullopt;
    }
    record = bytes.substr(1 + util::kTagBytes);
    if (!secret.empty() &&
        !util::hmac_valid(secret, {kRecordDomain, stored_key, std::string_view("\0", 1), record},
                          bytes.substr(1, util::kTagBytes))) {
      *fault = RecordFault::bad_tag;
      return std::nullopt;
    }
  } else if (!secret.empty()) {
    *fault = bytes.empty() || !plain_record(bytes) ? RecordFault::malformed
                                                   : RecordFault::unsigned_record;
    return std::nullopt;
  }
  auto e = decode(record);
  if (!e) *fault = RecordFault::malformed;
  return e;
}

}  // namespace larder::remote
