#include "stats/stats_file.hpp"

#include <cereal/archives/json.hpp>
#include <cereal/types/array.hpp>
#include <cereal/types/map.hpp>
#include <cereal/types/string.hpp>

#include <sstream>

#include <fmt/format.h>

#include "util/fs.hpp"

namespace larder::stats {

namespace {

template <class Archive>
void fields(Archive& ar, Snapshot& s, std::uint32_t version) {
  for_each_counter(s, [&](Counter, std::string_view name, std::uint64_t& v) {
    ar(cereal::make_nvp(name.data(), v));  // names are string literals
  });
  ar(cereal::make_nvp("total_entries", s.total_entries),
     cereal::make_nvp("total_size_bytes", s.total_size_bytes),
     cereal::make_nvp("last_updated", s.last_updated),
     cereal::make_nvp("last_zeroed", s.last_zeroed));
  if (version >= 2) ar(cereal::make_nvp("contributors", s.contributors));
}

// The statistics file holds only integers and strings. A number with a fraction or an exponent
// is refused before the JSON parser sees it: Debian's rapidjson 1.1 reaches undefined behaviour
// (clz of zero) on inputs such as "0.0e204" (found by fuzz/fuzz_stats_file).
bool integers_only(std::string_view json) {
  bool in_string = false;
  for (std::size_t i = 0; i < json.size(); ++i) {
    const char c = json[i];
    if (in_string) {
      if (c == '\\')
        ++i;
      else if (c == '"')
        in_string = false;
      continue;
    }
    if (c == '"') {
      in_string = true;
    } else if (c == '.' || c == '+' ||
               ((c == 'e' || c == 'E') && i > 0 && json[i - 1] >= '0' && json[i - 1] <= '9')) {
      return false;
    }
  }
  return true;
}

}  // namespace

std::string to_json(const Snapshot& snapshot) {
  Snapshot s = snapshot;
  std::ostringstream out;
  {
    cereal::JSONOutputArchive ar(out, cereal::JSONOutputArchive::Options::Default());
    std::uint32_t version = kStatsFormat;
    ar(cereal::make_nvp("format_version", version));
    fields(ar, s, version);
  }
  out << '\n';
  return out.str();
}

bool from_json(const std::string& json, Snapshot* out, std::string* error) {
  if (!integers_only(json)) {
    *error = "malformed statistics file: a number that is not an integer";
    return false;
  }
  try {
    std::istringstream in(json);
    cereal::JSONInputArchive ar(in);
    std::uint32_t version = 0;
    ar(cereal::make_nvp("format_version", version));
    if (version < 1 || version > kStatsFormat) {
      *error = fmt::format("unknown statistics format_version {}", version);
      return false;
    }
    Snapshot s;
    fields(ar, s, version);
    *out = s;
    return true;
  } catch (const std::exception& e) {
    *error = fmt::format("malformed statistics file: {}", e.what());
    return false;
  }
}

LoadResult load_stats(const std::filesystem::path& path, std::chrono::system_clock::time_point now,
                      Snapshot* out, std::string* error) {
  *out = {};
  std::error_code ec;
  if (!std::filesystem::exists(path, ec)) return LoadResult::missing;
  std::string content;
  std::string why;
  if (util::read_cache_file(path, kMaxStatsFileBytes, &content, &why) &&
      from_json(content, out, &why))
    return LoadResult::loaded;
  *out = {};
  const auto aside = util::move_aside(path, ".corrupt-", now);
  *error = fmt::format("{}: {}; {}", path.string(), why,
                       aside.empty() ? std::string("could not move it aside")
                                     : fmt::format("kept as {}", aside.string()));
  return LoadResult::corrupt;
}

std::string save_stats(const std::filesystem::path& path, const Snapshot& s) {
  return util::atomic_write_file(path, to_json(s));
}

}  // namespace larder::stats
