#include "shared/protocol.hpp"

#include <cstring>
#include <type_traits>

#include <fmt/format.h>

#include "stats/counters.hpp"

namespace larder::shared {

namespace {

using Clock = std::chrono::system_clock;

std::int64_t to_ns(Clock::time_point t) {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(t.time_since_epoch()).count();
}
Clock::time_point from_ns(std::int64_t ns) {
  return Clock::time_point(
      std::chrono::duration_cast<Clock::duration>(std::chrono::nanoseconds(ns)));
}

// ---- writing

class Writer {
 public:
  void u8(std::uint8_t v) { out_.push_back(static_cast<char>(v)); }
  void boolean(bool v) { u8(v ? 1 : 0); }
  void u32(std::uint32_t v) {
    for (int i = 0; i < 4; ++i) out_.push_back(static_cast<char>((v >> (8 * i)) & 0xff));
  }
  void u64(std::uint64_t v) {
    for (int i = 0; i < 8; ++i) out_.push_back(static_cast<char>((v >> (8 * i)) & 0xff));
  }
  void i64(std::int64_t v) { u64(static_cast<std::uint64_t>(v)); }
  void str(std::string_view v) {
    u32(static_cast<std::uint32_t>(v.size()));
    out_.append(v);
  }
  template <class T, class F>
  void seq(const T& items, F&& each) {
    u32(static_cast<std::uint32_t>(items.size()));
    for (const auto& item : items) each(item);
  }
  template <class T, class F>
  void opt(const std::optional<T>& v, F&& each) {
    boolean(v.has_value());
    if (v) each(*v);
  }
  std::string take() { return std::move(out_); }

 private:
  std::string out_;
};

void put_map(Writer& w, const std::map<std::string, std::string>& m) {
  w.seq(m, [&](const auto& kv) {
    w.str(kv.first);
    w.str(kv.second);
  });
}

void put_info(Writer& w, const EntryInfo& i) {
  w.str(i.key);
  w.str(i.category);
  w.u8(static_cast<std::uint8_t>(i.status));
  w.u64(i.size_bytes);
  w.i64(to_ns(i.created_at));
  w.i64(to_ns(i.last_accessed));
  std::optional<std::int64_t> expires;
  if (i.expires_at) expires = to_ns(*i.expires_at);
  w.opt(expires, [&](std::int64_t v) { w.i64(v); });
  w.u64(i.access_count);
  put_map(w, i.metadata);
  w.i64(to_ns(i.observed_at));
}

void put_entry(Writer& w, const Entry& e) {
  w.str(e.value);
  put_info(w, e.info);
}

// The Stats counters in wire order.
template <class S, class F>
void stats_fields(S& s, F&& f) {
  stats::for_each_counter(s, [&](stats::Counter, std::string_view, auto& v) { f(v); });
  f(s.total_entries), f(s.total_size_bytes), f(s.fresh_entries), f(s.stale_entries);
  f(s.expired_entries), f(s.invalid_entries);
}

void put_stats(Writer& w, const Stats& s) {
  stats_fields(s, [&](std::uint64_t v) { w.u64(v); });
  w.seq(s.categories, [&](const auto& kv) {
    w.str(kv.first);
    w.u64(kv.second);
  });
}

// ---- reading: every length is checked against what is left of the payload before anything is
// allocated for it, and the memory a message may take is bounded by its size.

struct DecodeError : std::runtime_error {
  using std::runtime_error::runtime_error;
};

class Reader {
 public:
  explicit Reader(std::string_view in)
      : in_(in), budget_(kDecodeMemoryFactor * in.size() + kDecodeMemorySlack) {}

  std::size_t left() const { return in_.size() - pos_; }
  std::uint8_t u8() { return static_cast<std::uint8_t>(take(1)[0]); }
  bool boolean() {
    const std::uint8_t v = u8();
    if (v > 1) throw DecodeError(fmt::format("bad boolean {}", v));
    return v == 1;
  }
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
  std::int64_t i64() { return static_cast<std::int64_t>(u64()); }
  std::string str() {
    const std::uint32_t n = u32();
    if (n > left())
      throw DecodeError(fmt::format("a string of {} bytes with {} bytes left", n, left()));
    charge(n);
    return std::string(take(n));
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
  template <class T, class F>
  std::vector<T> seq(std::size_t min_bytes, F&& each) {
    std::vector<T> out;
    const std::size_t n = count(min_bytes, sizeof(T));
    out.reserve(n);
    for (std::size_t i = 0; i < n; ++i) out.push_back(each());
    return out;
  }
  template <class T, class F>
  std::optional<T> opt(F&& each) {
    if (!boolean()) return std::nullopt;
    return each();
  }
  bool done() const { return pos_ == in_.size(); }

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

std::map<std::string, std::string> get_map(Reader& r) {
  std::map<std::string, std::string> m;
  const std::size_t n = r.count(8, 2 * sizeof(std::string) + 32);
  for (std::size_t i = 0; i < n; ++i) {
    std::string k = r.str();
    m.insert_or_assign(std::move(k), r.str());
  }
  return m;
}

EntryInfo get_info(Reader& r) {
  EntryInfo i;
  i.key = r.str();
  i.category = r.str();
  const std::uint8_t status = r.u8();
  if (status > static_cast<std::uint8_t>(EntryStatus::invalid))
    throw DecodeError(fmt::format("unknown entry status {}", status));
  i.status = static_cast<EntryStatus>(status);
  i.size_bytes = r.u64();
  i.created_at = from_ns(r.i64());
  i.last_accessed = from_ns(r.i64());
  if (auto e = r.opt<std::int64_t>([&] { return r.i64(); })) i.expires_at = from_ns(*e);
  i.access_count = r.u64();
  i.metadata = get_map(r);
  i.observed_at = from_ns(r.i64());
  return i;
}

Entry get_entry(Reader& r) {
  Entry e;
  e.value = r.str();
  e.info = get_info(r);
  return e;
}

Stats get_stats(Reader& r) {
  Stats s;
  stats_fields(s, [&](std::uint64_t& v) { v = r.u64(); });
  const std::size_t n = r.count(12, sizeof(std::string) + 48);
  for (std::size_t i = 0; i < n; ++i) {
    std::string k = r.str();
    s.categories.insert_or_assign(std::move(k), r.u64());
  }
  return s;
}

// Smallest encoding of a SetRequest: key 4, value 4, ttl 8, category 4, metadata 4.
constexpr std::size_t kMinSet = 24;

void put(Writer& w, const Request& q) {
  w.u64(q.id);
  w.u8(static_cast<std::uint8_t>(q.opcode));
  w.str(q.text);
  w.boolean(q.flag);
  w.seq(q.keys, [&](const std::string& k) { w.str(k); });
  w.seq(q.sets, [&](const core::SetRequest& s) {
    w.str(s.key);
    w.str(s.value);
    w.i64(s.ttl_ms);
    w.str(s.category);
    put_map(w, s.metadata);
  });
  w.u8(q.code);
  w.i64(q.number);
  w.str(q.scope);
  w.i64(q.holder);
}

void get(Reader& r, Request* q) {
  q->id = r.u64();
  q->opcode = static_cast<Opcode>(r.u8());
  q->text = r.str();
  q->flag = r.boolean();
  q->keys = r.seq<std::string>(4, [&] { return r.str(); });
  q->sets = r.seq<core::SetRequest>(kMinSet, [&] {
    core::SetRequest s;
    s.key = r.str();
    s.value = r.str();
    s.ttl_ms = r.i64();
    s.category = r.str();
    s.metadata = get_map(r);
    return s;
  });
  q->code = r.u8();
  q->number = r.i64();
  q->scope = r.str();
  q->holder = r.i64();
}

void put(Writer& w, const Reply& p) {
  w.u64(p.id);
  w.u8(static_cast<std::uint8_t>(p.status));
  w.str(p.error);
  w.boolean(p.flag);
  w.u64(p.count);
  w.opt(p.value, [&](const std::string& v) { w.str(v); });
  w.seq(p.values, [&](const std::optional<std::string>& v) {
    w.opt(v, [&](const std::string& s) { w.str(s); });
  });
  w.seq(p.flags, [&](bool f) { w.boolean(f); });
  w.seq(p.strings, [&](const std::string& v) { w.str(v); });
  w.opt(p.entry, [&](const Entry& e) { put_entry(w, e); });
  w.opt(p.info, [&](const EntryInfo& i) { put_info(w, i); });
  w.opt(p.stats, [&](const Stats& s) { put_stats(w, s); });
  w.seq(p.entries,
        [&](const std::optional<Entry>& e) { w.opt(e, [&](const Entry& x) { put_entry(w, x); }); });
  put_map(w, p.fields);
}

void get(Reader& r, Reply* p) {
  p->id = r.u64();
  const std::uint8_t status = r.u8();
  if (status > static_cast<std::uint8_t>(ReplyStatus::closing))
    throw DecodeError(fmt::format("unknown reply status {}", status));
  p->status = static_cast<ReplyStatus>(status);
  p->error = r.str();
  p->flag = r.boolean();
  p->count = r.u64();
  p->value = r.opt<std::string>([&] { return r.str(); });
  p->values = r.seq<std::optional<std::string>>(
      1, [&] { return r.opt<std::string>([&] { return r.str(); }); });
  // std::vector<bool> packs bits; one byte each on the wire.
  const std::size_t nflags = r.count(1, 1);
  p->flags.reserve(nflags);
  for (std::size_t i = 0; i < nflags; ++i) p->flags.push_back(r.boolean());
  p->strings = r.seq<std::string>(4, [&] { return r.str(); });
  p->entry = r.opt<Entry>([&] { return get_entry(r); });
  p->info = r.opt<EntryInfo>([&] { return get_info(r); });
  p->stats = r.opt<Stats>([&] { return get_stats(r); });
  p->entries =
      r.seq<std::optional<Entry>>(1, [&] { return r.opt<Entry>([&] { return get_entry(r); }); });
  p->fields = get_map(r);
}

template <class T>
std::string encode_any(const T& value) {
  Writer w;
  w.u8(static_cast<std::uint8_t>(kProtocolVersion & 0xff));
  w.u8(static_cast<std::uint8_t>(kProtocolVersion >> 8));
  put(w, value);
  return w.take();
}

template <class T>
bool decode_any(std::string_view payload, T* out, std::string* error) {
  try {
    Reader r(payload);
    const std::uint16_t version = static_cast<std::uint16_t>(r.u8() | (r.u8() << 8));
    if (version != kProtocolVersion) {
      *error = fmt::format("protocol version {} (this side speaks {})", version, kProtocolVersion);
      return false;
    }
    T value;
    get(r, &value);
    if (!r.done()) {
      *error = "trailing bytes after the message";
      return false;
    }
    *out = std::move(value);
    return true;
  } catch (const std::exception& e) {  // DecodeError, or bad_alloc within the bound
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
  if (out->opcode < Opcode::set || out->opcode > kLastOpcode) {
    *error = fmt::format("unknown operation {}", static_cast<unsigned>(out->opcode));
    return false;
  }
  return true;
}
bool decode(std::string_view payload, Reply* out, std::string* error) {
  return decode_any(payload, out, error);
}

const char* to_string(Opcode opcode) {
  switch (opcode) {
    case Opcode::set:
      return "set";
    case Opcode::get:
      return "get";
    case Opcode::get_entry:
      return "get_entry";
    case Opcode::exists:
      return "exists";
    case Opcode::metadata:
      return "metadata";
    case Opcode::remove:
      return "remove";
    case Opcode::clear:
      return "clear";
    case Opcode::clear_category:
      return "clear_category";
    case Opcode::invalidate:
      return "invalidate";
    case Opcode::invalidate_category:
      return "invalidate_category";
    case Opcode::invalidate_pattern:
      return "invalidate_pattern";
    case Opcode::keys:
      return "keys";
    case Opcode::keys_in_category:
      return "keys_in_category";
    case Opcode::cleanup:
      return "cleanup";
    case Opcode::stats:
      return "stats";
    case Opcode::flush:
      return "flush";
    case Opcode::get_many:
      return "get_many";
    case Opcode::set_many:
      return "set_many";
    case Opcode::peek:
      return "peek";
    case Opcode::inspect:
      return "inspect";
    case Opcode::admin:
      return "admin";
    case Opcode::add:
      return "add";
    case Opcode::touch:
      return "touch";
    case Opcode::incr:
      return "incr";
    case Opcode::set_all:
      return "set_all";
    case Opcode::lease_acquire:
      return "lease_acquire";
    case Opcode::lease_release:
      return "lease_release";
    case Opcode::events:
      return "events";
  }
  return "unknown";
}

}  // namespace larder::shared
