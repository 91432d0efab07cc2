// cachectl's entry commands: ls, get, set, touch, incr, rm, invalidate (commands.hpp).
#include "common.hpp"

namespace cachectl {

using namespace detail;

// ---------------------------------------------------------------------------------------- ls

int cmd_ls(const Globals& g, const LsOptions& o) {
  std::optional<larder::EntryStatus> want;
  if (!o.status.empty() && !(want = parse_status(o.status)))
    throw Failure{kExitUsage, fmt::format("--status must be fresh, stale, expired or invalid, "
                                          "not '{}'",
                                          o.status)};
  if (o.sort != "key" && o.sort != "age" && o.sort != "size" && o.sort != "hits")
    throw Failure{kExitUsage,
                  fmt::format("--sort must be key, age, size or hits, not '{}'", o.sort)};
  Session s = open_session(g, locate(g, true));
  std::vector<std::string> keys = o.category.empty()
                                      ? s.service->keys(s.scope)
                                      : s.service->keys_in_category(o.category, s.scope);
  if (!o.pattern.empty())
    std::erase_if(keys, [&](const std::string& k) {
      return !larder::util::glob_match(o.pattern, s.user_key(k));
    });
  std::vector<larder::Entry> entries = inspect_all(s, keys, false, g, "reading");
  for (auto& e : entries) e.info.key = s.user_key(e.info.key);
  if (want) std::erase_if(entries, [&](const larder::Entry& e) { return e.info.status != *want; });
  auto by = [&](auto f) {
    std::stable_sort(
        entries.begin(), entries.end(),
        [&](const larder::Entry& a, const larder::Entry& b) { return f(a.info, b.info); });
  };
  if (o.sort == "age")  // oldest first
    by([](const auto& a, const auto& b) { return a.created_at < b.created_at; });
  else if (o.sort == "size")  // largest first
    by([](const auto& a, const auto& b) { return a.size_bytes > b.size_bytes; });
  else if (o.sort == "hits")  // most accessed first
    by([](const auto& a, const auto& b) { return a.access_count > b.access_count; });
  if (o.limit > 0 && entries.size() > o.limit) entries.resize(o.limit);

  if (g.json) {
    Json j;
    j.w().StartArray();
    for (const auto& e : entries) entry_json(j, e.info);
    j.w().EndArray();
    out(j.text());
    return kExitOk;
  }
  const Style st = style_for(g);
  if (!o.long_format) {
    std::string text;
    for (const auto& e : entries) text += printable_value(e.info.key) + "\n";
    out(text);
    return kExitOk;
  }
  Table t({"STATUS", "SIZE", "AGE", "TTL LEFT", "HITS", "CATEGORY", "KEY"},
          {false, true, true, true, true, false, false});
  for (const auto& e : entries) {
    const auto left = e.info.remaining_ttl_seconds();
    t.add({status_word(st, e.info.status), human_size(e.info.size_bytes),
           human_duration(e.info.age_seconds()), left ? human_duration(*left) : "-",
           std::to_string(e.info.access_count), printable_value(e.info.category),
           printable_value(e.info.key)});
  }
  out(t.render());
  return kExitOk;
}

// --------------------------------------------------------------------------------------- get

int cmd_get(const Globals& g, const GetOptions& o) {
  Session s = open_session(g, locate(g, true));
  auto found = s.service->inspect({s.key(o.key)}, !o.meta);
  if (found[0]) found[0]->info.key = o.key;
  if (!found[0]) throw Failure{kExitNotFound, fmt::format("no entry '{}'", o.key)};
  const larder::Entry& e = *found[0];
  if (o.meta) {
    if (g.json) {
      Json j;
      entry_json(j, e.info);
      out(j.text());
      return kExitOk;
    }
    const Style st = style_for(g);
    const auto left = e.info.remaining_ttl_seconds();
    std::string text;
    text += fmt::format("{:<14}{}\n", "key", printable_value(e.info.key));
    text += fmt::format("{:<14}{}\n", "status", status_word(st, e.info.status));
    text += fmt::format("{:<14}{}\n", "category", printable_value(e.info.category));
    text += fmt::format("{:<14}{} ({} bytes)\n", "size", human_size(e.info.size_bytes),
                        e.info.size_bytes);
    text += fmt::format("{:<14}{} ({} ago)\n", "created", iso(e.info.created_at),
                        human_duration(e.info.age_seconds()));
    text += fmt::format("{:<14}{}\n", "expires",
                        e.info.expires_at ? fmt::format("{} (in {})", iso(*e.info.expires_at),
                                                        human_duration(*left))
                                          : std::string("never"));
    text += fmt::format("{:<14}{}\n", "accesses", e.info.access_count);
    text += fmt::format("{:<14}{}\n", "last access", iso(e.info.last_accessed));
    for (const auto& [k, v] : e.info.metadata)
      text += fmt::format("{:<14}{} = {}\n", "metadata", printable_value(k), printable_value(v));
    out(text);
    return kExitOk;
  }
  if (e.info.status != larder::EntryStatus::fresh)
    throw Failure{kExitNotFound,
                  fmt::format("'{}' is {}: the cache would not return it (see get --meta)", o.key,
                              larder::core::to_string(e.info.status))};
  if (o.raw) {
    out(e.value);
  } else if (g.json) {
    Json j;
    j.w().StartObject();
    j.field("key", e.info.key);
    j.field("value_base64", base64_encode(e.value));
    if (printable_text(e.value)) j.field("value", e.value);
    j.w().EndObject();
    out(j.text());
  } else {
    std::string v = printable_value(e.value);
    if (v.empty() || v.back() != '\n') v += '\n';
    out(v);
  }
  return kExitOk;
}

// --------------------------------------------------------------------------------------- set

namespace {

// --ttl in milliseconds: the cache's default when empty; decimal seconds ("90", "0.25"), whole
// milliseconds ("250ms") or an age ("30m", "2h 30m", "1d").
std::int64_t ttl_ms_of(const Session& s, const std::string& text) {
  if (text.empty()) return std::stoll(setting(s, "default_ttl_ms"));
  if (auto ms = parse_ttl_ms(text)) return *ms;
  throw Failure{
      kExitUsage,
      fmt::format("--ttl '{}' is not a duration (e.g. 90, 0.5, 250ms, 30m, 2h, 1d)", text)};
}

// The request for `o`'s key, category and metadata (checked as the library checks them).
larder::core::SetRequest request_of(const SetOptions& o) {
  if (!larder::core::valid_user_key(o.key))
    throw Failure{kExitUsage, fmt::format("the key must be 1 to {} bytes", larder::kMaxKeyBytes)};
  if (!larder::core::valid_category(o.category))
    throw Failure{kExitUsage, fmt::format("the category must be at most {} bytes without NUL",
                                          larder::kMaxCategoryBytes)};
  larder::core::SetRequest q;
  q.key = o.key;
  q.category = o.category;
  for (const auto& kv : o.meta) {
    const auto eq = kv.find('=');
    if (eq == std::string::npos || eq == 0)
      throw Failure{kExitUsage, fmt::format("--meta '{}' is not KEY=VALUE", kv)};
    q.metadata[kv.substr(0, eq)] = kv.substr(eq + 1);
  }
  return q;
}

}  // namespace

int cmd_set(const Globals& g, const SetOptions& o) {
  if (o.has_value == !o.file.empty())
    throw Failure{kExitUsage, "give the value either as an argument or with --file, not both"};
  larder::core::SetRequest q = request_of(o);
  if (o.has_value) {
    q.value = o.value;
  } else if (o.file == "-") {
    q.value.assign(std::istreambuf_iterator<char>(std::cin), std::istreambuf_iterator<char>());
  } else {
    auto content = larder::util::read_file(o.file);
    if (!content)
      throw Failure{kExitUsage, fmt::format("cannot read --file {}: {}", o.file, content.error())};
    q.value = std::move(*content);
  }
  Session s = open_session(g, locate(g, true));
  s.require_writable("set an entry");
  q.key = s.key(q.key);
  q.ttl_ms = ttl_ms_of(s, o.ttl);
  if (o.if_absent && !s.service->add(q))
    throw Failure{kExitNotFound,
                  fmt::format("'{}' not stored: a fresh entry exists (or the cache refused it: "
                              "see set without --if-absent)",
                              o.key)};
  if (!o.if_absent && !s.service->set(q))
    throw Failure{kExitNotFound,
                  fmt::format("the cache refused '{}' (larger than max_size_bytes {}, a ttl-policy "
                              "cache full of live entries, or a storage error: see status)",
                              o.key, setting(s, "max_size_bytes"))};
  info(g, fmt::format("stored '{}' ({} bytes)", o.key, q.value.size()));
  return kExitOk;
}

int cmd_touch(const Globals& g, const std::string& key, const std::string& ttl) {
  if (!larder::core::valid_user_key(key))
    throw Failure{kExitUsage, fmt::format("the key must be 1 to {} bytes", larder::kMaxKeyBytes)};
  Session s = open_session(g, locate(g, true));
  s.require_writable("touch an entry");
  const std::int64_t ttl_ms = ttl_ms_of(s, ttl);
  if (!s.service->touch(s.key(key), ttl_ms))
    throw Failure{kExitNotFound, fmt::format("no fresh entry '{}'", key)};
  info(g, ttl_ms == 0 ? fmt::format("'{}' never expires now", key)
                      : fmt::format("'{}' expires in {}", key,
                                    human_duration(static_cast<double>(ttl_ms) / 1000.0)));
  return kExitOk;
}

int cmd_incr(const Globals& g, const SetOptions& o, std::int64_t delta) {
  larder::core::SetRequest q = request_of(o);
  Session s = open_session(g, locate(g, true));
  s.require_writable("increment a counter");
  q.key = s.key(q.key);
  q.ttl_ms = ttl_ms_of(s, o.ttl);
  const auto v = s.service->incr(q, delta);
  if (!v)
    throw Failure{kExitNotFound,
                  fmt::format("'{}' not incremented: its value is not a decimal 64-bit integer, "
                              "the sum overflows, or the cache refused the write",
                              o.key)};
  if (g.json) {
    Json j;
    j.w().StartObject();
    j.field("key", o.key);
    j.key("value");
    j.w().Int64(*v);
    j.w().EndObject();
    out(j.text());
  } else {
    out(fmt::format("{}\n", *v));
  }
  return kExitOk;
}

// ---------------------------------------------------------------------------- rm, invalidate

int cmd_rm(const Globals& g, const std::vector<std::string>& keys) {
  Session s = open_session(g, locate(g, true));
  s.require_writable("remove entries");
  std::vector<std::string> missing;
  std::size_t removed = 0;
  for (const auto& k : keys) {
    if (s.service->remove(s.key(k)))
      ++removed;
    else
      missing.push_back(k);
  }
  if (g.json) {
    Json j;
    j.w().StartObject();
    j.field("removed", static_cast<std::uint64_t>(removed));
    j.key("not_found");
    j.w().StartArray();
    for (const auto& k : missing) j.str(k);
    j.w().EndArray();
    j.w().EndObject();
    out(j.text());
  } else {
    info(g, fmt::format("removed {} of {}", removed, keys.size()));
  }
  if (!missing.empty())
    throw Failure{
        kExitNotFound,
        fmt::format("no entry '{}'{}", missing.front(),
                    missing.size() > 1 ? fmt::format(" (and {} more)", missing.size() - 1) : "")};
  return kExitOk;
}

int cmd_invalidate(const Globals& g, const InvalidateOptions& o) {
  const int given = !o.key.empty() + !o.category.empty() + !o.pattern.empty();
  if (given != 1) throw Failure{kExitUsage, "give exactly one of --key, --category and --pattern"};
  Session s = open_session(g, locate(g, true));
  s.require_writable("invalidate entries");
  std::uint64_t n = 0;
  if (!o.key.empty()) {
    if (!s.service->invalidate(s.key(o.key)))
      throw Failure{kExitNotFound, fmt::format("no valid entry '{}'", o.key)};
    n = 1;
  } else if (!o.category.empty()) {
    n = s.service->invalidate_category(o.category, s.scope);
  } else {
    n = s.service->invalidate_pattern(o.pattern, s.scope);
  }
  return print_count(g, "invalidated", n, fmt::format("invalidated {} entries", n));
}

}  // namespace cachectl
