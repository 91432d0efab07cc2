// The persistent statistics file, <cache dir>/.cache_stats.json: format, load and atomic save.
// Thread-safety: pure functions; callers serialize saves of one path (save_stats is atomic on disk
// either way: temporary file, fsync, rename).
#pragma once

#include <chrono>
#include <cstdint>
#include <filesystem>
#include <map>
#include <string>

#include "stats/counters.hpp"
#include "util/result.hpp"

namespace larder::stats {

// The format written. 3: contributors keyed by counter file id with their counters by name (a
// counter added later reads as 0 instead of making the file unreadable), last_zeroed null when
// never zeroed. 2 added "contributors" (positional arrays); 1 had none. 1 and 2 are still read.
inline constexpr std::uint32_t kStatsFormat = 3;
inline constexpr const char* kStatsFileName = ".cache_stats.json";

struct Snapshot {
  std::uint64_t hit_count = 0, miss_count = 0, set_count = 0, delete_count = 0, eviction_count = 0,
                expiration_count = 0, invalidation_count = 0, error_count = 0, cleanup_count = 0,
                remote_hit_count = 0, remote_miss_count = 0, remote_error_count = 0,
                total_entries = 0, total_size_bytes = 0;
  std::string last_updated;  // ISO 8601 UTC
  std::string last_zeroed;   // ISO 8601 UTC, empty if never zeroed (null in the file)
  // Per live counter file (by id): the values already added into the totals above.
  std::map<std::string, CounterValues> contributors;
};

std::string to_json(const Snapshot& s);
// The snapshot `json` holds, or why it is not a statistics file of a known format.
util::Result<Snapshot> from_json(const std::string& json);

// A statistics file larger than this is not read (treated as corrupt): it is a few KB per
// thousand categories, and a planted /dev/zero or huge file must not be read into memory.
inline constexpr std::size_t kMaxStatsFileBytes = 16u << 20;

enum class [[nodiscard]] LoadResult : std::uint8_t{loaded, missing, corrupt};
// Loads `path`. A corrupt or unreadable file is renamed to "<path>.corrupt-<timestamp>" and
// *error says what was wrong; *out is then left zeroed.
LoadResult load_stats(const std::filesystem::path& path, std::chrono::system_clock::time_point now,
                      Snapshot* out, std::string* error);
// Writes atomically. Returns success, or why it failed.
util::Status save_stats(const std::filesystem::path& path, const Snapshot& s);

}  // namespace larder::stats
