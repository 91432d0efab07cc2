// Every decoder of bytes that came from a file or a socket, fed valid input with each length or
// size field it could hold replaced by a huge declared size: the peak resident memory (VmHWM)
// must not grow by 64 MiB. The sizes are written at every offset (as 8-byte 2^32, 2^40, 2^63
// and as a 4-byte 0xffffffff), so each field of each format is hit without this test knowing
// the layouts. Decoders: store records (entry, access, ghost), the counter file, the statistics
// file, the shared protocol (requests and replies), remote records, traces (oracleGeneral, CSV).
#include <doctest/doctest.h>

#include <cstring>
#include <fstream>
#include <functional>
#include <iterator>
#include <sstream>

#include "engine/records.hpp"
#include "remote/tier.hpp"
#include "shared/protocol.hpp"
#include "stats/counter_file.hpp"
#include "stats/stats_file.hpp"
#include "support.hpp"
#include "trace/trace.hpp"

using namespace larder;
using namespace larder::test;

namespace {

constexpr std::uint64_t kLimit = std::uint64_t{64} << 20;

// Runs `decode` on `valid` with a huge size written at every offset; returns the peak growth.
std::uint64_t sweep(const std::string& valid,
                    const std::function<void(const std::string&)>& decode) {
  return peak_growth_bytes([&] {
    for (std::size_t at = 0; at < valid.size(); ++at) {
      for (const std::uint64_t declared :
           {std::uint64_t{1} << 32, std::uint64_t{1} << 40, std::uint64_t{1} << 63}) {
        std::string bytes = valid;
        std::memcpy(bytes.data() + at, &declared, std::min<std::size_t>(8, bytes.size() - at));
        decode(bytes);
      }
      std::string bytes = valid;
      const std::uint32_t max32 = 0xffffffffu;
      std::memcpy(bytes.data() + at, &max32, std::min<std::size_t>(4, bytes.size() - at));
      decode(bytes);
    }
  });
}

// The same for a text format: each number in it replaced by huge ones.
std::uint64_t sweep_text(const std::string& valid,
                         const std::function<void(const std::string&)>& decode) {
  return peak_growth_bytes([&] {
    for (std::size_t at = 0; at < valid.size(); ++at) {
      if (valid[at] < '0' || valid[at] > '9') continue;
      for (const char* huge :
           {"4294967296", "1099511627776", "9223372036854775808", "99999999999999999999999999"}) {
        std::string bytes = valid;
        bytes.insert(at, huge);
        decode(bytes);
      }
    }
  });
}

}  // namespace

TEST_CASE("untrusted bytes: store records declare sizes they do not hold, allocating nothing") {
  engine::EntryHeader h;
  h.created_ns = 1;
  h.ttl_ms = 60;
  h.category = "category";
  h.metadata = {{"k1", "v1"}, {"k2", "v2"}};
  const std::string entry = engine::encode_entry(h, "the value");
  engine::AccessRecord a;
  a.category = "category";
  a.size = 9;
  const std::string access = engine::encode_access(a);
  const std::string ghost = engine::encode_ghost(engine::GhostRecord{7, 9});
  const std::uint64_t grew = sweep(entry + access + ghost, [&](const std::string& b) {
    engine::EntryHeader out;
    std::size_t offset = 0;
    (void)engine::decode_entry(b, &out, &offset);
    std::uint8_t flags = 0;
    std::int64_t created = 0, ttl = 0;
    (void)engine::decode_entry_times(b, &flags, &created, &ttl);
    engine::AccessRecord ar;
    (void)engine::decode_access(b, &ar);
    (void)engine::decode_access(b.substr(entry.size()), &ar);
    engine::GhostRecord g;
    (void)engine::decode_ghost(b.substr(entry.size() + access.size()), &g);
  });
  CHECK(grew < kLimit);
}

TEST_CASE("untrusted bytes: counter and statistics files") {
  TempDir tmp;
  Config cfg;
  cfg.cache_root = tmp.path();
  cfg.strategy = Strategy::shared;
  std::string counters;
  {
    Cache c = Cache::open(cfg);
    REQUIRE(c.set("k", "v", ttl(60, "cat")));
    c.get("k");
    c.get("missing");
    c.flush();
    // A process's counter file lives while it uses the directory (folded away on close).
    for (const auto& f : std::filesystem::directory_iterator(tmp.path() / stats::kCounterDirName)) {
      std::ifstream in(f.path(), std::ios::binary);
      counters.assign(std::istreambuf_iterator<char>(in), {});
      break;
    }
  }
  std::string json;
  {
    std::ifstream in(tmp.path() / stats::kStatsFileName, std::ios::binary);
    json.assign(std::istreambuf_iterator<char>(in), {});
  }
  REQUIRE(json.size() > 10);
  REQUIRE(counters.size() >= 256);  // a counter file was left to read
  REQUIRE(stats::decode_counter_file(counters));
  CHECK(sweep(counters.substr(0, 256), [&](const std::string& b) {
          std::string whole = counters;
          whole.replace(0, b.size(), b);
          (void)stats::decode_counter_file(whole);
        }) < kLimit);
  REQUIRE(stats::from_json(json));
  CHECK(sweep_text(json, [&](const std::string& b) { (void)stats::from_json(b); }) < kLimit);
}

TEST_CASE("untrusted bytes: the shared protocol's requests and replies") {
  core::SetRequest s;
  s.key = "k";
  s.value = "value";
  s.category = "cat";
  s.metadata = {{"m", "v"}};
  std::string error;
  for (const shared::Request& q : {shared::Request{9, shared::op::GetMany{{"a", "bb", "ccc"}}},
                                   shared::Request{9, shared::op::SetMany{{s, s}}},
                                   shared::Request{9, shared::op::Incr{s, -3}}}) {
    CHECK(sweep(shared::encode(q), [&](const std::string& b) {
            shared::Request out;
            (void)shared::decode(b, &out, &error);
          }) < kLimit);
  }
  shared::Reply r;
  r.id = 9;
  r.result = shared::encode_result(std::vector<std::optional<std::string>>{
      std::string("one"), std::nullopt, std::string("three")});
  CHECK(sweep(shared::encode(r), [&](const std::string& b) {
          shared::Reply out;
          (void)shared::decode(b, &out, &error);
        }) < kLimit);
  // Results are decoded by the type the client expects.
  Entry e;
  e.value = "v";
  e.info.key = "k";
  e.info.metadata = {{"m", "v"}};
  const std::string entries =
      shared::encode_result(std::vector<std::optional<Entry>>{e, std::nullopt, e});
  CHECK(sweep(entries, [&](const std::string& b) {
          std::vector<std::optional<Entry>> out;
          (void)shared::decode_result(b, &out, &error);
        }) < kLimit);
  core::EventBatch batch;
  batch.events = {{Event::Kind::set, "a"}, {Event::Kind::expire, "bb"}};
  batch.next = 7;
  CHECK(sweep(shared::encode_result(batch), [&](const std::string& b) {
          core::EventBatch out;
          (void)shared::decode_result(b, &out, &error);
        }) < kLimit);
}

#ifdef LARDER_REDIS_SERVER  // the remote record codec is built with the Redis tier
TEST_CASE("untrusted bytes: remote records, signed and unsigned") {
  remote::Entry e;
  e.value = "the value";
  e.category = "cat";
  e.metadata = {{"larder.kind", "msgpack"}, {"m", "v"}};
  e.ttl_ms = 60;
  for (const std::string secret : {"", "team secret"}) {
    CAPTURE(secret);
    const std::string record = remote::seal("key", e, secret);
    remote::RecordFault fault{};
    REQUIRE(remote::unseal("key", record, secret, &fault));
    CHECK(sweep(record, [&](const std::string& b) {
            (void)remote::unseal("key", b, secret, &fault);
            (void)remote::decode(b);
          }) < kLimit);
  }
}
#endif

TEST_CASE("untrusted bytes: traces") {
  std::string oracle;
  for (std::uint64_t i = 0; i < 4; ++i) {
    const std::uint32_t t = static_cast<std::uint32_t>(i), size = 100;
    const std::uint64_t id = i;
    const std::int64_t next = -1;
    oracle.append(reinterpret_cast<const char*>(&t), 4);
    oracle.append(reinterpret_cast<const char*>(&id), 8);
    oracle.append(reinterpret_cast<const char*>(&size), 4);
    oracle.append(reinterpret_cast<const char*>(&next), 8);
  }
  REQUIRE(oracle.size() == 96);
  CHECK(sweep(oracle, [](const std::string& b) { (void)trace::read_oracle_general(b); }) < kLimit);
  const std::string csv = "1,key1,100\n2,key2,200\n3,key1,100\n";
  CHECK(sweep_text(csv, [](const std::string& b) {
          std::istringstream in(b);
          (void)trace::read_csv(in);
        }) < kLimit);
}
