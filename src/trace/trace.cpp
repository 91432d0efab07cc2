#include "trace/trace.hpp"

#include "core/service.hpp"

#include <charconv>
#include <chrono>
#include <cstring>
#include <fstream>
#include <sstream>
#include <unordered_map>

#include <fmt/format.h>

#ifdef LARDER_HAVE_ZSTD
#include <zstd.h>
#endif

#include "util/fs.hpp"

namespace larder::trace {

namespace {

std::vector<std::string_view> split(std::string_view line) {
  std::vector<std::string_view> out;
  std::size_t start = 0;
  for (;;) {
    const std::size_t comma = line.find(',', start);
    out.push_back(line.substr(start, comma == std::string_view::npos ? comma : comma - start));
    if (comma == std::string_view::npos) return out;
    start = comma + 1;
  }
}

std::string_view trim(std::string_view s) {
  while (!s.empty() && (s.front() == ' ' || s.front() == '\t')) s.remove_prefix(1);
  while (!s.empty() && (s.back() == ' ' || s.back() == '\t' || s.back() == '\r'))
    s.remove_suffix(1);
  return s;
}

void add(Trace* t, std::unordered_map<std::string, bool>& seen, std::string key,
         std::uint32_t size) {
  if (seen.emplace(key, true).second) {
    t->unique_keys++;
    t->unique_bytes += size;
  }
  t->requests.push_back({std::move(key), size});
}

std::uint32_t le32(const unsigned char* p) {
  return std::uint32_t{p[0]} | (std::uint32_t{p[1]} << 8) | (std::uint32_t{p[2]} << 16) |
         (std::uint32_t{p[3]} << 24);
}

}  // namespace

util::Result<Trace> read_csv(std::istream& in) {
  Trace t;
  std::unordered_map<std::string, bool> seen;
  std::string line;
  if (!std::getline(in, line)) {
    return util::fail("line 1: empty file (expected the header timestamp,key,size)");
  }
  const auto header = split(line);
  int ts_col = -1, key_col = -1, size_col = -1;
  for (std::size_t i = 0; i < header.size(); ++i) {
    const auto name = trim(header[i]);
    if (name == "timestamp") ts_col = static_cast<int>(i);
    if (name == "key") key_col = static_cast<int>(i);
    if (name == "size") size_col = static_cast<int>(i);
  }
  if (ts_col < 0 || key_col < 0 || size_col < 0) {
    return util::fail("line 1: header must name the columns timestamp, key and size (got '{}')",
                      trim(line));
  }
  const auto needed = static_cast<std::size_t>(std::max({ts_col, key_col, size_col})) + 1;
  std::uint64_t number = 1;
  while (std::getline(in, line)) {
    ++number;
    if (trim(line).empty()) continue;
    const auto fields = split(line);
    if (fields.size() < needed) {
      return util::fail("line {}: expected {} fields, found {}", number, header.size(),
                        fields.size());
    }
    const auto ts = trim(fields[static_cast<std::size_t>(ts_col)]);
    double ts_value = 0;
    if (auto [p, ec] = std::from_chars(ts.data(), ts.data() + ts.size(), ts_value);
        ts.empty() || ec != std::errc() || p != ts.data() + ts.size()) {
      return util::fail("line {}: timestamp '{}' is not a number", number, ts);
    }
    const auto key = trim(fields[static_cast<std::size_t>(key_col)]);
    if (!core::valid_user_key(key)) {
      return util::fail("line {}: key is empty or longer than {} bytes", number, kMaxKeyBytes);
    }
    const auto size_text = trim(fields[static_cast<std::size_t>(size_col)]);
    std::uint32_t size = 0;
    if (auto [p, ec] = std::from_chars(size_text.data(), size_text.data() + size_text.size(), size);
        size_text.empty() || ec != std::errc() || p != size_text.data() + size_text.size()) {
      return util::fail("line {}: size '{}' is not a whole number of bytes below 4 GiB", number,
                        size_text);
    }
    add(&t, seen, std::string(key), size);
  }
  return t;
}

util::Result<Trace> read_oracle_general(std::string_view bytes) {
  constexpr std::size_t kRecord = 24;
  if (bytes.size() % kRecord != 0) {
    return util::fail("record {}: truncated ({} of {} bytes)", bytes.size() / kRecord + 1,
                      bytes.size() % kRecord, kRecord);
  }
  Trace t;
  std::unordered_map<std::string, bool> seen;
  t.requests.reserve(bytes.size() / kRecord);
  const auto* p = reinterpret_cast<const unsigned char*>(bytes.data());
  for (std::size_t i = 0; i < bytes.size() / kRecord; ++i, p += kRecord) {
    // The object id is the key: its 8 little-endian bytes, kept as they are.
    std::string key(reinterpret_cast<const char*>(p + 4), 8);
    add(&t, seen, std::move(key), le32(p + 12));
  }
  return t;
}

bool zstd_supported() {
#ifdef LARDER_HAVE_ZSTD
  return true;
#else
  return false;
#endif
}

namespace {

util::Result<std::string> decompress(std::string_view in) {
  std::string out;
#ifdef LARDER_HAVE_ZSTD
  ZSTD_DStream* ds = ZSTD_createDStream();
  ZSTD_initDStream(ds);
  ZSTD_inBuffer input{in.data(), in.size(), 0};
  std::string buffer(ZSTD_DStreamOutSize(), '\0');
  std::size_t last = 0;
  while (input.pos < input.size) {
    ZSTD_outBuffer output{buffer.data(), buffer.size(), 0};
    last = ZSTD_decompressStream(ds, &output, &input);
    if (ZSTD_isError(last)) {
      ZSTD_freeDStream(ds);
      return util::fail("zstd: {}", ZSTD_getErrorName(last));
    }
    out.append(buffer.data(), output.pos);
  }
  ZSTD_freeDStream(ds);
  if (last != 0) return util::fail("zstd: the compressed data ends in the middle of a frame");
  return out;
#else
  (void)in;
  (void)out;
  return util::fail("this build of larder has no zstd support (install libzstd-dev and rebuild)");
#endif
}

}  // namespace

util::Result<Trace> load(const std::filesystem::path& path) {
  auto bytes = util::read_file(path);
  if (!bytes) return util::fail(bytes.error());
  std::filesystem::path name = path;
  if (name.extension() == ".zst") {
    auto plain = decompress(*bytes);
    if (!plain) return util::fail("{}: {}", path.string(), plain.error());
    *bytes = std::move(*plain);
    name = name.stem();
  }
  util::Result<Trace> t = util::fail("");
  if (name.extension() == ".csv") {
    std::istringstream in(*bytes);
    t = read_csv(in);
  } else {
    t = read_oracle_general(*bytes);
  }
  if (!t) return util::fail("{}: {}", path.string(), t.error());
  return t;
}

double Result::miss_ratio() const {
  return requests == 0 ? 0.0 : static_cast<double>(misses) / static_cast<double>(requests);
}

double Result::byte_miss_ratio() const {
  return bytes == 0 ? 0.0 : static_cast<double>(missed_bytes) / static_cast<double>(bytes);
}

Result replay(const Trace& trace, EvictionPolicy policy, const Capacity& capacity,
              const std::filesystem::path& store_dir) {
  Config c;
  c.strategy = store_dir.empty() ? Strategy::disabled : Strategy::process_isolated;
  c.cache_root = store_dir;
  c.max_entries = capacity.entries;
  c.max_size_bytes = capacity.bytes;
  c.eviction_policy = policy;
  c.default_ttl = std::chrono::seconds(0);
  c.cleanup_interval = std::chrono::seconds(0);
  c.enable_statistics = false;
  Cache cache = Cache::open(c);
  cache.clear();  // a persistent store may hold an earlier replay
  Result r;
  r.policy = policy;
  std::string value;
  const auto t0 = std::chrono::steady_clock::now();
  for (const Request& q : trace.requests) {
    r.requests++;
    r.bytes += q.size;
    if (cache.get(q.key)) continue;  // a hit (get records the access the policy needs)
    r.misses++;
    r.missed_bytes += q.size;
    if (capacity.bytes != 0 && q.size > capacity.bytes) {
      r.not_admitted++;
      continue;
    }
    value.assign(q.size, 'x');
    (void)cache.set(q.key, value);
  }
  r.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  return r;
}

}  // namespace larder::trace
