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
#include <filesystem>
#include <string>

namespace larder::util {

class LockFile {
 public:
  LockFile() = default;
  ~LockFile();
  LockFile(LockFile&& other) noexcept;
  LockFile& operator=(LockFile&& other) noexcept;
  LockFile(const LockFile&) = delete;
  LockFile& operator=(const LockFile&) = delete;

  // Opens `path` (creating it with mode 0600 unless `create` is false). Returns an empty string
  // on success, else why it failed. Takes no lock.
  std::string open(const std::filesystem::path& path, bool create = true);
  bool is_open() const { return fd_ >= 0; }
  int fd() const { return fd_; }
  const std::filesystem::path& path() const { return path_; }

  // Takes the lock without waiting. True when taken; false when another open file holds it (or
  // on error: *error says why when given).
  bool try_lock(bool exclusive = true, std::string* error = nullptr);
  // Takes the lock, retrying until `timeout` has passed. True when taken.
  bool lock_for(std::chrono::milliseconds timeout, bool exclusive = true);
  void unlock();
  bool locked() const { return locked_; }

  // Replaces the file's content (e.g. the holder's pid); empty string on success, else why.
  std::string write_content(std::string_view content);
  // The file's content (at most 4 KiB); empty when unreadable.
  std::string read_content() const;

  void close();

 private:
  int fd_ = -1;
  bool locked_ = false;
  std::filesystem::path path_;
};

}  // namespace larder::util
