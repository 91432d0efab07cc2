// Filesystem helpers: atomic file replacement, private directory creation and ownership checks,
// and timestamps for names of files set aside. Thread-safety: pure functions over the filesystem;
// concurrent atomic_write_file calls on one path each leave a complete file (last rename wins).
#pragma once

#include <chrono>
#include <filesystem>
#include <string>
#include <string_view>

namespace larder::util {

// Writes `content` to a temporary file beside `path`, fsyncs it, renames it over `path` and fsyncs
// the directory. Returns an empty string on success, else a message naming the failing step.
std::string atomic_write_file(const std::filesystem::path& path, std::string_view content);

// Reads a whole file. Returns false (and sets *error) when it cannot be read.
bool read_file(const std::filesystem::path& path, std::string* content, std::string* error);

// Creates `dir` and missing parents with mode 0700. Returns an empty string on success, else why.
std::string create_private_directories(const std::filesystem::path& dir);

// Why `dir` must not hold a cache: owned by another user or writable by group/others. Empty when
// it is safe (or does not exist yet).
std::string unsafe_directory_reason(const std::filesystem::path& dir);

// "20261121T045700Z" for the given time: used in names of files and directories set aside.
std::string compact_utc_timestamp(std::chrono::system_clock::time_point t);
// "2026-11-21T04:57:00.123Z".
std::string iso8601_utc(std::chrono::system_clock::time_point t);

// Renames `path` to "<path><infix><timestamp>" (adding a counter if taken). Returns the new path,
// or an empty path when the rename failed.
std::filesystem::path move_aside(const std::filesystem::path& path, std::string_view infix,
                                 std::chrono::system_clock::time_point now);

}  // namespace larder::util
