// cachectl's output helpers: human sizes, ages and durations, colour, aligned tables, a JSON
// writer (rapidjson) for --json, base64 for export/import, and a progress bar that draws on a
// terminal's stderr and stays silent otherwise.
//
// Thread-safety: Progress draws from its own thread while the owner updates it through atomics;
// everything else is used from the main thread only.
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include "util/json.hpp"

namespace cachectl {

// "0 B", "512 B", "1.5 KiB", "3.2 MiB", ...
std::string human_size(std::uint64_t bytes);
// "250ms", "1.5s", "12s", "5m 3s", "3h 12m", "2d 4h" (negative: "-" prefix).
std::string human_duration(double seconds);
// Parses "45s", "90m", "3h", "2d", "1w" and sums like "1d12h" (a bare number is seconds).
// Returns nullopt for anything else.
std::optional<std::int64_t> parse_age(std::string_view text);
// A TTL in milliseconds: decimal seconds ("90", "0.25": as larder::ttl_from_seconds), whole
// milliseconds ("250ms") or an age as parse_age reads it. nullopt when it is none of these.
std::optional<std::int64_t> parse_ttl_ms(std::string_view text);

// Parses a size: a number of bytes, or with the binary suffix K, M, G or T (also KiB, MiB, GiB,
// TiB): "500M" is 500 MiB. Returns nullopt for anything else or a size past 2^62.
std::optional<std::uint64_t> parse_size(std::string_view text);

// True when `s` is valid UTF-8 without control characters other than tab and newline.
bool printable_text(std::string_view s);

std::string base64_encode(std::string_view bytes);
// False when `text` is not canonical base64 (alphabet, padding, length a multiple of 4).
bool base64_decode(std::string_view text, std::string* out);

// ANSI colours when enabled (stdout a terminal, no --no-color, NO_COLOR unset).
struct Style {
  bool color = false;
  std::string paint(std::string_view text, std::string_view code) const;
  std::string green(std::string_view t) const { return paint(t, "32"); }
  std::string yellow(std::string_view t) const { return paint(t, "33"); }
  std::string red(std::string_view t) const { return paint(t, "31"); }
  std::string magenta(std::string_view t) const { return paint(t, "35"); }
  std::string bold(std::string_view t) const { return paint(t, "1"); }
  std::string dim(std::string_view t) const { return paint(t, "2"); }
};

// A usage bar "[#####-----] 48%" (width characters between the brackets).
std::string usage_bar(double fraction, int width = 20);

// Columns padded to their widest cell (colour codes do not count); `right` columns align right.
class Table {
 public:
  explicit Table(std::vector<std::string> header, std::vector<bool> right = {});
  void add(std::vector<std::string> row);
  std::string render() const;

 private:
  std::vector<std::vector<std::string>> rows_;
  std::vector<bool> right_;
};

// Pretty JSON for --json output.
class Json {
 public:
  Json() : w_(buf_) { w_.SetIndent(' ', 2); }
  rapidjson::PrettyWriter<rapidjson::StringBuffer>& w() { return w_; }
  void key(std::string_view k) { w_.Key(k.data(), static_cast<rapidjson::SizeType>(k.size())); }
  void str(std::string_view v) { w_.String(v.data(), static_cast<rapidjson::SizeType>(v.size())); }
  void field(std::string_view k, std::string_view v) {
    key(k);
    str(v);
  }
  void field(std::string_view k, const char* v) { field(k, std::string_view(v)); }
  void field(std::string_view k, std::uint64_t v) {
    key(k);
    w_.Uint64(v);
  }
  void field(std::string_view k, std::int64_t v) {
    key(k);
    w_.Int64(v);
  }
  void field(std::string_view k, double v) {
    key(k);
    w_.Double(v);
  }
  void field(std::string_view k, bool v) {
    key(k);
    w_.Bool(v);
  }
  // The document followed by a newline.
  std::string text() const { return std::string(buf_.GetString(), buf_.GetSize()) + "\n"; }

 private:
  rapidjson::StringBuffer buf_;
  rapidjson::PrettyWriter<rapidjson::StringBuffer> w_;
};

// A progress bar on stderr while an operation runs: with a total it shows the fraction done,
// without one the time elapsed. Draws only when enabled (stderr a terminal and not -q); the line
// is cleared when the Progress ends.
class Progress {
 public:
  Progress(std::string label, std::uint64_t total, bool enabled);
  ~Progress();
  Progress(const Progress&) = delete;
  Progress& operator=(const Progress&) = delete;
  void add(std::uint64_t n) { done_.fetch_add(n, std::memory_order_relaxed); }

 private:
  void draw();
  std::string label_;
  std::uint64_t total_;
  bool enabled_;
  std::atomic<std::uint64_t> done_{0};
  std::chrono::steady_clock::time_point start_;
  std::mutex mu_;
  std::condition_variable cv_;
  bool stop_ = false;
  std::thread thread_;
};

}  // namespace cachectl
