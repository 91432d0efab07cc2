// Deterministic keys and values shared by the multi-process tests and their helper program.
#pragma once

#include <string>

namespace larder::test {

inline std::string helper_key(long i) {
  return "key-" + std::to_string(i % 5000);
}
inline std::string helper_value(long i) {
  return std::string(static_cast<std::size_t>(i % 700) + 1, static_cast<char>('a' + i % 26)) +
         std::to_string(i);
}
inline std::string helper_category(long i) {
  return i % 2 == 0 ? "even" : "odd";
}

inline std::string hammer_key(long id, long i) {
  return "w" + std::to_string(id) + "-" + std::to_string(i % 200);
}
inline std::string hammer_value(long id, long i) {
  return "v" + std::to_string(id) + "-" + std::to_string(i) + "-" +
         std::string(static_cast<std::size_t>(i % 300), 'x');
}

}  // namespace larder::test
