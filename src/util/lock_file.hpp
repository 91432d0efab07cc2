// LockFile: an advisory flock(2) lock on a file, held for the object's lifetime (RAII). Used for
// the shared cache's owner election, the statistics lock, per-process counter files and the
// liveness lock of process_isolated directories. flock locks belong to the open file: they are
// released when the holder closes it or dies (even by SIGKILL), which is what proves a holder
// gone. The descriptor is close-on-exec and is closed in forked children (util/fork.hpp), so a
// child never keeps its parent's lock alive.
//
// Thread-safety: one LockFile must not be used from two threads at once.
#pragma once

#include <chrono>
#include <cstdint>
#include <filesystem>
#include <string>

#include "util/fs.hpp"
#include "util/result.hpp"

namespace larder::util {

enum class LockMode : std::uint8_t { shared, exclusive };

class LockFile;
// True when `taken` says the lock was taken (false when another holder has it or on error).
inline bool held(const Result<bool>& taken) {
  return taken.ok() && *taken;
}

class LockFile {
 public:
  LockFile() = default;
  ~LockFile();
  LockFile(LockFile&& other) noexcept;
  LockFile& operator=(LockFile&& other) noexcept;
  LockFile(const LockFile&) = delete;
  LockFile& operator=(const LockFile&) = delete;

  // Opens `path` (Create::if_missing: creating it with mode 0600). Returns success or why it
  // failed. Takes no lock.
  Status open(const std::filesystem::path& path, Create create = Create::if_missing);
  bool is_open() const { return fd_ >= 0; }
  int fd() const { return fd_; }
  const std::filesystem::path& path() const { return path_; }

  // Takes the lock without waiting. Returns true when taken, false when another open file holds
  // it, or why it could not be tried (not open, flock failed). held() folds both into a bool.
  Result<bool> try_lock(LockMode mode = LockMode::exclusive);
  // Takes the lock, retrying until `timeout` has passed. True when taken.
  [[nodiscard]] bool lock_for(std::chrono::milliseconds timeout,
                              LockMode mode = LockMode::exclusive);
  void unlock();
  bool locked() const { return locked_; }

  // Replaces the file's content (e.g. the holder's pid). Returns success or why not.
  Status write_content(std::string_view content);
  // The file's content (at most 4 KiB); empty when unreadable.
  std::string read_content() const;

  void close();

 private:
  int fd_ = -1;
  bool locked_ = false;
  std::filesystem::path path_;
};

}  // namespace larder::util
