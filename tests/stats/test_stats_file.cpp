// The statistics file: format round trip, corrupt files, atomic replacement, persistence rules.
#include <doctest/doctest.h>

#include <cstring>
#include <fstream>
#include <thread>

#include "stats/counter_file.hpp"
#include "stats/stats_file.hpp"
#include "support.hpp"
#include "util/fs.hpp"

using namespace larder;
using namespace larder::test;

namespace {

// The Result-returning functions as the tests read them: success, the value in *out, the
// failure's message in *error.
bool parse(const std::string& json, stats::Snapshot* out, std::string* error) {
  auto r = stats::from_json(json);
  if (!r) {
    *error = r.error();
    return false;
  }
  *out = std::move(*r);
  return true;
}

}  // namespace

TEST_CASE("statistics JSON with NaN, Infinity or a NaN exponent reads as malformed") {
  // "NaNe8{..." made rapidjson assert (an exception escaping from_json: the host terminated).
  for (const std::string& json :
       {std::string("NaNe8{\"v\":$o"), std::string("{\"format_version\": NaNe8}"),
        std::string("{\"format_version\": 3, \"hit_count\": NaN}"),
        std::string("{\"format_version\": 3, \"hit_count\": -Infinity}")}) {
    CAPTURE(json);
    const auto r = stats::from_json(json);
    REQUIRE_FALSE(r);
    CHECK(r.error().find("malformed statistics file") != std::string::npos);
  }
}

TEST_CASE("statistics JSON round-trips every field") {
  stats::Snapshot s;
  s.hit_count = 1;
  s.miss_count = 2;
  s.set_count = 3;
  s.delete_count = 4;
  s.eviction_count = 5;
  s.expiration_count = 6;
  s.invalidation_count = 7;
  s.error_count = 8;
  s.cleanup_count = 9;
  s.total_entries = 10;
  s.total_size_bytes = 11;
  s.last_updated = "2026-11-21T04:57:00.000Z";
  const std::string json = stats::to_json(s);
  CHECK(json.find("\"format_version\": 3") != std::string::npos);
  CHECK(json.find("\"last_zeroed\": null") != std::string::npos);  // never zeroed
  stats::Snapshot back;
  std::string error;
  REQUIRE(parse(json, &back, &error));
  CHECK(back.hit_count == 1);
  CHECK(back.cleanup_count == 9);
  CHECK(back.total_size_bytes == 11);
  CHECK(back.last_updated == s.last_updated);
  CHECK_FALSE(parse("{\"format_version\": 99}", &back, &error));
  CHECK(error.find("format_version 99") != std::string::npos);
  // Format 1 (no contributors) is still read.
  REQUIRE(
      parse("{\"format_version\": 1, \"hit_count\": 4, \"miss_count\": 0, \"set_count\": 0, "
            "\"delete_count\": 0, \"eviction_count\": 0, \"expiration_count\": 0, "
            "\"invalidation_count\": 0, \"error_count\": 0, \"cleanup_count\": 0, "
            "\"total_entries\": 0, \"total_size_bytes\": 0, \"last_updated\": \"\", "
            "\"last_zeroed\": \"\"}",
            &back, &error));
  CHECK(back.hit_count == 4);
  CHECK(back.contributors.empty());
  CHECK_FALSE(parse("not json", &back, &error));
  CHECK_FALSE(parse("{\"format_version\": 1, \"hit_count\": \"x\"}", &back, &error));
}

TEST_CASE("a corrupt statistics file is kept aside and counting starts from zero") {
  Fixture<RocksStore> f;
  std::filesystem::path dir;
  {
    Cache c = f.open();
    dir = c.directory();
    REQUIRE(c.set("k", "v"));
    c.get("k");
  }
  std::ofstream(dir / ".cache_stats.json", std::ios::trunc) << "{ truncated";
  Cache c = f.open();
  const Stats s = c.stats();
  CHECK(s.hit_count == 0);
  CHECK(s.error_count == 1);
  CHECK(s.total_entries == 1);  // totals come from the store, not the file
  CHECK(c.get("k") == "v");
  bool kept = false;
  for (const auto& e : std::filesystem::directory_iterator(dir))
    if (e.path().filename().string().starts_with(".cache_stats.json.corrupt-")) kept = true;
  CHECK(kept);
}

TEST_CASE("statistics are written every 100 operations, on flush and on cleanup") {
  Fixture<RocksStore> f;
  Cache c = f.open();
  const auto path = c.directory() / stats::kStatsFileName;
  auto read = [&] {
    stats::Snapshot s;
    std::string error;
    return stats::load_stats(path, f.clock.now(), &s, &error) == stats::LoadResult::loaded
               ? s
               : stats::Snapshot{};
  };
  for (int i = 0; i < 99; ++i) c.get("nothing");
  c.flush();
  CHECK(read().miss_count == 99);
  REQUIRE(c.set("a", "1"));  // op 100 asks the housekeeper to write
  for (int i = 0; i < 200 && read().set_count == 0; ++i)
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  CHECK(read().set_count == 1);
  CHECK(read().total_entries == 1);
  c.cleanup();
  CHECK(read().cleanup_count == 1);
  CHECK_FALSE(read().last_updated.empty());
}

TEST_CASE("atomic replacement: readers always see a complete file, no temporaries remain") {
  TempDir tmp;
  const auto path = tmp / "stats.json";
  std::atomic<bool> stop{false};
  std::atomic<int> bad{0}, reads{0};
  stats::Snapshot s;
  REQUIRE(stats::save_stats(path, s).ok());
  std::thread reader([&] {
    while (!stop) {
      stats::Snapshot got;
      std::string error;
      if (auto read = util::read_file(path)) {
        if (!parse(*read, &got, &error)) bad++;
        reads++;
      }
    }
  });
  for (int i = 0; i < 300; ++i) {
    s.hit_count = static_cast<std::uint64_t>(i);
    REQUIRE(stats::save_stats(path, s).ok());
  }
  stop = true;
  reader.join();
  CHECK(bad.load() == 0);
  CHECK(reads.load() > 0);
  int files = 0;
  for (const auto& e : std::filesystem::directory_iterator(tmp.path())) {
    (void)e;
    ++files;
  }
  CHECK(files == 1);
}

TEST_CASE("statistics can be disabled") {
  Fixture<RocksStore> f;
  f.config.enable_statistics = false;
  Cache c = f.open();
  REQUIRE(c.set("k", "v"));
  c.flush();
  CHECK_FALSE(std::filesystem::exists(c.directory() / stats::kStatsFileName));
  CHECK(c.stats().set_count == 1);  // still counted in memory
}

TEST_CASE("statistics accumulate over processes that open the directory one after another") {
  Fixture<RocksStore> f;
  for (int round = 1; round <= 3; ++round) {
    Cache c = f.open();
    REQUIRE(c.set("k", "v"));
    CHECK(c.get("k") == "v");
    const Stats s = c.stats();
    CHECK(s.set_count == static_cast<std::uint64_t>(round));
    CHECK(s.hit_count == static_cast<std::uint64_t>(round));
  }
}

TEST_CASE("a statistics file with a non-integer number is malformed (no JSON parser UB)") {
  stats::Snapshot s;
  std::string error;
  REQUIRE(parse(stats::to_json(stats::Snapshot{}), &s, &error));
  // The input fuzz/fuzz_stats_file found: rapidjson 1.1 computed clz(0) on it.
  CHECK_FALSE(parse("0.0e204erc\xa7n\x94.", &s, &error));
  CHECK_FALSE(parse("{\"format_version\": 2.5}", &s, &error));
  CHECK(error.find("not an integer") != std::string::npos);
  // Strings may hold anything.
  stats::Snapshot odd;
  odd.last_updated = "1.5e10 \"quoted\" \\ back";
  REQUIRE(parse(stats::to_json(odd), &s, &error));
  CHECK(s.last_updated == odd.last_updated);
}

TEST_CASE(
    "statistics format 3: contributors by counter name, null last_zeroed, format 2 still read") {
  stats::Snapshot s;
  s.hit_count = 7;
  s.last_updated = "2026-11-21T04:57:00.000Z";
  s.last_zeroed = "2026-11-20T01:00:00.000Z";
  s.contributors["1234-abcd"] = {1, 2, 3, 4, 5, 6, 7, 8, 9};
  const std::string json = stats::to_json(s);
  CHECK(json.find("\"1234-abcd\": {") != std::string::npos);
  CHECK(json.find("\"cleanup_count\": 9") != std::string::npos);
  stats::Snapshot back;
  std::string error;
  REQUIRE_MESSAGE(parse(json, &back, &error), error);
  CHECK(back.hit_count == 7);
  CHECK(back.last_zeroed == s.last_zeroed);
  REQUIRE(back.contributors.count("1234-abcd") == 1);
  CHECK(back.contributors["1234-abcd"] == s.contributors["1234-abcd"]);

  // A counter the file does not name (a file written before the counter was added) reads as 0,
  // where format 2's positional arrays made such a file unreadable.
  REQUIRE_MESSAGE(parse("{\"format_version\": 3, \"hit_count\": 3, \"total_entries\": 1, "
                        "\"total_size_bytes\": 2, \"last_updated\": \"\", \"last_zeroed\": null, "
                        "\"contributors\": {\"p1\": {\"hit_count\": 3}}}",
                        &back, &error),
                  error);
  CHECK(back.hit_count == 3);
  CHECK(back.cleanup_count == 0);
  CHECK(back.last_zeroed.empty());
  CHECK(back.contributors["p1"][stats::index(stats::Counter::hit)] == 3);
  CHECK(back.contributors["p1"][stats::index(stats::Counter::cleanup)] == 0);
  // Wrong types are named.
  CHECK_FALSE(
      parse("{\"format_version\": 3, \"hit_count\": -1, \"total_entries\": 1, "
            "\"total_size_bytes\": 2, \"last_updated\": \"\", \"last_zeroed\": null, "
            "\"contributors\": {}}",
            &back, &error));
  CHECK(error.find("hit_count") != std::string::npos);
  CHECK_FALSE(
      parse("{\"format_version\": 3, \"total_entries\": 1, \"total_size_bytes\": 2, "
            "\"last_updated\": \"\", \"last_zeroed\": null, \"contributors\": []}",
            &back, &error));
  CHECK(error.find("contributors") != std::string::npos);

  // Format 2 as larder wrote it (cereal's layout) is still read.
  const std::string v2 = R"({
    "format_version": 2, "hit_count": 5, "miss_count": 0, "set_count": 0, "delete_count": 0,
    "eviction_count": 0, "expiration_count": 0, "invalidation_count": 0, "error_count": 0,
    "cleanup_count": 0, "total_entries": 2, "total_size_bytes": 0,
    "last_updated": "2026-11-21T04:57:00.000Z", "last_zeroed": "",
    "contributors": [{"key": "1234-abcd", "value": {"value0": 1, "value1": 2, "value2": 3,
      "value3": 4, "value4": 5, "value5": 6, "value6": 7, "value7": 8, "value8": 9}}]})";
  REQUIRE_MESSAGE(parse(v2, &back, &error), error);
  CHECK(back.hit_count == 5);
  CHECK(back.total_entries == 2);
  CHECK(back.contributors["1234-abcd"] == s.contributors["1234-abcd"]);
}

TEST_CASE("a statistics file nested deeper than any real one is malformed, not a stack overflow") {
  stats::Snapshot s;
  std::string error;
  CHECK_FALSE(parse(std::string(1 << 20, '['), &s, &error));
  CHECK(error.find("nested too deeply") != std::string::npos);
  CHECK_FALSE(parse("{\"format_version\": 2, \"x\": [[[[[[[[[1]]]]]]]]]}", &s, &error));
}
