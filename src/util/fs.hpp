// Filesystem helpers: atomic file replacement, private directory creation and ownership checks,
// and timestamps for names of files set aside. Thread-safety: pure functions over the filesystem;
// concurrent atomic_write_file calls on one path each leave a complete file (last rename wins).
#pragma once

#include <chrono>
#include <cstdint>
#include <filesystem>
#include <memory>
#include <optional>
#include <string>
#include <string_view>

#include "util/result.hpp"

namespace larder::util {

// A directory held open (O_PATH | O_DIRECTORY | O_NOFOLLOW) and a path that reaches it through
// /proc/self/fd: files named through path() are found in the directory that was opened, however
// its name is renamed, replaced or repointed later. Without /proc, path() is the name as given.
class PinnedDir {
 public:
  // Opens `dir`, which must be a directory and not a symlink. Returns the pin, or why it cannot
  // be opened.
  static Result<std::shared_ptr<const PinnedDir>> open(const std::filesystem::path& dir);
  ~PinnedDir();
  PinnedDir(const PinnedDir&) = delete;
  PinnedDir& operator=(const PinnedDir&) = delete;
  const std::filesystem::path& dir() const { return dir_; }    // as given (for messages)
  const std::filesystem::path& path() const { return path_; }  // for I/O

 private:
  PinnedDir() = default;
  int fd_ = -1;
  std::filesystem::path dir_, path_;
};

// Writes `content` to a temporary file beside `path`, fsyncs it, renames it over `path` and fsyncs
// the directory. The file gets `mode` (0600 unless said: cache files are private). Returns
// success, or a message naming the failing step.
Status atomic_write_file(const std::filesystem::path& path, std::string_view content,
                         unsigned mode = 0600);

// Reads a whole file. Returns its content, or why it cannot be read.
Result<std::string> read_file(const std::filesystem::path& path);

// Reads a file of the cache itself: never through a symlink, never a FIFO or device (opened
// non-blocking, must be a regular file), at most `max_bytes`. Returns the content, or why not.
Result<std::string> read_cache_file(const std::filesystem::path& path, std::size_t max_bytes);

enum class Create : std::uint8_t { no, if_missing };
// Opens a file of the cache itself for reading and writing: O_NOFOLLOW (a symlink planted in
// its place is refused), non-blocking open (a FIFO cannot hang it), and it must be a regular
// file. Returns the descriptor (close-on-exec, blocking again; the caller closes it), or why not.
Result<int> open_cache_file(const std::filesystem::path& path, Create create);

enum class Symlinks : std::uint8_t { allow, refuse };
// Creates `dir` and missing parents with mode 0700. With Symlinks::refuse, `dir` itself must be
// a real directory, not a symlink (for directories inside a cache). Returns success or why not.
Status create_private_directories(const std::filesystem::path& dir,
                                  Symlinks symlinks = Symlinks::allow);

// Whether `dir` may hold a cache. Fails (saying why) when it is owned by another user or writable
// by group/others, or when a directory on the way to it (as written, and with symlinks resolved)
// lets another user replace what follows: owned by another user than us or root, or writable by
// group/others unless it is sticky and the next component is ours (the rule of ssh's
// StrictModes). Succeeds when it is safe or does not exist yet.
Status check_private_directory(const std::filesystem::path& dir);

// The name of the filesystem `path` is on when it is a network or FUSE filesystem (nfs, smb,
// cifs, fuse, 9p, ceph, afs...), where flock and RocksDB's file locking are not reliable
// between machines; nullopt for a local filesystem or when it cannot be told.
std::optional<std::string> network_filesystem(const std::filesystem::path& path);

// The CACHEDIR.TAG standard (https://bford.org/cachedir/): backup and archiving tools skip a
// directory holding this file.
inline constexpr const char* kCacheDirTagName = "CACHEDIR.TAG";
inline constexpr const char* kCacheDirTagSignature = "Signature: 8a477f597d28d172789f06886806bc55";
// Creates <dir>/CACHEDIR.TAG (mode 0600) unless something of that name exists (a planted
// symlink is left alone, never followed). Returns success, or why it could not be written.
Status write_cachedir_tag(const std::filesystem::path& dir);

// "20261121T045700Z" for the given time: used in names of files and directories set aside.
std::string compact_utc_timestamp(std::chrono::system_clock::time_point t);
// "2026-11-21T04:57:00.123Z".
std::string iso8601_utc(std::chrono::system_clock::time_point t);

// Renames `path` to "<path><infix><timestamp>" (adding a counter if taken). Returns the new path,
// or an empty path when the rename failed.
std::filesystem::path move_aside(const std::filesystem::path& path, std::string_view infix,
                                 std::chrono::system_clock::time_point now);

}  // namespace larder::util
