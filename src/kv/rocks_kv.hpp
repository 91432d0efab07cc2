// A Kv over RocksDB: one database directory, one column family per kv::Cf, a compaction filter
// on the entries family that physically drops records the engine says are dead, and a
// deletion-triggered compaction collector so queue-like families do not fill with tombstones.
// Thread-safety: as kv::Kv (RocksDB handles concurrency). Closing flushes the memtables so the
// next open replays no log.
#pragma once

#include <cstdint>
#include <filesystem>
#include <functional>
#include <memory>
#include <string_view>

#include "kv/kv.hpp"

namespace larder::kv {

struct RocksOptions {
  // Asked during compaction for each entries record; true drops it physically. Must be safe to
  // call from RocksDB's background threads. Empty: nothing is dropped.
  std::function<bool(std::string_view value)> drop_entry;
  std::size_t block_cache_bytes = 32 * 1024 * 1024;
  // Bounds the write-ahead log so replay after a crash stays short.
  std::uint64_t max_total_wal_size = 64 * 1024 * 1024;
  bool read_only = false;  // open without writing (inspection of a live cache)
};

// Opens (creating if needed, unless read_only) the database in `dir`. On failure returns a status
// whose code is corruption when the files are damaged beyond RocksDB's recovery, io_error
// otherwise (permissions, lock held by another process, ...).
Status open_rocks_kv(const std::filesystem::path& dir, const RocksOptions& options,
                     std::unique_ptr<Kv>* out);

}  // namespace larder::kv
