// The storage interface (src/kv): the RocksDB store and the memory store behave the same for
// everything the engine relies on — point reads, ordered scans with bounds and early stop,
// atomic batches, range deletes, reset of one family, and reopening (RocksDB keeps its data).
#include <doctest/doctest.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <numeric>
#include <random>
#include <set>
#include <string>
#include <vector>

#include <fmt/format.h>

#include "kv/memory_kv.hpp"
#include "kv/rocks_kv.hpp"
#include "support.hpp"

using namespace larder;
using namespace larder::test;

namespace {

struct MemoryKv {
  std::unique_ptr<kv::Kv> open(const TempDir&) { return kv::make_memory_kv(); }
};
struct RocksKv {
  std::unique_ptr<kv::Kv> open(const TempDir& tmp) {
    std::unique_ptr<kv::Kv> out;
    const kv::Status s = kv::open_rocks_kv(tmp / "db", {}, &out);
    REQUIRE_MESSAGE(s.ok(), s.message);
    return out;
  }
};

std::vector<std::string> scan_keys(kv::Kv& db, kv::Cf cf, std::string_view begin = {},
                                   std::string_view end = {}, std::size_t stop_after = 1000) {
  std::vector<std::string> out;
  const kv::Status s = db.scan(cf, begin, end, [&](std::string_view k, std::string_view) {
    out.emplace_back(k);
    return out.size() < stop_after;
  });
  CHECK(s.ok());
  return out;
}

void put(kv::Kv& db, kv::Cf cf, std::string_view k, std::string_view v) {
  auto b = db.new_batch();
  b->put(cf, k, v);
  REQUIRE(db.write(*b).ok());
}

}  // namespace

TEST_CASE_TEMPLATE("kv: get, ordered scans, batches and range deletes", S, MemoryKv, RocksKv) {
  TempDir tmp;
  S store;
  auto db = store.open(tmp);
  std::string value;
  CHECK(db->get(kv::Cf::entries, "a", &value).not_found());
  CHECK_FALSE(db->get(kv::Cf::entries, "a", &value).failed());

  // One batch, several families, applied together.
  auto b = db->new_batch();
  for (const char* k : {"c", "a", "b", "d"}) b->put(kv::Cf::entries, k, std::string("v") + k);
  b->put(kv::Cf::order, "x", "");
  CHECK(b->count() == 5);
  REQUIRE(db->write(*b).ok());
  REQUIRE(db->get(kv::Cf::entries, "b", &value).ok());
  CHECK(value == "vb");
  CHECK(db->get(kv::Cf::order, "b", &value).not_found());  // families are separate

  CHECK(scan_keys(*db, kv::Cf::entries) == std::vector<std::string>{"a", "b", "c", "d"});
  CHECK(scan_keys(*db, kv::Cf::entries, "b", "d") == std::vector<std::string>{"b", "c"});
  CHECK(scan_keys(*db, kv::Cf::entries, {}, {}, 2) == std::vector<std::string>{"a", "b"});

  // Overwrite, delete and delete_range in one batch; the last write of a key wins.
  b = db->new_batch();
  b->put(kv::Cf::entries, "a", "new");
  b->del(kv::Cf::entries, "d");
  b->delete_range(kv::Cf::entries, "b", "c");  // [b, c): only b
  REQUIRE(db->write(*b).ok());
  CHECK(scan_keys(*db, kv::Cf::entries) == std::vector<std::string>{"a", "c"});
  REQUIRE(db->get(kv::Cf::entries, "a", &value).ok());
  CHECK(value == "new");

  // Binary keys and values (the engine's index keys hold zero bytes) keep their bytes and order.
  const std::string k1("k\0\x01", 3), k2("k\0\xff", 3);
  put(*db, kv::Cf::category, k2, std::string("\0v", 2));
  put(*db, kv::Cf::category, k1, "");
  CHECK(scan_keys(*db, kv::Cf::category) == std::vector<std::string>{k1, k2});
  REQUIRE(db->get(kv::Cf::category, k2, &value).ok());
  CHECK(value == std::string("\0v", 2));

  CHECK(db->flush().ok());
  CHECK(db->compact(kv::Cf::entries).ok());
  bool reopened = true;
  CHECK(db->recover(&reopened).ok());
  CHECK_FALSE(reopened);  // nothing failed: nothing to reopen
}

TEST_CASE_TEMPLATE("kv: get_view passes the stored bytes, as get returns them", S, MemoryKv,
                   RocksKv) {
  TempDir tmp;
  S store;
  auto db = store.open(tmp);
  int calls = 0;
  CHECK(db->get_view(kv::Cf::entries, "absent", [&](std::string_view) { ++calls; }).not_found());
  CHECK(calls == 0);                  // not called for a missing key
  const std::string big(70000, 'x');  // more than a RocksDB block
  put(*db, kv::Cf::entries, "k", std::string("\0head", 5) + big);
  put(*db, kv::Cf::access, "k", "other family");
  for (const bool flushed : {false, true}) {
    if (flushed) REQUIRE(db->flush().ok());  // from an SST, not the memtable
    std::string got, copied;
    REQUIRE(db->get_view(kv::Cf::entries, "k", [&](std::string_view v) {
                ++calls;
                got.assign(v);
              }).ok());
    REQUIRE(db->get(kv::Cf::entries, "k", &copied).ok());
    CHECK(got == copied);
    CHECK(got.size() == 5 + big.size());
  }
  CHECK(calls == 2);
}

TEST_CASE_TEMPLATE("kv: reset empties one family and leaves the others", S, MemoryKv, RocksKv) {
  TempDir tmp;
  S store;
  auto db = store.open(tmp);
  put(*db, kv::Cf::access, "k", "a");
  put(*db, kv::Cf::entries, "k", "e");
  REQUIRE(db->reset(kv::Cf::access).ok());
  std::string value;
  CHECK(db->get(kv::Cf::access, "k", &value).not_found());
  CHECK(db->get(kv::Cf::entries, "k", &value).ok());
  put(*db, kv::Cf::access, "k2", "a");  // the family takes writes again
  CHECK(scan_keys(*db, kv::Cf::access) == std::vector<std::string>{"k2"});
}

// The memory store keeps new keys unsorted until 16384 of them wait (or a scan needs them): scans
// must give the same order either way, with keys removed before and after they were sorted.
TEST_CASE_TEMPLATE("kv: scans stay in order over many writes, removals and range deletes", S,
                   MemoryKv, RocksKv) {
  TempDir tmp;
  S store;
  auto db = store.open(tmp);
  std::set<std::string> model;
  std::mt19937 rng(7);
  const auto key = [](unsigned i) { return fmt::format("k{:06}", i); };
  // 40000 keys in random order, in batches: two merges' worth and a remainder; every fifth
  // batch also removes keys added earlier (some merged by then, some not).
  std::vector<unsigned> order(40000);
  std::iota(order.begin(), order.end(), 0u);
  std::shuffle(order.begin(), order.end(), rng);
  for (std::size_t i = 0; i < order.size(); i += 500) {
    auto b = db->new_batch();
    for (std::size_t j = i; j < i + 500; ++j) {
      b->put(kv::Cf::entries, key(order[j]), "v");
      model.insert(key(order[j]));
    }
    if ((i / 500) % 5 == 4)
      for (int n = 0; n < 300; ++n) {
        const std::string k = key(order[rng() % (i + 500)]);
        b->del(kv::Cf::entries, k);
        model.erase(k);
      }
    REQUIRE(db->write(*b).ok());
    if ((i / 500) % 13 == 0) {  // a scan between the writes, from a middle key, stopping early
      const std::string from = key(order[i] / 2);
      std::vector<std::string> want(model.lower_bound(from), model.end());
      want.resize(std::min<std::size_t>(want.size(), 700));
      CHECK(scan_keys(*db, kv::Cf::entries, from, {}, 700) == want);
    }
  }
  const std::vector<std::string> all(model.begin(), model.end());
  CHECK(scan_keys(*db, kv::Cf::entries, {}, {}, 1u << 20) == all);
  const auto bounded = [&](const std::string& a, const std::string& z) {
    return std::vector<std::string>(model.lower_bound(a), model.lower_bound(z));
  };
  CHECK(scan_keys(*db, kv::Cf::entries, key(12345), key(23456), 1u << 20) ==
        bounded(key(12345), key(23456)));
  // A range delete, then more keys (unsorted again) inside and around the deleted range.
  auto b = db->new_batch();
  b->delete_range(kv::Cf::entries, key(10000), key(30000));
  REQUIRE(db->write(*b).ok());
  model.erase(model.lower_bound(key(10000)), model.lower_bound(key(30000)));
  b = db->new_batch();
  for (unsigned i = 9990; i < 10010; ++i) {
    b->put(kv::Cf::entries, key(i), "w");
    model.insert(key(i));
  }
  REQUIRE(db->write(*b).ok());
  CHECK(scan_keys(*db, kv::Cf::entries, key(9000), key(31000), 1u << 20) ==
        bounded(key(9000), key(31000)));
  CHECK(scan_keys(*db, kv::Cf::entries, {}, {}, 1u << 20) ==
        std::vector<std::string>(model.begin(), model.end()));
  std::string value;
  CHECK(db->get(kv::Cf::entries, key(10005), &value).ok());
  CHECK(value == "w");
  CHECK(db->get(kv::Cf::entries, key(20000), &value).not_found());
}

TEST_CASE("kv: the RocksDB store keeps its records over a reopen; a second opener is refused") {
  TempDir tmp;
  {
    auto db = RocksKv{}.open(tmp);
    put(*db, kv::Cf::entries, "kept", "v");
    std::unique_ptr<kv::Kv> second;
    // The same directory twice in one process would share RocksDB's lock: refused by larder.
    const kv::Status s = kv::open_rocks_kv(tmp / "db", {}, &second);
    CHECK_FALSE(s.ok());
    CHECK_FALSE(s.message.empty());
  }
  auto db = RocksKv{}.open(tmp);
  std::string value;
  REQUIRE(db->get(kv::Cf::entries, "kept", &value).ok());
  CHECK(value == "v");
}

TEST_CASE("kv: family names are the ones the store records") {
  CHECK(kv::to_string(kv::Cf::entries) == "entries");
  CHECK(kv::to_string(kv::Cf::counters) == "counters");
}

TEST_CASE_TEMPLATE("kv: or_byte sets bits in a stored value without reading it", S, MemoryKv,
                   RocksKv) {
  TempDir tmp;
  S store;
  auto db = store.open(tmp);
  put(*db, kv::Cf::entries, "k", std::string("\x01\x00rest", 6));
  auto b = db->new_batch();
  b->or_byte(kv::Cf::entries, "k", 1, 0x01);
  b->or_byte(kv::Cf::entries, "k", 1, 0x04);  // two operands on one key in one batch
  CHECK(b->count() == 2);
  REQUIRE(db->write(*b).ok());
  std::string value;
  REQUIRE(db->get(kv::Cf::entries, "k", &value).ok());
  CHECK(value == std::string("\x01\x05rest", 6));
  CHECK(scan_keys(*db, kv::Cf::entries) == std::vector<std::string>{"k"});

  // A put after the operand replaces it; a delete removes the value with its operands.
  b = db->new_batch();
  b->or_byte(kv::Cf::entries, "k", 1, 0x02);
  b->put(kv::Cf::entries, "k", std::string("\x01\x00new", 5));
  REQUIRE(db->write(*b).ok());
  REQUIRE(db->get(kv::Cf::entries, "k", &value).ok());
  CHECK(value == std::string("\x01\x00new", 5));

  // An offset beyond the value, or no value at all: an empty value, the same in both stores.
  b = db->new_batch();
  b->or_byte(kv::Cf::entries, "k", 9, 0x01);
  b->or_byte(kv::Cf::entries, "absent", 0, 0x01);
  REQUIRE(db->write(*b).ok());
  REQUIRE(db->get(kv::Cf::entries, "k", &value).ok());
  CHECK(value.empty());
  REQUIRE(db->get(kv::Cf::entries, "absent", &value).ok());
  CHECK(value.empty());

  put(*db, kv::Cf::entries, "z", "ab");
  b = db->new_batch();
  b->or_byte(kv::Cf::entries, "z", 0, 0x80);
  b->del(kv::Cf::entries, "absent");
  REQUIRE(db->write(*b).ok());
  CHECK(db->get(kv::Cf::entries, "absent", &value).not_found());
  CHECK(db->flush().ok());
  CHECK(db->compact(kv::Cf::entries).ok());  // RocksDB folds the operand into the value
  REQUIRE(db->get(kv::Cf::entries, "z", &value).ok());
  CHECK(value ==
        "\xe1"
        "b");
}

TEST_CASE("kv: or_byte operands survive a reopen and a compaction of the RocksDB store") {
  TempDir tmp;
  {
    auto db = RocksKv{}.open(tmp);
    put(*db, kv::Cf::entries, "k", "\x10x");
    auto b = db->new_batch();
    b->or_byte(kv::Cf::entries, "k", 0, 0x01);
    REQUIRE(db->write(*b).ok());
  }
  {
    auto db = RocksKv{}.open(tmp);  // from the WAL
    std::string value;
    REQUIRE(db->get(kv::Cf::entries, "k", &value).ok());
    CHECK(value == "\x11x");
    CHECK(db->flush().ok());
    CHECK(db->compact(kv::Cf::entries).ok());
  }
  auto db = RocksKv{}.open(tmp);
  std::string value;
  REQUIRE(db->get(kv::Cf::entries, "k", &value).ok());
  CHECK(value == "\x11x");
}

TEST_CASE("kv: an or_byte operand that does not decode leaves an empty value, never a failure") {
  std::string value = "abc";
  CHECK_FALSE(kv::apply_or_byte("junk", &value));
  CHECK(value.empty());
  value = "abc";
  CHECK(kv::apply_or_byte(kv::or_byte_operand(2, 0x01), &value));
  CHECK(value == "abc");  // 'c' is 0x63: bit 0 already set
  CHECK(kv::apply_or_byte(kv::or_byte_operand(0, 0x02), &value));
  CHECK(value == "cbc");
}

namespace {
// Bytes this process has read through read(2)/pread(2) so far (/proc/self/io rchar).
std::uint64_t bytes_read() {
  std::FILE* f = std::fopen("/proc/self/io", "r");
  if (f == nullptr) return 0;
  char line[128];
  std::uint64_t n = 0;
  while (std::fgets(line, sizeof line, f) != nullptr)
    if (std::strncmp(line, "rchar:", 6) == 0) n = std::strtoull(line + 6, nullptr, 10);
  std::fclose(f);
  return n;
}
}  // namespace

// A reopened store read at 2-3 % of raw RocksDB: the index block of an SST larger than a
// block-cache shard (32 MiB / 64) was read and decompressed again by every get. Here keys with a
// long common prefix make a 12 MB SST's index block well over a shard's 512 KiB; the SST is
// compacted out of L0 (L0's index blocks were pinned, so only older data showed it).
TEST_CASE("kv: gets of a reopened RocksDB store do not read an SST's whole index each time") {
  TempDir tmp;
  const std::string prefix(190, 'p');
  const auto key_of = [&](int i) { return fmt::format("{}{:08}", prefix, i); };
  constexpr int kKeys = 10'000;
  {
    auto db = RocksKv{}.open(tmp);
    const std::string value(1000, 'v');
    auto batch = db->new_batch();
    for (int i = 0; i < kKeys; ++i) batch->put(kv::Cf::entries, key_of(i), value);
    REQUIRE(db->write(*batch).ok());
    REQUIRE(db->flush().ok());
    REQUIRE(db->compact(kv::Cf::entries).ok());  // out of L0, whose index blocks are pinned
  }
  auto db = RocksKv{}.open(tmp);
  std::mt19937 rng(3);
  std::string value;
  REQUIRE(db->get(kv::Cf::entries, key_of(0), &value).ok());  // the first get opens the table
  constexpr int kGets = 300;
  const std::uint64_t before = bytes_read();
  for (int i = 0; i < kGets; ++i)
    REQUIRE(db->get(kv::Cf::entries, key_of(static_cast<int>(rng() % kKeys)), &value).ok());
  const std::uint64_t per_get = (bytes_read() - before) / kGets;
  MESSAGE("bytes read per get of a reopened store: " << per_get);
  CHECK(per_get < 16 * 1024);  // a data block, an index and a filter partition at most (4 KB
                               // each); reading the whole index each time: 52 KB
}
