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
#include <string>
#include <string_view>

#include "kv/kv.hpp"
#include "util/log.hpp"

namespace larder::kv {

struct RocksOptions {
  // Asked during compaction for each entries record; true drops it physically. Must be safe to
  // call from RocksDB's background threads. Empty: nothing is dropped.
  std::function<bool(std::string_view value)> drop_entry;
  std::size_t block_cache_bytes = 32 * 1024 * 1024;
  // Bounds the write-ahead log so replay after a crash stays short: a shared cache's takeover
  // waits for it. 4 MiB: the replay is most of a crashed store's open (docs/performance.md,
  // "The takeover's WAL bound"); sets showed no cost against 8 MiB.
  std::uint64_t max_total_wal_size = 4 * 1024 * 1024;
  bool read_only = false;  // open without writing (inspection of a live cache)
  // RocksDB's own log lines go here (warnings and errors as warn, the rest as debug), never to a
  // LOG file in the store: writing its info log on a full disk is what made RocksDB abort.
  // Null: dropped. Must outlive the store.
  const util::Logger* log = nullptr;
  // Called with RocksDB's message when it drops data while opening (a damaged write-ahead log
  // whose later records are skipped). Must outlive the store.
  std::function<void(std::string_view message)> on_data_loss;
};

// fork(): RocksDB's background threads (flushes, compactions) live in process-wide pools that do
// not survive fork(). A child forked (without exec) from a process that had a store open can
// neither run a store (its flushes would never run: writes stall) nor run RocksDB's static
// destructors at exit (they join threads that do not exist: exit hangs). So in such a child
// open_rocks_kv refuses (rocksdb_usable() says why), and a child that exits through exit() skips
// the static destructors registered before the first store was opened (stdio is flushed first).
// True when this process may open a store; else *why (may be null) says why not.
bool rocksdb_usable(std::string* why);

// Opens (creating if needed, unless read_only) the database in `dir`. Full disks: a failed write
// returns io_error and RocksDB stops writing; Kv::recover() resumes it (DB::Resume) or, when that
// does not clear the error, closes and reopens the database, so writes work again once space is
// back. No file of the store is written outside `dir` and RocksDB writes no info LOG file. On
// failure returns a status whose code is corruption when the files are damaged beyond RocksDB's
// recovery, io_error otherwise (permissions, lock held by another process, ...).
Status open_rocks_kv(const std::filesystem::path& dir, const RocksOptions& options,
                     std::unique_ptr<Kv>* out);

}  // namespace larder::kv
