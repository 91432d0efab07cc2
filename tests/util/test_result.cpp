// util::Status and util::Result<T> (src/util/result.hpp): success and failure, the message, and
// moving the value out.
#include <doctest/doctest.h>

#include <memory>
#include <string>

#include "util/result.hpp"

using namespace larder;

namespace {
util::Result<int> parse_digit(char c) {
  if (c < '0' || c > '9') return util::fail("'{}' is not a digit", c);
  return c - '0';
}
util::Status check_even(int n) {
  if (n % 2 != 0) return util::fail("{} is odd", n);
  return {};
}
}  // namespace

TEST_CASE("util::Result carries a value or a message naming the failure") {
  auto seven = parse_digit('7');
  REQUIRE(seven.ok());
  CHECK(*seven == 7);
  CHECK(seven.error().empty());
  CHECK(seven.status().ok());
  auto bad = parse_digit('x');
  CHECK_FALSE(bad.ok());
  CHECK_FALSE(static_cast<bool>(bad));
  CHECK(bad.error() == "'x' is not a digit");
  CHECK(bad.status().error() == "'x' is not a digit");

  util::Result<std::unique_ptr<int>> owned = std::make_unique<int>(3);
  REQUIRE(owned);
  std::unique_ptr<int> taken = std::move(owned).value();
  CHECK(*taken == 3);
}

TEST_CASE("util::Status is success by default and a failure keeps its message") {
  CHECK(check_even(4).ok());
  const util::Status odd = check_even(3);
  CHECK_FALSE(odd.ok());
  CHECK(odd.error() == "3 is odd");
  const util::Status empty_message = util::fail(std::string());
  CHECK_FALSE(empty_message.ok());  // a failure is a failure even without a message
}
