// Shell-style glob matching on byte strings, for invalidate_pattern and cachectl.
// '*' any run of bytes (including none), '?' one byte, '[abc]' / '[a-z]' / '[!a]' / '[^a]' a class,
// '\x' the byte x literally. An unterminated '[' matches itself. Thread-safety: pure functions.
#pragma once

#include <string>
#include <string_view>

namespace larder::util {

// True if `text` matches `pattern` as a whole.
bool glob_match(std::string_view pattern, std::string_view text);
// What makes `pattern` ill-formed for a caller that wants strict input (cachectl serve): a '['
// class without its closing ']', or a '\' that ends the pattern. "" when it is well-formed
// (glob_match itself accepts both, taking them literally).
std::string glob_problem(std::string_view pattern);
// The literal bytes every match must start with (everything before the first special byte).
std::string glob_literal_prefix(std::string_view pattern);

}  // namespace larder::util
