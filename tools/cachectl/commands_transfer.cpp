// cachectl's export and import commands (commands.hpp).
#include "common.hpp"

namespace cachectl {

using namespace detail;

// ---------------------------------------------------------------------------- export, import

int cmd_export(const Globals& g, const std::string& file) {
  Session s = open_session(g, locate(g, true));
  const std::vector<std::string> keys = s.service->keys(s.scope);
  const bool to_stdout = file == "-";
  const fs::path tmp = to_stdout ? fs::path() : fs::path(file + ".tmp");
  std::ofstream f;
  if (!to_stdout) {
    f.open(tmp, std::ios::binary | std::ios::trunc);
    if (!f) throw Failure{kExitUsage, fmt::format("cannot write {}", tmp.string())};
  }
  std::ostream& o = to_stdout ? std::cout : f;
  std::uint64_t written = 0, skipped = 0;
  Progress progress("exporting", keys.size(), progress_wanted(g) && !to_stdout);
  in_batches(keys, progress, [&](const std::vector<std::string>& batch) {
    for (auto& e : s.service->inspect(batch, true)) {
      if (!e) continue;  // removed meanwhile
      if (e->info.status != larder::EntryStatus::fresh) {
        ++skipped;
        continue;
      }
      rapidjson::StringBuffer buf;
      rapidjson::Writer<rapidjson::StringBuffer> w(buf);
      auto str = [&](std::string_view v) {
        w.String(v.data(), static_cast<rapidjson::SizeType>(v.size()));
      };
      w.StartObject();
      w.Key("key");
      str(s.user_key(e->info.key));
      w.Key("value");
      str(base64_encode(e->value));
      w.Key("category");
      str(e->info.category);
      w.Key("metadata");
      w.StartObject();
      for (const auto& [k, v] : e->info.metadata) {
        w.Key(k.data(), static_cast<rapidjson::SizeType>(k.size()));
        str(v);
      }
      w.EndObject();
      w.Key("ttl");  // seconds left, to the millisecond (at least 1 ms)
      if (auto left = e->info.remaining_ttl_seconds())
        w.Double(std::max(0.001, std::ceil(*left * 1000.0) / 1000.0));
      else
        w.Null();
      w.Key("created_at");
      str(iso(e->info.created_at));
      w.EndObject();
      o.write(buf.GetString(), static_cast<std::streamsize>(buf.GetSize()));
      o.put('\n');
      ++written;
    }
  });
  o.flush();
  if (!to_stdout) {
    f.close();
    std::error_code ec;
    if (!f || (fs::rename(tmp, file, ec), ec)) {
      fs::remove(tmp, ec);
      throw Failure{kExitUsage, fmt::format("cannot write {}", file)};
    }
  }
  if (g.json && !to_stdout) {
    Json j;
    j.w().StartObject();
    j.field("exported", written);
    j.field("skipped_not_fresh", skipped);
    j.w().EndObject();
    out(j.text());
  } else {
    info(g, fmt::format("exported {} entries{}", written,
                        skipped ? fmt::format(" ({} not fresh, left out)", skipped) : ""));
  }
  return kExitOk;
}

namespace {

// One line of an export file, checked; throws Failure (2) naming the line and the problem.
larder::core::SetRequest parse_line(const std::string& where, const std::string& line,
                                    std::int64_t default_ttl) {
  rapidjson::Document d;
  d.Parse(line.data(), line.size());
  auto bad = [&](const std::string& why) { return Failure{kExitUsage, where + ": " + why}; };
  if (d.HasParseError()) throw bad(fmt::format("not JSON (at byte {})", d.GetErrorOffset()));
  if (!d.IsObject()) throw bad("not a JSON object");
  const rapidjson::Document& cd = d;  // const iterators on both sides of == (clang, C++20)
  larder::core::SetRequest q;
  auto text = [&](const char* name, std::string* outv, bool required) {
    auto it = cd.FindMember(name);
    if (it == cd.MemberEnd()) {
      if (required) throw bad(fmt::format("'{}' is missing", name));
      return false;
    }
    if (!it->value.IsString()) throw bad(fmt::format("'{}' is not a string", name));
    outv->assign(it->value.GetString(), it->value.GetStringLength());
    return true;
  };
  text("key", &q.key, true);
  if (!larder::core::valid_user_key(q.key))
    throw bad(fmt::format("'key' must be 1 to {} bytes", larder::kMaxKeyBytes));
  std::string encoded;
  text("value", &encoded, true);
  if (!base64_decode(encoded, &q.value)) throw bad("'value' is not base64");
  if (!text("category", &q.category, false)) q.category = "default";
  if (!larder::core::valid_category(q.category)) throw bad("'category' is not a valid category");
  if (auto m = cd.FindMember("metadata"); m != cd.MemberEnd()) {
    if (!m->value.IsObject()) throw bad("'metadata' is not an object");
    for (auto it = m->value.MemberBegin(); it != m->value.MemberEnd(); ++it) {
      if (!it->value.IsString()) throw bad("'metadata' values must be strings");
      q.metadata[std::string(it->name.GetString(), it->name.GetStringLength())] =
          std::string(it->value.GetString(), it->value.GetStringLength());
    }
  }
  q.ttl_ms = default_ttl;
  if (auto t = cd.FindMember("ttl"); t != cd.MemberEnd()) {
    if (t->value.IsNull())
      q.ttl_ms = 0;
    else if (const auto ms = t->value.IsNumber() && t->value.GetDouble() > 0
                                 ? larder::ttl_from_seconds(t->value.GetDouble())
                                 : std::nullopt)
      q.ttl_ms = ms->count();
    else
      throw bad("'ttl' must be a positive number of seconds (at most 1e12) or null");
  }
  return q;
}

}  // namespace

int cmd_import(const Globals& g, const std::string& file) {
  std::string content;
  if (file == "-") {
    content.assign(std::istreambuf_iterator<char>(std::cin), std::istreambuf_iterator<char>());
  } else if (auto read = larder::util::read_file(file); !read) {
    throw Failure{kExitUsage, fmt::format("cannot read {}: {}", file, read.error())};
  } else {
    content = std::move(*read);
  }
  Session s = open_session(g, locate(g, true));
  s.require_writable("import entries");
  const std::int64_t default_ttl = std::stoll(setting(s, "default_ttl_ms"));
  // Every line is checked before anything is stored: a bad file imports nothing.
  std::vector<larder::core::SetRequest> items;
  std::size_t line_no = 0, pos = 0;
  while (pos < content.size()) {
    std::size_t end = content.find('\n', pos);
    if (end == std::string::npos) end = content.size();
    std::string line = content.substr(pos, end - pos);
    pos = end + 1;
    ++line_no;
    if (!line.empty() && line.back() == '\r') line.pop_back();
    if (line.find_first_not_of(" \t") == std::string::npos) continue;
    items.push_back(
        parse_line(fmt::format("{}:{}", file == "-" ? "stdin" : file, line_no), line, default_ttl));
  }
  std::uint64_t stored = 0;
  std::vector<std::string> refused;
  {
    Progress progress("importing", items.size(), progress_wanted(g));
    for (auto& item : items) item.key = s.key(item.key);
    in_batches(items, progress, [&](const std::vector<larder::core::SetRequest>& batch) {
      const std::vector<bool> ok = s.service->set_many(batch);
      for (std::size_t k = 0; k < batch.size(); ++k) {
        if (k < ok.size() && ok[k])
          ++stored;
        else
          refused.push_back(s.user_key(batch[k].key));
      }
    });
  }
  if (g.json) {
    Json j;
    j.w().StartObject();
    j.field("imported", stored);
    j.key("refused");
    j.w().StartArray();
    for (const auto& k : refused) j.str(k);
    j.w().EndArray();
    j.w().EndObject();
    out(j.text());
  } else {
    info(g, fmt::format("imported {} of {} entries", stored, items.size()));
  }
  if (!refused.empty())
    throw Failure{kExitNotFound,
                  fmt::format("the cache refused {} entries (first: '{}'): too large for "
                              "max_size_bytes, a full ttl-policy cache, or storage errors",
                              refused.size(), refused.front())};
  return kExitOk;
}

}  // namespace cachectl
