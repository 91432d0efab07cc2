#include "engine/records.hpp"

#include <cmath>
#include <cstring>
#include <limits>

#include "util/ttl.hpp"

namespace larder::engine {

namespace {

void put_u16(std::string& out, std::uint16_t v) {
  const char b[2] = {static_cast<char>(v & 0xff), static_cast<char>(v >> 8)};
  out.append(b, 2);
}
void put_u32(std::string& out, std::uint32_t v) {
  char b[4];
  for (int i = 0; i < 4; ++i) b[i] = static_cast<char>((v >> (8 * i)) & 0xff);
  out.append(b, 4);
}

// A bounds-checked little-endian reader.
class Reader {
 public:
  explicit Reader(std::string_view s) : s_(s) {}
  bool u8(std::uint8_t* v) {
    if (s_.size() - pos_ < 1) return false;
    *v = static_cast<std::uint8_t>(s_[pos_++]);
    return true;
  }
  bool u16(std::uint16_t* v) {
    if (s_.size() - pos_ < 2) return false;
    *v = static_cast<std::uint16_t>(byte(0) | (byte(1) << 8));
    pos_ += 2;
    return true;
  }
  bool u32(std::uint32_t* v) {
    if (s_.size() - pos_ < 4) return false;
    *v = 0;
    for (int i = 0; i < 4; ++i) *v |= static_cast<std::uint32_t>(byte(i)) << (8 * i);
    pos_ += 4;
    return true;
  }
  bool u64(std::uint64_t* v) {
    if (s_.size() - pos_ < 8) return false;
    *v = get_le64(s_.substr(pos_));
    pos_ += 8;
    return true;
  }
  bool i64(std::int64_t* v) {
    std::uint64_t u = 0;
    if (!u64(&u)) return false;
    *v = static_cast<std::int64_t>(u);
    return true;
  }
  bool skip(std::size_t n) {
    if (s_.size() - pos_ < n) return false;
    pos_ += n;
    return true;
  }
  bool bytes(std::size_t n, std::string* out) {
    if (s_.size() - pos_ < n) return false;
    out->assign(s_.data() + pos_, n);
    pos_ += n;
    return true;
  }
  std::size_t pos() const { return pos_; }

 private:
  unsigned byte(int i) const {
    return static_cast<unsigned char>(s_[pos_ + static_cast<std::size_t>(i)]);
  }
  std::string_view s_;
  std::size_t pos_ = 0;
};

}  // namespace

void put_le64(std::string& out, std::uint64_t v) {
  char b[8];
  for (int i = 0; i < 8; ++i) b[i] = static_cast<char>((v >> (8 * i)) & 0xff);
  out.append(b, 8);
}
std::uint64_t get_le64(std::string_view b) {
  std::uint64_t v = 0;
  for (int i = 7; i >= 0; --i)
    v = (v << 8) | static_cast<unsigned char>(b[static_cast<std::size_t>(i)]);
  return v;
}
void put_be64(std::string& out, std::uint64_t v) {
  for (int i = 7; i >= 0; --i) out.push_back(static_cast<char>((v >> (8 * i)) & 0xff));
}
std::uint64_t get_be64(std::string_view b) {
  std::uint64_t v = 0;
  for (int i = 0; i < 8; ++i)
    v = (v << 8) | static_cast<unsigned char>(b[static_cast<std::size_t>(i)]);
  return v;
}

namespace {
bool known_entry_format(std::uint8_t format) {
  return format == kEntryFormat || format == kEntryFormatSeconds;
}
// Brings a decoded ttl to milliseconds (format 1 kept seconds). Always true: a step of the
// decoders' && chains.
bool ttl_in_ms(std::uint8_t format, std::int64_t* ttl) {
  if (format == kEntryFormatSeconds) *ttl = util::seconds_to_ms(*ttl);
  return true;
}
}  // namespace

void append_entry_head(std::string* out, std::uint8_t flags, std::int64_t created_ns,
                       std::int64_t ttl_ms, std::string_view category,
                       const std::map<std::string, std::string>* metadata) {
  const std::size_t n_meta = metadata != nullptr ? metadata->size() : 0;
  std::size_t meta_bytes = 0;
  if (metadata != nullptr)
    for (const auto& [k, v] : *metadata) meta_bytes += 8 + k.size() + v.size();
  out->reserve(out->size() + 1 + 1 + 8 + 8 + 2 + category.size() + 4 + meta_bytes);
  out->push_back(static_cast<char>(kEntryFormat));
  out->push_back(static_cast<char>(flags));
  put_le64(*out, static_cast<std::uint64_t>(created_ns));
  put_le64(*out, static_cast<std::uint64_t>(ttl_ms));
  put_u16(*out, static_cast<std::uint16_t>(category.size()));
  out->append(category);
  put_u32(*out, static_cast<std::uint32_t>(n_meta));
  if (metadata == nullptr) return;
  for (const auto& [k, v] : *metadata) {
    put_u32(*out, static_cast<std::uint32_t>(k.size()));
    out->append(k);
    put_u32(*out, static_cast<std::uint32_t>(v.size()));
    out->append(v);
  }
}

std::string encode_entry(const EntryHeader& h, std::string_view value) {
  std::string out;
  out.reserve(64 + h.category.size() + value.size());
  append_entry_head(&out, h.flags, h.created_ns, h.ttl_ms, h.category, &h.metadata);
  out.append(value);
  return out;
}

bool decode_entry_times(std::string_view record, std::uint8_t* flags, std::int64_t* created_ns,
                        std::int64_t* ttl_ms) {
  Reader r(record);
  std::uint8_t format = 0;
  return r.u8(&format) && known_entry_format(format) && r.u8(flags) && r.i64(created_ns) &&
         r.i64(ttl_ms) && ttl_in_ms(format, ttl_ms);
}

bool decode_entry_value(std::string_view record, std::uint8_t* flags, std::int64_t* created_ns,
                        std::int64_t* ttl_ms, std::size_t* value_offset) {
  Reader r(record);
  std::uint8_t format = 0;
  std::uint16_t cat_len = 0;
  std::uint32_t meta_count = 0;
  if (!r.u8(&format) || !known_entry_format(format) || !r.u8(flags) || !r.i64(created_ns) ||
      !r.i64(ttl_ms) || !ttl_in_ms(format, ttl_ms) || !r.u16(&cat_len) || !r.skip(cat_len) ||
      !r.u32(&meta_count))
    return false;
  for (std::uint32_t i = 0; i < meta_count; ++i) {
    std::uint32_t kl = 0, vl = 0;
    if (!r.u32(&kl) || !r.skip(kl) || !r.u32(&vl) || !r.skip(vl)) return false;
  }
  *value_offset = r.pos();
  return true;
}

bool decode_entry(std::string_view record, EntryHeader* h, std::size_t* value_offset) {
  Reader r(record);
  std::uint8_t format = 0;
  std::uint16_t cat_len = 0;
  std::uint32_t meta_count = 0;
  if (!r.u8(&format) || !known_entry_format(format) || !r.u8(&h->flags) || !r.i64(&h->created_ns) ||
      !r.i64(&h->ttl_ms) || !ttl_in_ms(format, &h->ttl_ms) || !r.u16(&cat_len) ||
      !r.bytes(cat_len, &h->category) || !r.u32(&meta_count))
    return false;
  h->metadata.clear();
  for (std::uint32_t i = 0; i < meta_count; ++i) {
    std::uint32_t kl = 0, vl = 0;
    std::string k, v;
    if (!r.u32(&kl) || !r.bytes(kl, &k) || !r.u32(&vl) || !r.bytes(vl, &v)) return false;
    h->metadata.emplace(std::move(k), std::move(v));
  }
  *value_offset = r.pos();
  return true;
}

std::string encode_access(const AccessRecord& a) {
  std::string out;
  out.reserve(1 + 8 * 7 + 1 + 2 + a.category.size() + 2 + 8);
  out.push_back(static_cast<char>(kAccessFormat));
  put_le64(out, static_cast<std::uint64_t>(a.last_access_ns));
  put_le64(out, a.last_tick);
  put_le64(out, a.access_count);
  put_le64(out, a.insert_tick);
  put_le64(out, a.size);
  out.push_back(a.has_expiry ? 1 : 0);
  put_le64(out, a.expiry_t);
  put_le64(out, a.stale_t);
  put_u16(out, static_cast<std::uint16_t>(a.category.size()));
  out.append(a.category);
  out.push_back(static_cast<char>(a.queue));
  out.push_back(static_cast<char>(a.freq));
  put_le64(out, a.queue_tick);
  return out;
}

bool decode_access(std::string_view bytes, AccessRecord* a) {
  Reader r(bytes);
  std::uint8_t format = 0, has_expiry = 0;
  std::uint16_t cat_len = 0;
  if (!r.u8(&format) || (format != 1 && format != kAccessFormat) || !r.i64(&a->last_access_ns) ||
      !r.u64(&a->last_tick) || !r.u64(&a->access_count) || !r.u64(&a->insert_tick) ||
      !r.u64(&a->size) || !r.u8(&has_expiry) || !r.u64(&a->expiry_t) || !r.u64(&a->stale_t) ||
      !r.u16(&cat_len) || !r.bytes(cat_len, &a->category))
    return false;
  a->has_expiry = has_expiry != 0;
  a->queue = 0;
  a->freq = 0;
  a->queue_tick = 0;
  if (format >= 2 && (!r.u8(&a->queue) || a->queue > static_cast<std::uint8_t>(S3Queue::main) ||
                      !r.u8(&a->freq) || a->freq > 3 || !r.u64(&a->queue_tick)))
    return false;
  return r.pos() == bytes.size();
}

std::string encode_ghost(const GhostRecord& g) {
  std::string out;
  out.push_back(static_cast<char>(kGhostFormat));
  put_le64(out, g.tick);
  put_le64(out, g.size);
  return out;
}

bool decode_ghost(std::string_view bytes, GhostRecord* g) {
  Reader r(bytes);
  std::uint8_t format = 0;
  return r.u8(&format) && format == kGhostFormat && r.u64(&g->tick) && r.u64(&g->size) &&
         r.pos() == bytes.size();
}

Deadlines deadlines(std::int64_t created_ns, std::int64_t ttl_ms, double stale_factor) {
  constexpr double kMax = static_cast<double>(std::numeric_limits<std::int64_t>::max());
  const double ttl_ns = static_cast<double>(ttl_ms) * 1e6;
  const double stale = static_cast<double>(created_ns) + ttl_ns;
  const double expired = static_cast<double>(created_ns) + ttl_ns * stale_factor;
  Deadlines d;
  d.stale_at =
      stale >= kMax ? std::numeric_limits<std::int64_t>::max() : created_ns + ttl_ms * 1'000'000LL;
  d.expired_at = expired >= kMax ? std::numeric_limits<std::int64_t>::max()
                                 : static_cast<std::int64_t>(std::llround(expired));
  if (d.expired_at < d.stale_at) d.expired_at = d.stale_at;
  return d;
}

EntryStatus status_at(std::uint8_t flags, std::int64_t created_ns, std::int64_t ttl_ms,
                      double stale_factor, std::int64_t now_ns) {
  if ((flags & kFlagInvalid) != 0) return EntryStatus::invalid;
  if (ttl_ms <= 0) return EntryStatus::fresh;
  const Deadlines d = deadlines(created_ns, ttl_ms, stale_factor);
  if (now_ns < d.stale_at) return EntryStatus::fresh;
  if (now_ns < d.expired_at) return EntryStatus::stale;
  return EntryStatus::expired;
}

std::uint64_t expiry_time(std::int64_t expired_at) {
  return expired_at < 1 ? 1 : static_cast<std::uint64_t>(expired_at);
}

std::string expiry_key(std::uint64_t t, std::string_view key) {
  std::string out;
  out.reserve(8 + key.size());
  put_be64(out, t);
  out.append(key);
  return out;
}

std::string category_prefix(std::string_view category) {
  std::string out(category);
  out.push_back('\0');
  return out;
}

std::string category_key(std::string_view category, std::string_view key) {
  std::string out = category_prefix(category);
  out.append(key);
  return out;
}

std::string order_key(EvictionPolicy policy, const AccessRecord& a, std::string_view key) {
  std::string out;
  switch (policy) {
    case EvictionPolicy::lru:
      put_be64(out, a.last_tick);
      break;
    case EvictionPolicy::lfu:
      put_be64(out, a.access_count);
      put_be64(out, a.last_tick);
      break;
    case EvictionPolicy::fifo:
      put_be64(out, a.insert_tick);
      break;
    case EvictionPolicy::ttl:
    case EvictionPolicy::s3fifo:  // format 1 stores never had this policy
      return {};
  }
  out.append(key);
  return out;
}

std::string_view user_key_of_order(EvictionPolicy policy, std::string_view k) {
  const std::size_t skip = policy == EvictionPolicy::lfu ? 16 : 8;
  return k.size() >= skip ? k.substr(skip) : std::string_view{};
}

std::string_view user_key_of_expiry(std::string_view k) {
  return k.size() >= 8 ? k.substr(8) : std::string_view{};
}

std::uint64_t time_of_expiry(std::string_view k) {
  return k.size() >= 8 ? get_be64(k) : 0;
}

}  // namespace larder::engine
