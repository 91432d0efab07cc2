#include "util/glob.hpp"

#include <cstddef>
#include <string>

namespace larder::util {

namespace {

// Matches the class starting at pattern[p] == '[' against byte c. Sets `end` to the index after
// the closing ']'. Returns false in *valid when the class is not terminated.
bool match_class(std::string_view pattern, std::size_t p, unsigned char c, std::size_t& end,
                 bool& valid) {
  std::size_t i = p + 1;
  bool negate = false;
  if (i < pattern.size() && (pattern[i] == '!' || pattern[i] == '^')) {
    negate = true;
    ++i;
  }
  bool matched = false;
  bool first = true;
  while (i < pattern.size() && (pattern[i] != ']' || first)) {
    first = false;
    unsigned char lo = static_cast<unsigned char>(pattern[i]);
    if (lo == '\\' && i + 1 < pattern.size()) lo = static_cast<unsigned char>(pattern[++i]);
    unsigned char hi = lo;
    if (i + 2 < pattern.size() && pattern[i + 1] == '-' && pattern[i + 2] != ']') {
      hi = static_cast<unsigned char>(pattern[i + 2]);
      i += 2;
      if (hi == '\\' && i + 1 < pattern.size()) hi = static_cast<unsigned char>(pattern[++i]);
    }
    if (lo <= c && c <= hi) matched = true;
    ++i;
  }
  if (i >= pattern.size()) {
    valid = false;
    return false;
  }
  valid = true;
  end = i + 1;
  return matched != negate;
}

}  // namespace

bool glob_match(std::string_view pattern, std::string_view text) {
  std::size_t p = 0, t = 0;
  // Backtracking point for the most recent '*': pattern index after it and text index tried.
  std::size_t star_p = std::string_view::npos, star_t = 0;
  while (t < text.size()) {
    bool advanced = false;
    if (p < pattern.size()) {
      const char pc = pattern[p];
      if (pc == '*') {
        star_p = ++p;
        star_t = t;
        continue;
      }
      if (pc == '?') {
        ++p;
        ++t;
        advanced = true;
      } else if (pc == '[') {
        std::size_t end = 0;
        bool valid = false;
        const bool m = match_class(pattern, p, static_cast<unsigned char>(text[t]), end, valid);
        if (!valid) {
          if (text[t] == '[') {
            ++p;
            ++t;
            advanced = true;
          }
        } else if (m) {
          p = end;
          ++t;
          advanced = true;
        }
      } else {
        char lit = pc;
        std::size_t next = p + 1;
        if (pc == '\\' && p + 1 < pattern.size()) {
          lit = pattern[p + 1];
          next = p + 2;
        }
        if (lit == text[t]) {
          p = next;
          ++t;
          advanced = true;
        }
      }
    }
    if (advanced) continue;
    if (star_p == std::string_view::npos) return false;
    p = star_p;
    t = ++star_t;
  }
  while (p < pattern.size() && pattern[p] == '*') ++p;
  return p == pattern.size();
}

std::string glob_literal_prefix(std::string_view pattern) {
  std::string prefix;
  for (std::size_t i = 0; i < pattern.size(); ++i) {
    const char c = pattern[i];
    if (c == '*' || c == '?' || c == '[') break;
    if (c == '\\') {
      if (i + 1 >= pattern.size()) break;
      prefix.push_back(pattern[++i]);
      continue;
    }
    prefix.push_back(c);
  }
  return prefix;
}

std::string glob_problem(std::string_view pattern) {
  for (std::size_t p = 0; p < pattern.size(); ++p) {
    if (pattern[p] == '\\') {
      if (p + 1 == pattern.size()) return "the pattern ends with a '\\' that escapes nothing";
      ++p;
    } else if (pattern[p] == '[') {
      std::size_t end = 0;
      bool valid = false;
      match_class(pattern, p, 0, end, valid);
      if (!valid)
        return "the '[' at byte " + std::to_string(p) + " opens a class without a closing ']'";
      p = end - 1;
    }
  }
  return {};
}

}  // namespace larder::util
