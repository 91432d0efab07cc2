// Trace readers (CSV, oracleGeneral, .zst) and replay through the real eviction code, checked
// against miss counts worked out by hand.
#include <doctest/doctest.h>

#include <fstream>
#include <sstream>

#ifdef LARDER_HAVE_ZSTD
#include <zstd.h>
#endif

#include "support.hpp"
#include "trace/trace.hpp"

using namespace larder;
using namespace larder::test;

namespace {

std::string record(std::uint32_t ts, std::uint64_t id, std::uint32_t size, std::int64_t next) {
  std::string r;
  for (int i = 0; i < 4; ++i) r.push_back(static_cast<char>(ts >> (8 * i)));
  for (int i = 0; i < 8; ++i) r.push_back(static_cast<char>(id >> (8 * i)));
  for (int i = 0; i < 4; ++i) r.push_back(static_cast<char>(size >> (8 * i)));
  for (int i = 0; i < 8; ++i)
    r.push_back(static_cast<char>(static_cast<std::uint64_t>(next) >> (8 * i)));
  return r;
}

trace::Trace csv(const std::string& text) {
  std::istringstream in(text);
  auto t = trace::read_csv(in);
  REQUIRE_MESSAGE(t.ok(), t.error());
  return std::move(*t);
}

std::string csv_error(const std::string& text) {
  std::istringstream in(text);
  auto t = trace::read_csv(in);
  CHECK_FALSE(t.ok());
  return t.error();
}

// "A B C" -> a CSV trace of those keys, each of `size` bytes.
trace::Trace keys(const std::string& sequence, std::uint32_t size = 10) {
  std::string text = "timestamp,key,size\n";
  std::istringstream in(sequence);
  std::string k;
  for (int t = 0; in >> k; ++t)
    text += std::to_string(t) + "," + k + "," + std::to_string(size) + "\n";
  return csv(text);
}

}  // namespace

TEST_CASE("trace: CSV with any column order, extra columns, blank lines and CRLF") {
  const auto t = csv("size,extra,key,timestamp\r\n10,x,a,1\r\n\r\n20,y,b,2.5\r\n10,z,a,3\r\n");
  REQUIRE(t.requests.size() == 3);
  CHECK(t.requests[1].key == "b");
  CHECK(t.requests[1].size == 20);
  CHECK(t.unique_keys == 2);
  CHECK(t.unique_bytes == 30);
}

TEST_CASE("trace: malformed CSV names the line") {
  CHECK(csv_error("").find("line 1: empty") != std::string::npos);
  CHECK(csv_error("time,key,size\n1,a,1\n").find("line 1: header") != std::string::npos);
  CHECK(csv_error("timestamp,key,size\n1,a,1\n2,b\n").find("line 3: expected 3 fields") !=
        std::string::npos);
  CHECK(csv_error("timestamp,key,size\n1,a,1\n2,b,big\n").find("line 3: size 'big'") !=
        std::string::npos);
  CHECK(csv_error("timestamp,key,size\n1,a,-4\n").find("line 2: size '-4'") != std::string::npos);
  CHECK(csv_error("timestamp,key,size\nnow,a,1\n").find("line 2: timestamp 'now'") !=
        std::string::npos);
  CHECK(csv_error("timestamp,key,size\n1,,1\n").find("line 2: key is empty") != std::string::npos);
}

TEST_CASE("trace: oracleGeneral records, truncation named by record, and files") {
  const std::string bytes = record(1, 7, 100, 2) + record(2, 9, 50, -1) + record(3, 7, 100, -1);
  auto read = trace::read_oracle_general(bytes);
  REQUIRE(read.ok());
  const trace::Trace& t = *read;
  REQUIRE(t.requests.size() == 3);
  CHECK(t.requests[0].key == t.requests[2].key);
  CHECK(t.requests[1].size == 50);
  CHECK(t.unique_keys == 2);
  CHECK(t.unique_bytes == 150);
  auto cut = trace::read_oracle_general(bytes + "12345");
  CHECK_FALSE(cut.ok());
  CHECK(cut.error() == "record 4: truncated (5 of 24 bytes)");

  TempDir tmp;
  std::ofstream(tmp / "t.oracleGeneral", std::ios::binary) << bytes;
  auto loaded = trace::load(tmp / "t.oracleGeneral");
  REQUIRE(loaded.ok());
  CHECK(loaded->requests.size() == 3);
  std::ofstream(tmp / "bad.csv") << "timestamp,key,size\n1,a,x\n";
  auto bad = trace::load(tmp / "bad.csv");
  CHECK_FALSE(bad.ok());
  CHECK(bad.error().find("bad.csv: line 2") != std::string::npos);
  auto missing = trace::load(tmp / "missing.csv");
  CHECK_FALSE(missing.ok());
  CHECK(missing.error().find("missing.csv") != std::string::npos);

#ifdef LARDER_HAVE_ZSTD
  REQUIRE(trace::zstd_supported());
  std::string packed(ZSTD_compressBound(bytes.size()), '\0');
  packed.resize(ZSTD_compress(packed.data(), packed.size(), bytes.data(), bytes.size(), 3));
  std::ofstream(tmp / "t.oracleGeneral.zst", std::ios::binary) << packed;
  auto unpacked = trace::load(tmp / "t.oracleGeneral.zst");
  REQUIRE(unpacked.ok());
  CHECK(unpacked->requests.size() == 3);
  CHECK(unpacked->unique_bytes == 150);
  std::ofstream(tmp / "cut.oracleGeneral.zst", std::ios::binary)
      << packed.substr(0, packed.size() - 3);
  auto cut_zst = trace::load(tmp / "cut.oracleGeneral.zst");
  CHECK_FALSE(cut_zst.ok());
  CHECK(cut_zst.error().find("zstd") != std::string::npos);
#else
  MESSAGE("built without libzstd: .zst input not tested");
#endif
}

// A B C A D B E A C B with room for 3 entries, worked out by hand:
//  LRU : only request 4 (A) hits                                  -> 9 misses
//  FIFO: 4 (A) and 6 (B) hit; D evicts A, E evicts B ...           -> 8 misses
//  LFU : 4 (A) and 8 (A, count 2 keeps it) hit; ties go to the least recently used -> 8 misses
TEST_CASE_TEMPLATE("replay: miss counts match hand-computed answers", S, RocksStore, MemoryStore) {
  const auto t = keys("A B C A D B E A C B");
  TempDir tmp;
  const std::filesystem::path dir = S::persistent ? tmp.path() : std::filesystem::path();
  trace::Capacity cap;
  cap.entries = 3;
  CHECK(trace::replay(t, EvictionPolicy::lru, cap, dir).misses == 9);
  CHECK(trace::replay(t, EvictionPolicy::fifo, cap, dir).misses == 8);
  CHECK(trace::replay(t, EvictionPolicy::lfu, cap, dir).misses == 8);

  // Bytes: 100-byte capacity; BIG (150 B) is never admitted.
  // A40 B40 BIG A40 BIG C40 A40 under LRU: hits at 4 and 7; C evicts B.
  const auto b =
      csv("timestamp,key,size\n1,A,40\n2,B,40\n3,BIG,150\n4,A,40\n5,BIG,150\n6,C,40\n7,A,40\n");
  trace::Capacity bytes;
  bytes.bytes = 100;
  const auto r = trace::replay(b, EvictionPolicy::lru, bytes, dir);
  CHECK(r.requests == 7);
  CHECK(r.misses == 5);
  CHECK(r.not_admitted == 2);
  CHECK(r.missed_bytes == 420);
  CHECK(r.byte_miss_ratio() == doctest::Approx(420.0 / 500.0));
  CHECK(r.miss_ratio() == doctest::Approx(5.0 / 7.0));
}
