// Cache request traces and their replay through larder's real eviction code.
//
// Formats:
//  - CSV with the header `timestamp,key,size` (any order of those three names; other columns
//    are ignored); one request per line; size is a whole number of bytes.
//  - libCacheSim oracleGeneral: packed little-endian records of 24 bytes (uint32 timestamp,
//    uint64 object id, uint32 size, int64 next-access index); `.zst` compressed when larder was
//    built with libzstd.
// Malformed input gives an error naming the line (CSV) or record (binary) number.
//
// Thread-safety: functions are independent; a Trace is immutable once loaded.
#pragma once

#include <cstdint>
#include <filesystem>
#include <istream>
#include <string>
#include <vector>

#include "larder/larder.hpp"
#include "util/result.hpp"

namespace larder::trace {

struct Request {
  std::string key;
  std::uint32_t size = 0;
};

struct Trace {
  std::vector<Request> requests;
  std::uint64_t unique_keys = 0;
  std::uint64_t unique_bytes = 0;  // sum of each key's size at its first request
};

enum class Format : std::uint8_t { csv = 0, oracle_general = 1 };

// Parses a CSV trace from `in`. Returns the trace, or what is malformed (with the line number).
util::Result<Trace> read_csv(std::istream& in);
// Parses oracleGeneral records from `bytes`. Returns the trace, or why not (the record number)
// when the data is not a whole number of records.
util::Result<Trace> read_oracle_general(std::string_view bytes);
// Loads `path`: the format from the name (.csv; .oracleGeneral, .bin or anything else binary;
// a trailing .zst is decompressed). Returns the trace, or why not (naming the file).
util::Result<Trace> load(const std::filesystem::path& path);
// Whether .zst input is supported in this build.
bool zstd_supported();

struct Capacity {
  std::uint64_t entries = 0;  // 0 = no entry limit
  std::uint64_t bytes = 0;    // 0 = no byte limit
};

struct Result {
  EvictionPolicy policy = EvictionPolicy::lru;
  std::uint64_t requests = 0, misses = 0;
  std::uint64_t bytes = 0, missed_bytes = 0;
  std::uint64_t not_admitted = 0;  // misses whose object was larger than the byte capacity
  double seconds = 0;
  double miss_ratio() const;
  double byte_miss_ratio() const;
};

// Replays `trace` through a larder cache with `policy` and `capacity`: every request is a get;
// on a miss the object is set with a value of the trace's size (objects larger than the byte
// capacity are not admitted). `store_dir` empty: the memory store (Strategy::disabled); else a
// RocksDB store under that directory (emptied first).
Result replay(const Trace& trace, EvictionPolicy policy, const Capacity& capacity,
              const std::filesystem::path& store_dir = {});

}  // namespace larder::trace
