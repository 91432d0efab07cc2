// Internal to the engine's source files (engine*.cpp): the counters family's keys, record
// helpers and paging shared by open, verify, reads and writes. Not part of the engine's
// interface.
// Thread-safety: constants and pure functions, except for_each_page (see there).
#pragma once

#include <cstdint>
#include <functional>
#include <limits>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include <fmt/format.h>

#include "engine/records.hpp"
#include "kv/kv.hpp"

namespace larder::engine::detail {

using kv::Cf;
using kv::Code;
using kv::Status;

inline constexpr std::size_t kPage = 512;  // records handled per batch in scans
// Keys per lock hold: removed by cleanup / remove_keys (two deletions each), invalidated by
// invalidate_keys (an access record and a merge operand each). A concurrent call waits for one
// page at most.
inline constexpr std::size_t kRemovePage = 512;
inline constexpr std::size_t kWritePage = 512;
inline constexpr std::int64_t kNoWatermark = std::numeric_limits<std::int64_t>::min();

// counters family keys
inline constexpr std::string_view kFormatKey = "format";
inline constexpr std::string_view kPolicyKey = "policy";
inline constexpr std::string_view kStaleFactorKey = "stale_factor";
inline constexpr std::string_view kTotalsKey = "totals";  // LE64 entries, LE64 bytes, LE64 tick
inline constexpr std::string_view kWatermarkKey = "watermark";
inline constexpr std::string_view kRebuildingKey = "rebuilding";
// LE64 max entries, LE64 max bytes, LE64 default TTL in seconds (rounded up), LE64 default TTL in
// milliseconds (only informative: tools; 24 bytes, seconds, before millisecond TTLs).
inline constexpr std::string_view kLimitsKey = "limits";
// Limits set by an administrator (cachectl limits): format byte 1, LE64 max entries, LE64 max
// bytes. They replace the opener's limits while the record exists.
inline constexpr std::string_view kAdminLimitsKey = "admin_limits";
inline constexpr std::uint8_t kAdminLimitsFormat = 1;

inline std::string encode_admin_limits(std::uint64_t entries, std::uint64_t bytes) {
  std::string s(1, static_cast<char>(kAdminLimitsFormat));
  put_le64(s, entries);
  put_le64(s, bytes);
  return s;
}

inline bool decode_admin_limits(std::string_view v, std::uint64_t* entries, std::uint64_t* bytes) {
  if (v.size() != 17 || static_cast<std::uint8_t>(v[0]) != kAdminLimitsFormat) return false;
  *entries = get_le64(v.substr(1));
  *bytes = get_le64(v.substr(9));
  return true;
}
inline constexpr std::string_view kCategoryCounterPrefix = "c/";
inline constexpr std::string_view kCategoryCounterEnd = "c0";  // '/' + 1

inline std::string le64(std::uint64_t v) {
  std::string s;
  put_le64(s, v);
  return s;
}

inline std::string totals(std::uint64_t entries, std::uint64_t bytes, std::uint64_t tick) {
  std::string s;
  put_le64(s, entries);
  put_le64(s, bytes);
  put_le64(s, tick);
  return s;
}

inline Status corrupt(std::string_view what, std::string_view key) {
  return {Code::corruption, fmt::format("undecodable {} record for key '{}'", what, key)};
}

// Bytes after `s` in key order with `s` as a prefix-free bound: s + '\0'.
inline std::string successor(std::string_view s) {
  std::string out(s);
  out.push_back('\0');
  return out;
}

// The smallest key greater than every key starting with `prefix`; empty when there is none.
inline std::string prefix_end(std::string_view prefix) {
  std::string end(prefix);
  while (!end.empty()) {
    auto& c = reinterpret_cast<unsigned char&>(end.back());
    if (c != 0xff) {
      ++c;
      return end;
    }
    end.pop_back();
  }
  return end;
}

using Page = std::vector<std::pair<std::string, std::string>>;

// Visits a whole column family in pages of kPage records (copied out, so `fn` may read and write
// the store). Stops at the first failure, from the scan or from `fn`.
inline Status for_each_page(kv::Kv& kv, Cf cf, const std::function<Status(const Page&)>& fn) {
  std::string from;
  for (;;) {
    Page page;
    Status s = kv.scan(cf, from, "", [&](std::string_view k, std::string_view v) {
      page.emplace_back(k, v);
      return page.size() < kPage;
    });
    if (!s.ok()) return s;
    if (page.empty()) return Status();
    if (s = fn(page); !s.ok()) return s;
    if (page.size() < kPage) return Status();
    from = successor(page.back().first);
  }
}

}  // namespace larder::engine::detail
