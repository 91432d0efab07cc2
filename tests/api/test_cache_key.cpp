#include <doctest/doctest.h>

#include <fstream>

#include "support.hpp"

using namespace larder;
using namespace larder::test;

TEST_CASE("CacheKey::from_parts joins and escapes") {
  CHECK(CacheKey::from_parts({"a", "b", "c"}) == "a:b:c");
  CHECK(CacheKey::from_parts({"a:b", "c"}) == "a\\:b:c");
  CHECK(CacheKey::from_parts({"a", "b:c"}) != CacheKey::from_parts({"a:b", "c"}));
  CHECK(CacheKey::from_parts({"back\\slash"}) == "back\\\\slash");
  CHECK(CacheKey::from_parts({}) == "");
}

TEST_CASE("CacheKey::from_map is independent of insertion order") {
  std::map<std::string, std::string> a, b;
  a["x"] = "1";
  a["y"] = "2";
  b["y"] = "2";
  b["x"] = "1";
  CHECK(CacheKey::from_map(a) == CacheKey::from_map(b));
  CHECK(CacheKey::from_map(a) == "x=1&y=2");
  CHECK(CacheKey::from_map({{"k", "a&b=c"}}) == "k=a\\&b\\=c");
  CHECK(CacheKey::from_map({{"a", "b&c=d"}}) != CacheKey::from_map({{"a", "b"}, {"c", "d"}}));
}

TEST_CASE("CacheKey::from_path changes with size and mtime") {
  TempDir tmp;
  const auto file = tmp / "input.txt";
  CHECK(CacheKey::from_path(file).ends_with(":missing"));
  std::ofstream(file) << "one";
  const std::string k1 = CacheKey::from_path(file);
  CHECK(k1.starts_with("file:" + file.string() + ":3:"));
  std::ofstream(file, std::ios::app) << "two";
  const std::string k2 = CacheKey::from_path(file);
  CHECK(k1 != k2);
  std::filesystem::last_write_time(
      file, std::filesystem::last_write_time(file) + std::chrono::seconds(5));
  CHECK(CacheKey::from_path(file) != k2);
  CHECK(CacheKey::from_path(file) == CacheKey::from_path(file));
}
