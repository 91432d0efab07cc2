// CacheKey helpers: canonical, escaped key strings from parts, maps and file identities.
#include <sys/stat.h>

#include <fmt/format.h>

#include "larder/larder.hpp"

namespace larder {

namespace {

void append_escaped(std::string& out, std::string_view part, std::string_view specials) {
  for (char c : part) {
    if (c == '\\' || specials.find(c) != std::string_view::npos) out.push_back('\\');
    out.push_back(c);
  }
}

}  // namespace

std::string CacheKey::from_parts(std::initializer_list<std::string_view> parts) {
  std::string out;
  bool first = true;
  for (std::string_view part : parts) {
    if (!first) out.push_back(':');
    first = false;
    append_escaped(out, part, ":");
  }
  return out;
}

std::string CacheKey::from_map(const std::map<std::string, std::string>& fields) {
  std::string out;
  bool first = true;
  for (const auto& [k, v] : fields) {
    if (!first) out.push_back('&');
    first = false;
    append_escaped(out, k, "=&");
    out.push_back('=');
    append_escaped(out, v, "=&");
  }
  return out;
}

std::string CacheKey::from_path(const std::filesystem::path& path) {
  std::error_code ec;
  std::filesystem::path abs = std::filesystem::absolute(path, ec);
  if (ec) abs = path;
  abs = abs.lexically_normal();
  struct stat st {};
  if (::stat(abs.c_str(), &st) != 0) return fmt::format("file:{}:missing", abs.string());
  const long long mtime_ns =
      static_cast<long long>(st.st_mtim.tv_sec) * 1'000'000'000LL + st.st_mtim.tv_nsec;
  return fmt::format("file:{}:{}:{}", abs.string(), static_cast<long long>(st.st_size), mtime_ns);
}

}  // namespace larder
