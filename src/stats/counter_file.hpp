// Statistics shared by every process that uses one cache directory, exact even when a process is
// killed.
//
// Each process counts into its own counter file, <dir>/.stats/<id>.cnt: a Counters block
// (counters.hpp) in a shared memory mapping, so every increment is in the kernel's page cache at
// once and survives SIGKILL of the process. The process holds an flock on the file while it
// lives. .cache_stats.json holds the totals plus, per live counter file, the values already
// added into them ("contributors"). Folding (under an exclusive flock on .cache_stats.lock) adds
// each counter file's growth since its last fold to the totals; a file whose lock can be taken
// belongs to a process that is gone: its last growth is added, it is removed and forgotten. The
// totals and the "already added" values are written in one atomic file replacement, so a
// process killed at any point is counted exactly once.
//
// Thread-safety: a CounterFile's counters are atomics; fold_stats and read_stats may run in many
// threads and processes at once (the statistics lock serializes them).
#pragma once

#include <chrono>
#include <filesystem>
#include <functional>
#include <memory>
#include <string>

#include "stats/counters.hpp"
#include "stats/stats_file.hpp"
#include "util/lock_file.hpp"

namespace larder::stats {

inline constexpr const char* kCounterDirName = ".stats";
inline constexpr const char* kStatsLockName = ".cache_stats.lock";
inline constexpr std::uint32_t kCounterFileFormat = 1;
inline constexpr std::size_t kCounterFileBytes = 4096;
inline constexpr std::size_t kCounterOffset = 64;  // header: magic, format, count, pid, created

class CounterFile {
 public:
  // Creates, locks and maps a new counter file in <dir>/.stats (created 0700 if missing).
  // Returns it, or why that failed.
  static util::Result<std::unique_ptr<CounterFile>> create(const std::filesystem::path& dir);
  ~CounterFile();  // unmaps and unlocks; the file stays until folded
  CounterFile(const CounterFile&) = delete;
  CounterFile& operator=(const CounterFile&) = delete;

  Counters& counters() { return *counters_; }
  const Counters& counters() const { return *counters_; }
  const std::string& id() const { return id_; }
  // True once the file was truncated under this process (the counters then live in memory,
  // restarted from zero; see util/mapping_guard.hpp).
  bool lost() const;
  const std::filesystem::path& path() const { return path_; }

 private:
  CounterFile() = default;
  util::LockFile lock_;
  void* map_ = nullptr;
  Counters* counters_ = nullptr;
  std::string id_;
  std::filesystem::path path_;
};

enum class FoldMode : std::uint8_t {
  save = 0,   // add growth, keep `own` registered
  close = 1,  // add growth, retire `own` (the process is closing the directory)
  zero = 2,   // set every total to zero and mark everything counted so far as added
};

// Folds every counter file of `dir` into <dir>/.cache_stats.json (see above) and writes it
// atomically. `own` (may be null) is the caller's file. `update` (may be empty) may set the
// entry and byte totals before the write. On success fills *out (may be null) with what was
// written; *warning (may be null) says when a corrupt statistics file was moved aside. On failure
// returns why; nothing was written.
util::Status fold_stats(const std::filesystem::path& dir, CounterFile* own, FoldMode mode,
                        std::chrono::system_clock::time_point now,
                        const std::function<void(Snapshot&)>& update, Snapshot* out,
                        std::string* warning = nullptr);

// The current totals without writing anything: the file's totals plus every counter file's
// growth since its last fold, in *out. Returns success, or why not (then *out holds what could
// be read: at least `own`'s counters).
util::Status read_stats(const std::filesystem::path& dir, const CounterFile* own, Snapshot* out);

// A counter above this is not believed (no process counts 2^48 operations): a file holding one
// is damaged or forged and is left out of the statistics.
inline constexpr std::uint64_t kMaxPlausibleCount = std::uint64_t{1} << 48;

// Decodes the bytes of a counter file (as another process's file is read). Returns its counters,
// or why not: a file that is too short, of another format, or holds implausible counts.
util::Result<CounterValues> decode_counter_file(std::string_view bytes);

}  // namespace larder::stats
