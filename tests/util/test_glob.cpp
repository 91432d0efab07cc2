#include <doctest/doctest.h>

#include "util/glob.hpp"

using larder::util::glob_literal_prefix;
using larder::util::glob_match;

TEST_CASE("glob matching") {
  CHECK(glob_match("*", ""));
  CHECK(glob_match("*", "anything"));
  CHECK(glob_match("user:*", "user:1:name"));
  CHECK_FALSE(glob_match("user:*", "users"));
  CHECK(glob_match("*:name", "user:1:name"));
  CHECK(glob_match("a*b*c", "aXXbYYc"));
  CHECK_FALSE(glob_match("a*b*c", "aXXbYY"));
  CHECK(glob_match("a?c", "abc"));
  CHECK_FALSE(glob_match("a?c", "ac"));
  CHECK(glob_match("[abc]x", "bx"));
  CHECK_FALSE(glob_match("[abc]x", "dx"));
  CHECK(glob_match("[a-c]", "b"));
  CHECK(glob_match("[!a-c]", "d"));
  CHECK(glob_match("[^a-c]", "d"));
  CHECK_FALSE(glob_match("[!a-c]", "a"));
  CHECK(glob_match("[]]", "]"));
  CHECK(glob_match("\\*", "*"));
  CHECK_FALSE(glob_match("\\*", "x"));
  CHECK(glob_match("[unterminated", "[unterminated"));
  CHECK(glob_match("exact", "exact"));
  CHECK_FALSE(glob_match("exact", "exactly"));
  CHECK(glob_match("**a", "bba"));
}

TEST_CASE("glob literal prefix") {
  CHECK(glob_literal_prefix("user:*") == "user:");
  CHECK(glob_literal_prefix("a\\*b?c") == "a*b");
  CHECK(glob_literal_prefix("*x") == "");
  CHECK(glob_literal_prefix("plain") == "plain");
  CHECK(glob_literal_prefix("x[ab]") == "x");
}

TEST_CASE("glob_problem names an unterminated class and a trailing backslash") {
  using larder::util::glob_problem;
  CHECK(glob_problem("").empty());
  CHECK(glob_problem("user:*").empty());
  CHECK(glob_problem("a[bc]?").empty());
  CHECK(glob_problem("[]]").empty());
  CHECK(glob_problem("a\\[b").empty());
  CHECK(glob_problem("[a\\]]").empty());
  CHECK(glob_problem("a[bc").find("byte 1") != std::string::npos);
  CHECK(glob_problem("x[!").find("closing ']'") != std::string::npos);
  CHECK(glob_problem("abc\\").find("escapes nothing") != std::string::npos);
}
