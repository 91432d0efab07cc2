#include "stats/stats_file.hpp"

#include <algorithm>
#include <array>

#include <cereal/archives/json.hpp>
#include <cereal/types/array.hpp>
#include <cereal/types/map.hpp>
#include <cereal/types/string.hpp>

#include <sstream>

#include <fmt/format.h>

#include "util/fs.hpp"
#include "util/json.hpp"

namespace larder::stats {

namespace {

template <class Archive>
void fields(Archive& ar, Snapshot& s, std::uint32_t version) {
  // Formats 1 and 2 were written when there were the first kFormat2Counters counters.
  constexpr std::size_t kFormat2Counters = 9;
  for_each_counter(s, [&](Counter c, std::string_view name, std::uint64_t& v) {
    if (static_cast<std::size_t>(c) < kFormat2Counters)
      ar(cereal::make_nvp(name.data(), v));  // names are string literals
  });
  ar(cereal::make_nvp("total_entries", s.total_entries),
     cereal::make_nvp("total_size_bytes", s.total_size_bytes),
     cereal::make_nvp("last_updated", s.last_updated),
     cereal::make_nvp("last_zeroed", s.last_zeroed));
  if (version >= 2) {
    std::map<std::string, std::array<std::uint64_t, kFormat2Counters>> old;
    ar(cereal::make_nvp("contributors", old));
    for (const auto& [id, values] : old) {
      CounterValues v{};
      std::copy(values.begin(), values.end(), v.begin());
      s.contributors[id] = v;
    }
  }
}

// The statistics file holds only integers and strings, nested a few levels deep. A number with a
// fraction or an exponent is refused before the JSON parser sees it: Debian's rapidjson 1.1
// reaches undefined behaviour (clz of zero) on inputs such as "0.0e204" (found by
// fuzz/fuzz_stats_file). So is nesting deeper than kMaxDepth: the parsers recurse per level, and
// a planted file of a million '[' must not exhaust the stack. Returns what is wrong, or nullptr.
constexpr int kMaxDepth = 8;
const char* unexpected_shape(std::string_view json) {
  bool in_string = false;
  int depth = 0;
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
    } else if (c == '{' || c == '[') {
      if (++depth > kMaxDepth) return "nested too deeply";
    } else if (c == '}' || c == ']') {
      --depth;
    } else if (c == '.' || c == '+' ||
               ((c == 'e' || c == 'E') && i > 0 && json[i - 1] >= '0' && json[i - 1] <= '9')) {
      return "a number that is not an integer";
    }
  }
  return nullptr;
}

}  // namespace

// Format 3: written with rapidjson (cereal cannot write null nor objects keyed by counter name).
std::string to_json(const Snapshot& s) {
  rapidjson::StringBuffer buffer;
  rapidjson::PrettyWriter<rapidjson::StringBuffer> w(buffer);
  auto counter_object = [&w](const CounterValues& v) {
    w.StartObject();
    for (std::size_t i = 0; i < kCounterCount; ++i) {
      w.Key(kCounterInfo[i].name.data(),
            static_cast<rapidjson::SizeType>(kCounterInfo[i].name.size()));
      w.Uint64(v[i]);
    }
    w.EndObject();
  };
  auto string = [&w](const std::string& text) {
    w.String(text.data(), static_cast<rapidjson::SizeType>(text.size()));
  };
  w.StartObject();
  w.Key("format_version");
  w.Uint(kStatsFormat);
  for_each_counter(s, [&](Counter, std::string_view name, const std::uint64_t& v) {
    w.Key(name.data(), static_cast<rapidjson::SizeType>(name.size()));
    w.Uint64(v);
  });
  w.Key("total_entries");
  w.Uint64(s.total_entries);
  w.Key("total_size_bytes");
  w.Uint64(s.total_size_bytes);
  w.Key("last_updated");
  string(s.last_updated);
  w.Key("last_zeroed");
  if (s.last_zeroed.empty())
    w.Null();
  else
    string(s.last_zeroed);
  w.Key("contributors");
  w.StartObject();
  for (const auto& [id, values] : s.contributors) {
    string(id);
    counter_object(values);
  }
  w.EndObject();
  w.EndObject();
  return std::string(buffer.GetString(), buffer.GetSize()) + "\n";
}

namespace {

// Formats 1 and 2 (cereal's layout: contributors as an array of {"key", "value": {"value0"...}}).
util::Result<Snapshot> from_cereal_json(const std::string& json, std::uint32_t version) {
  try {
    std::istringstream in(json);
    cereal::JSONInputArchive ar(in);
    std::uint32_t ignored = 0;
    ar(cereal::make_nvp("format_version", ignored));
    Snapshot s;
    fields(ar, s, version);
    return s;
  } catch (const std::exception& e) {
    return util::fail("malformed statistics file: {}", e.what());
  }
}

// Counter fields of `object` by name into `values`. A counter the file does not name reads as
// 0 (a file written before that counter existed); a field that is not an unsigned integer is an
// error naming it.
util::Status read_counters(const rapidjson::Value& object, CounterValues* values) {
  for (std::size_t i = 0; i < kCounterCount; ++i) {
    const std::string name(kCounterInfo[i].name);
    (*values)[i] = 0;
    const auto it = object.FindMember(name.c_str());
    if (it == object.MemberEnd()) continue;
    if (!it->value.IsUint64())
      return util::fail("malformed statistics file: {} is not an unsigned integer", name);
    (*values)[i] = it->value.GetUint64();
  }
  return {};
}

util::Result<Snapshot> from_json_v3(const rapidjson::Document& d) {
  Snapshot s;
  CounterValues totals{};
  if (auto read = read_counters(d, &totals); !read) return util::fail(read.error());
  Counters::assign(totals, s);
  for (auto [name, field] : {std::pair{"total_entries", &s.total_entries},
                             std::pair{"total_size_bytes", &s.total_size_bytes}}) {
    const auto it = d.FindMember(name);
    if (it == d.MemberEnd() || !it->value.IsUint64())
      return util::fail("malformed statistics file: {} is missing or not an unsigned integer",
                        name);
    *field = it->value.GetUint64();
  }
  for (auto [name, field, nullable] : {std::tuple{"last_updated", &s.last_updated, false},
                                       std::tuple{"last_zeroed", &s.last_zeroed, true}}) {
    const auto it = d.FindMember(name);
    if (it == d.MemberEnd() || !(it->value.IsString() || (nullable && it->value.IsNull())))
      return util::fail("malformed statistics file: {} is missing or not a string", name);
    if (it->value.IsString()) field->assign(it->value.GetString(), it->value.GetStringLength());
  }
  const auto c = d.FindMember("contributors");
  if (c == d.MemberEnd() || !c->value.IsObject())
    return util::fail("malformed statistics file: contributors is missing or not an object");
  for (const auto& m : c->value.GetObject()) {
    if (!m.value.IsObject())
      return util::fail("malformed statistics file: a contributor is not an object");
    CounterValues v{};
    if (auto read = read_counters(m.value, &v); !read) return util::fail(read.error());
    s.contributors[std::string(m.name.GetString(), m.name.GetStringLength())] = v;
  }
  return s;
}

}  // namespace

util::Result<Snapshot> from_json(const std::string& json) {
  if (const char* why = unexpected_shape(json))
    return util::fail("malformed statistics file: {}", why);
  rapidjson::Document d;
  try {
    // Not cereal's default flags: the file never holds NaN or Infinity, and reading "NaN" with
    // an exponent ("NaNe8", found by fuzz_stats_file) trips an assertion, which throws here.
    d.Parse<rapidjson::kParseIterativeFlag>(json.data(), json.size());
  } catch (const std::exception& e) {
    return util::fail("malformed statistics file: {}", e.what());
  }
  if (d.HasParseError() || !d.IsObject())
    return util::fail("malformed statistics file: not a JSON object");
  const rapidjson::Document& doc = d;  // const iterators on both sides of ==
  const auto v = doc.FindMember("format_version");
  if (v == doc.MemberEnd() || !v->value.IsUint())
    return util::fail(
        "malformed statistics file: format_version is missing or not an unsigned integer");
  const std::uint32_t version = v->value.GetUint();
  if (version < 1 || version > kStatsFormat)
    return util::fail("unknown statistics format_version {}", version);
  return version >= 3 ? from_json_v3(d) : from_cereal_json(json, version);
}

LoadResult load_stats(const std::filesystem::path& path, std::chrono::system_clock::time_point now,
                      Snapshot* out, std::string* error) {
  *out = {};
  std::error_code ec;
  if (!std::filesystem::exists(path, ec)) return LoadResult::missing;
  std::string why;
  if (auto content = util::read_cache_file(path, kMaxStatsFileBytes); !content) {
    why = content.error();
  } else if (auto snapshot = from_json(*content); !snapshot) {
    why = snapshot.error();
  } else {
    *out = std::move(*snapshot);
    return LoadResult::loaded;
  }
  const auto aside = util::move_aside(path, ".corrupt-", now);
  *error = fmt::format("{}: {}; {}", path.string(), why,
                       aside.empty() ? std::string("could not move it aside")
                                     : fmt::format("kept as {}", aside.string()));
  return LoadResult::corrupt;
}

util::Status save_stats(const std::filesystem::path& path, const Snapshot& s) {
  return util::atomic_write_file(path, to_json(s));
}

}  // namespace larder::stats
