#include "output.hpp"

#include <unistd.h>

#include <algorithm>
#include <charconv>
#include <cmath>
#include <cstdio>

#include <fmt/format.h>
#include <cereal/external/base64.hpp>

#include "larder/larder.hpp"

namespace cachectl {

std::string human_size(std::uint64_t bytes) {
  static constexpr const char* kUnits[] = {"B", "KiB", "MiB", "GiB", "TiB", "PiB"};
  if (bytes < 1024) return fmt::format("{} B", bytes);
  double v = static_cast<double>(bytes);
  int unit = 0;
  while (v >= 1024 && unit < 5) {
    v /= 1024;
    ++unit;
  }
  if (v < 10) return fmt::format("{:.1f} {}", v, kUnits[unit]);
  return fmt::format("{:.0f} {}", v, kUnits[unit]);
}

std::string human_duration(double seconds) {
  if (!std::isfinite(seconds)) return "?";
  if (seconds < 0) return "-" + human_duration(-seconds);
  // Below a minute to the millisecond ("250ms", "1.5s"); above, in whole units.
  if (seconds < 60) {
    const auto ms = static_cast<std::uint64_t>(std::llround(seconds * 1000.0));
    if (ms < 1000 && ms != 0) return fmt::format("{}ms", ms);
    if (ms % 1000 == 0) return fmt::format("{}s", ms / 1000);
    std::string text = fmt::format("{}.{:03}", ms / 1000, ms % 1000);
    while (text.back() == '0') text.pop_back();
    return text + "s";
  }
  const auto s = static_cast<std::uint64_t>(seconds);
  // Two units at most; a zero second unit is left out ("1d", "3h 12m").
  auto two = [](std::uint64_t a, const char* ua, std::uint64_t b, const char* ub) {
    return b == 0 ? fmt::format("{}{}", a, ua) : fmt::format("{}{} {}{}", a, ua, b, ub);
  };
  if (s < 60) return fmt::format("{}s", s);
  if (s < 3600) return two(s / 60, "m", s % 60, "s");
  if (s < 86400) return two(s / 3600, "h", s % 3600 / 60, "m");
  return two(s / 86400, "d", s % 86400 / 3600, "h");
}

std::optional<std::uint64_t> parse_size(std::string_view text) {
  std::uint64_t n = 0;
  const auto [ptr, ec] = std::from_chars(text.data(), text.data() + text.size(), n);
  if (ec != std::errc() || ptr == text.data()) return std::nullopt;
  std::string_view unit(ptr, static_cast<std::size_t>(text.data() + text.size() - ptr));
  int shift = 0;
  if (!unit.empty()) {
    const std::string_view units = "KMGT";
    const auto at = units.find(unit[0]);
    if (at == std::string_view::npos || (unit.size() != 1 && unit.substr(1) != "iB"))
      return std::nullopt;
    shift = 10 * static_cast<int>(at + 1);
  }
  if (n > (std::uint64_t{1} << (62 - shift))) return std::nullopt;
  return n << shift;
}

std::optional<std::int64_t> parse_ttl_ms(std::string_view text) {
  if (text.empty()) return std::nullopt;
  const char* end = text.data() + text.size();
  if (text.size() > 2 && text.substr(text.size() - 2) == "ms") {
    std::int64_t ms = 0;
    const auto [ptr, ec] = std::from_chars(text.data(), end - 2, ms);
    if (ec != std::errc() || ptr != end - 2 || ms < 0 || ms > std::int64_t{1'000'000'000'000'000})
      return std::nullopt;
    return ms;
  }
  double seconds = 0;
  if (const auto [ptr, ec] = std::from_chars(text.data(), end, seconds);
      ec == std::errc() && ptr == end) {
    const auto ms = larder::ttl_from_seconds(seconds);
    return ms ? std::optional<std::int64_t>(ms->count()) : std::nullopt;
  }
  const auto age = parse_age(text);
  return age ? std::optional<std::int64_t>(*age * 1000) : std::nullopt;
}

std::optional<std::int64_t> parse_age(std::string_view text) {
  if (text.empty()) return std::nullopt;
  std::int64_t total = 0;
  std::size_t i = 0;
  while (i < text.size()) {
    std::int64_t n = 0;
    const std::size_t start = i;
    while (i < text.size() && text[i] >= '0' && text[i] <= '9') {
      if (n > (std::int64_t{1} << 40)) return std::nullopt;
      n = n * 10 + (text[i] - '0');
      ++i;
    }
    if (i == start) return std::nullopt;
    std::int64_t unit = 1;
    if (i < text.size()) {
      switch (text[i]) {
        case 's':
          unit = 1;
          break;
        case 'm':
          unit = 60;
          break;
        case 'h':
          unit = 3600;
          break;
        case 'd':
          unit = 86400;
          break;
        case 'w':
          unit = 7 * 86400;
          break;
        default:
          return std::nullopt;
      }
      ++i;
    } else if (start != 0) {
      return std::nullopt;  // "1d5": the trailing number needs a unit
    }
    total += n * unit;
  }
  return total;
}

bool printable_text(std::string_view s) {
  std::size_t i = 0;
  while (i < s.size()) {
    const auto c = static_cast<unsigned char>(s[i]);
    if (c < 0x80) {
      if ((c < 0x20 && c != '\t' && c != '\n') || c == 0x7f) return false;
      ++i;
      continue;
    }
    int len = c >= 0xf0 && c < 0xf5 ? 4 : c >= 0xe0 ? 3 : c >= 0xc2 && c < 0xe0 ? 2 : 0;
    if (len == 0 || i + static_cast<std::size_t>(len) > s.size()) return false;
    for (int k = 1; k < len; ++k)
      if ((static_cast<unsigned char>(s[i + static_cast<std::size_t>(k)]) & 0xc0) != 0x80)
        return false;
    i += static_cast<std::size_t>(len);
  }
  return true;
}

std::string base64_encode(std::string_view bytes) {
  return cereal::base64::encode(reinterpret_cast<const unsigned char*>(bytes.data()), bytes.size());
}

bool base64_decode(std::string_view text, std::string* out) {
  if (text.size() % 4 != 0) return false;
  const std::size_t pad = text.ends_with("==") ? 2 : text.ends_with("=") ? 1 : 0;
  for (std::size_t i = 0; i < text.size() - pad; ++i) {
    const char c = text[i];
    if (!((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '+' ||
          c == '/'))
      return false;
  }
  *out = cereal::base64::decode(std::string(text));
  return true;
}

std::string Style::paint(std::string_view text, std::string_view code) const {
  if (!color) return std::string(text);
  return fmt::format("\033[{}m{}\033[0m", code, text);
}

std::string usage_bar(double fraction, int width) {
  fraction = std::clamp(fraction, 0.0, 1.0);
  const int filled = static_cast<int>(std::lround(fraction * width));
  return fmt::format("[{}{}] {:.0f}%", std::string(static_cast<std::size_t>(filled), '#'),
                     std::string(static_cast<std::size_t>(width - filled), '-'), fraction * 100);
}

namespace {

// Display width: bytes outside ANSI colour sequences that start a UTF-8 character.
std::size_t visible_width(std::string_view s) {
  std::size_t w = 0;
  for (std::size_t i = 0; i < s.size(); ++i) {
    if (s[i] == '\033') {
      while (i < s.size() && s[i] != 'm') ++i;
      continue;
    }
    if ((static_cast<unsigned char>(s[i]) & 0xc0) != 0x80) ++w;
  }
  return w;
}

}  // namespace

Table::Table(std::vector<std::string> header, std::vector<bool> right) : right_(std::move(right)) {
  rows_.push_back(std::move(header));
}

void Table::add(std::vector<std::string> row) {
  rows_.push_back(std::move(row));
}

std::string Table::render() const {
  std::vector<std::size_t> width;
  for (const auto& row : rows_) {
    if (width.size() < row.size()) width.resize(row.size(), 0);
    for (std::size_t c = 0; c < row.size(); ++c)
      width[c] = std::max(width[c], visible_width(row[c]));
  }
  std::string out;
  for (const auto& row : rows_) {
    std::string line;
    for (std::size_t c = 0; c < row.size(); ++c) {
      const std::size_t padding = width[c] - visible_width(row[c]);
      const bool right = c < right_.size() && right_[c];
      const bool last = c + 1 == row.size();
      if (right) line.append(padding, ' ');
      line += row[c];
      if (!right && !last) line.append(padding, ' ');
      if (!last) line += "  ";
    }
    out += line + "\n";
  }
  return out;
}

Progress::Progress(std::string label, std::uint64_t total, bool enabled)
    : label_(std::move(label)),
      total_(total),
      enabled_(enabled && ::isatty(STDERR_FILENO) == 1),
      start_(std::chrono::steady_clock::now()) {
  if (!enabled_) return;
  thread_ = std::thread([this] {
    std::unique_lock lock(mu_);
    while (!stop_) {
      draw();
      cv_.wait_for(lock, std::chrono::milliseconds(100));
    }
  });
}

Progress::~Progress() {
  if (!enabled_) return;
  {
    std::lock_guard lock(mu_);
    stop_ = true;
  }
  cv_.notify_all();
  thread_.join();
  std::fputs("\r\033[K", stderr);
  std::fflush(stderr);
}

void Progress::draw() {
  const double elapsed =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start_).count();
  const std::uint64_t done = done_.load(std::memory_order_relaxed);
  std::string line;
  if (total_ > 0)
    line = fmt::format("{} {} {}/{}", label_,
                       usage_bar(static_cast<double>(done) / static_cast<double>(total_), 30), done,
                       total_);
  else
    line = fmt::format("{} ... {:.1f}s", label_, elapsed);
  std::fprintf(stderr, "\r\033[K%s", line.c_str());
  std::fflush(stderr);
}

}  // namespace cachectl
