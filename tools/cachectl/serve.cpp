// `cachectl serve`: the cache over HTTP (docs/cachectl.md, "serve"). The routes, their checks
// (percent-encoding, method, token, size, input) and what each does with the cache through the
// public Cache API; serve_http.hpp bounds the connections, serve_access.hpp the tokens.
#include <signal.h>
#include <sys/stat.h>

#include <charconv>
#include <cmath>
#include <thread>

#include <httplib.h>

#include "api/access.hpp"
#include "common.hpp"
#include "serve_access.hpp"
#include "serve_http.hpp"

namespace cachectl {

using namespace detail;

namespace serve {

std::string_view dashboard_html();  // serve_dashboard.cpp

namespace {

constexpr std::uint64_t kMaxBodyBytes = 64 * larder::kMiB;  // when the store has no byte limit
constexpr std::uint64_t kDefaultListLimit = 1000;
constexpr std::uint64_t kMaxListLimit = 100'000;

enum class Kind : std::uint8_t {
  dashboard,
  metrics,
  stats,
  entries,
  entry,
  invalidate,
  clear,
  cleanup
};

struct Route {
  Kind kind = Kind::dashboard;
  std::string ns;  // "" : the unnamed namespace (or a path that is not under /api/v1/ns/...)
  std::string key;
};

// An error the request gets: its status and the message of {"error": ...}.
struct HttpError {
  int status;
  std::string message;
};

int hex(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

// Strict percent-decoding: every '%' is followed by two hex digits. `plus_is_space` for query
// strings (form encoding); in paths '+' is itself.
std::string decode(std::string_view s, bool plus_is_space, std::string_view what) {
  std::string out;
  out.reserve(s.size());
  for (std::size_t i = 0; i < s.size(); ++i) {
    if (s[i] == '%') {
      const int hi = i + 2 < s.size() + 0 ? hex(s[i + 1]) : -1;
      const int lo = i + 2 < s.size() + 0 ? hex(s[i + 2]) : -1;
      if (i + 2 >= s.size() || hi < 0 || lo < 0)
        throw HttpError{400, fmt::format("bad percent-encoding in the {} at byte {}", what, i)};
      out.push_back(static_cast<char>(hi * 16 + lo));
      i += 2;
    } else if (plus_is_space && s[i] == '+') {
      out.push_back(' ');
    } else {
      out.push_back(s[i]);
    }
  }
  return out;
}

std::map<std::string, std::string> parse_query(std::string_view q) {
  std::map<std::string, std::string> out;
  while (!q.empty()) {
    const auto amp = q.find('&');
    const std::string_view part = q.substr(0, amp);
    q = amp == std::string_view::npos ? std::string_view() : q.substr(amp + 1);
    if (part.empty()) continue;
    const auto eq = part.find('=');
    out[decode(part.substr(0, eq), true, "query")] =
        eq == std::string_view::npos ? std::string() : decode(part.substr(eq + 1), true, "query");
  }
  return out;
}

// The route of a request path (still percent-encoded); nullopt when there is none.
std::optional<Route> route_of(std::string_view path) {
  Route r;
  if (path == "/" || path == "/index.html") return r;
  if (path == "/metrics") {
    r.kind = Kind::metrics;
    return r;
  }
  constexpr std::string_view kApi = "/api/v1/";
  if (!path.starts_with(kApi)) return std::nullopt;
  std::string_view rest = path.substr(kApi.size());
  bool in_ns = false;
  if (rest.starts_with("ns/")) {
    rest.remove_prefix(3);
    const auto slash = rest.find('/');
    if (slash == std::string_view::npos) return std::nullopt;
    r.ns = decode(rest.substr(0, slash), false, "path");
    if (r.ns.empty() || r.ns.size() > larder::kMaxNamespaceBytes ||
        r.ns.find('\0') != std::string::npos)
      throw HttpError{400, fmt::format("a namespace name is 1 to {} bytes without NUL",
                                       larder::kMaxNamespaceBytes)};
    rest.remove_prefix(slash + 1);
    in_ns = true;
  }
  if (rest == "stats")
    r.kind = Kind::stats;
  else if (rest == "entries")
    r.kind = Kind::entries;
  else if (rest.starts_with("entries/")) {
    r.kind = Kind::entry;
    r.key = decode(rest.substr(8), false, "path");
  } else if (rest == "invalidate")
    r.kind = Kind::invalidate;
  else if (rest == "clear")
    r.kind = Kind::clear;
  else if (rest == "cleanup" && !in_ns)
    r.kind = Kind::cleanup;
  else
    return std::nullopt;
  return r;
}

// The methods a route answers (HEAD goes with GET), for 405's Allow header.
std::string_view allowed(Kind k) {
  switch (k) {
    case Kind::entry:
      return "GET, HEAD, PUT, DELETE";
    case Kind::invalidate:
    case Kind::clear:
    case Kind::cleanup:
      return "POST";
    default:
      return "GET, HEAD";
  }
}

bool method_ok(Kind k, std::string_view m) {
  const bool get = m == "GET" || m == "HEAD";
  switch (k) {
    case Kind::entry:
      return get || m == "PUT" || m == "DELETE";
    case Kind::invalidate:
    case Kind::clear:
    case Kind::cleanup:
      return m == "POST";
    default:
      return get;
  }
}

// A Cache handle on a route's namespace: the served one itself, or a namespace handle of it.
class Handle {
 public:
  Handle(larder::Cache& root, const std::string& ns) {
    if (!ns.empty()) owned_.emplace(root.ns(ns));
    h_ = owned_ ? &*owned_ : &root;
  }
  larder::Cache* operator->() { return h_; }

 private:
  std::optional<larder::Cache> owned_;
  larder::Cache* h_;
};

serve::Action action_of(Kind k, std::string_view method) {
  if (method == "GET" || method == "HEAD") return Action::read;
  if (k == Kind::entry) return Action::write;
  if (k == Kind::invalidate) return Action::invalidate;
  return Action::admin;
}

std::string error_json(std::string_view message) {
  Json j;
  j.w().StartObject();
  j.field("error", message);
  j.w().EndObject();
  return j.text();
}

std::string count_json(std::string_view name, std::uint64_t n) {
  Json j;
  j.w().StartObject();
  j.field(name, n);
  j.w().EndObject();
  return j.text();
}

// A request's JSON body as an object of strings; an empty body is an empty object.
std::map<std::string, std::string> body_fields(const std::string& body) {
  std::map<std::string, std::string> out;
  if (body.find_first_not_of(" \t\r\n") == std::string::npos) return out;
  rapidjson::Document d;
  d.Parse(body.data(), body.size());
  if (d.HasParseError() || !d.IsObject()) throw HttpError{400, "the body is not a JSON object"};
  // Indexed, not a range-for: rapidjson's iterator != is ambiguous under C++20 (clang warns).
  for (rapidjson::SizeType i = 0; i < d.MemberCount(); ++i) {
    const auto& m = *(d.MemberBegin() + static_cast<std::ptrdiff_t>(i));
    if (!m.value.IsString())
      throw HttpError{400, fmt::format("\"{}\" must be a string", m.name.GetString())};
    out[std::string(m.name.GetString(), m.name.GetStringLength())] =
        std::string(m.value.GetString(), m.value.GetStringLength());
  }
  return out;
}

class Api {
 public:
  Api(Session session, std::optional<Tokens> tokens, bool verbose)
      : session_(std::move(session)),
        cache_(larder::Cache::Access::wrap(
            session_.service, session_.resolved,
            std::chrono::milliseconds(std::stoll(setting(session_, "default_ttl_ms"))))),
        tokens_(std::move(tokens)),
        verbose_(verbose) {
    const std::uint64_t limit = setting_u64(session_, "max_size_bytes");
    max_body_ = limit == 0 ? kMaxBodyBytes : std::min(limit, kMaxBodyBytes);
  }

  std::uint64_t max_body() const { return max_body_; }

  // Answers the request, or returns false when it needs its body read first (PUT, POST).
  bool respond(const httplib::Request& req, httplib::Response& res, bool body_read) {
    const auto start = std::chrono::steady_clock::now();
    bool done = true;
    try {
      done = dispatch(req, res, body_read);
    } catch (const HttpError& e) {
      fail(res, e.status, e.message);
    } catch (const std::exception& e) {
      fail(res, 500, fmt::format("internal error: {}", e.what()));
    }
    if (done && !body_read && has_body(req)) {  // its body is unread: it must not be parsed
      close_after_response();                   // as the next request
      res.set_header("Connection", "close");
    }
    if (done && verbose_) {
      const auto ms =
          std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - start)
              .count();
      std::fprintf(stderr, "cachectl serve: %s %s %d %.1fms\n", req.method.c_str(),
                   printable_value(req.target.substr(0, req.target.find('?'))).c_str(), res.status,
                   ms);
    }
    return done;
  }

 private:
  static bool has_body(const httplib::Request& req) {
    if (req.has_header("Transfer-Encoding")) return true;
    const std::string length = req.get_header_value("Content-Length");
    return !length.empty() && length != "0";
  }

  static void fail(httplib::Response& res, int status, std::string_view message) {
    res.status = status;
    res.set_content(error_json(message), "application/json");
  }

  bool dispatch(const httplib::Request& req, httplib::Response& res, bool body_read) {
    const std::string_view target = req.target;
    const auto q = target.find('?');
    const std::string_view raw_path = target.substr(0, q);
    const auto route = route_of(raw_path);
    if (!route) throw HttpError{404, "no such path"};
    const auto query = q == std::string_view::npos ? std::map<std::string, std::string>{}
                                                   : parse_query(target.substr(q + 1));
    const std::string& method = req.method;
    if (!method_ok(route->kind, method)) {
      const std::string_view methods = allowed(route->kind);
      res.set_header("Allow", std::string(methods));
      throw HttpError{405, fmt::format("{} is not allowed here (allowed: {})", method, methods)};
    }
    if (route->kind == Kind::dashboard) {
      res.set_content(std::string(dashboard_html()), "text/html; charset=utf-8");
      res.set_header("Cache-Control", "no-store");
      res.set_header("Content-Security-Policy",
                     "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; "
                     "connect-src 'self'; img-src data:");
      return true;
    }
    authorize(req, res, *route, action_of(route->kind, method));
    if (!body_read && (method == "PUT" || method == "POST")) {
      const std::string length = req.get_header_value("Content-Length");
      std::uint64_t n = 0;
      if (!length.empty()) {
        const auto [p, ec] = std::from_chars(length.data(), length.data() + length.size(), n);
        if (ec != std::errc() || p != length.data() + length.size())
          throw HttpError{400, "Content-Length is not a number"};
      }
      const std::uint64_t limit = route->kind == Kind::entry ? max_body_ : 64 * 1024;
      if (n > limit)
        throw HttpError{413,
                        fmt::format("the body is {} bytes; at most {} are taken here", n, limit)};
      return false;  // read the body, then come back
    }
    switch (route->kind) {
      case Kind::metrics:
        res.set_content(prometheus_text(session_, cache_.stats()),
                        "text/plain; version=0.0.4; charset=utf-8");
        return true;
      case Kind::stats: {
        Handle h(cache_, route->ns);
        res.set_content(stats_json(session_, h->stats()), "application/json");
        return true;
      }
      case Kind::entries:
        list(*route, query, res);
        return true;
      case Kind::entry:
        entry(*route, method, query, req.body, res);
        return true;
      case Kind::invalidate:
        invalidate(*route, body_fields(req.body), res);
        return true;
      case Kind::clear:
        clear(*route, body_fields(req.body), res);
        return true;
      case Kind::cleanup:
        res.set_content(count_json("removed", cache_.cleanup()), "application/json");
        return true;
      case Kind::dashboard:
        break;
    }
    return true;
  }

  void authorize(const httplib::Request& req, httplib::Response& res, const Route& route,
                 Action action) const {
    if (!tokens_) return;  // loopback or a Unix socket, no tokens: every request is admin
    const auto grant = tokens_->check(req.get_header_value("Authorization"));
    if (!grant) {
      res.set_header("WWW-Authenticate", "Bearer realm=\"larder\"");
      throw HttpError{401, "a valid token is needed (Authorization: Bearer TOKEN)"};
    }
    const bool whole_store = route.kind == Kind::metrics || route.kind == Kind::cleanup;
    if (whole_store && !grant->ns.empty())
      throw HttpError{403, "this token is confined to a namespace"};
    if (!may(*grant, action, route.ns))
      throw HttpError{403, grant->ns.empty() || grant->ns == route.ns
                               ? "this token's role does not allow that"
                               : "this token is confined to another namespace"};
  }

  void list(const Route& r, const std::map<std::string, std::string>& query,
            httplib::Response& res) {
    auto param = [&](const char* name) {
      auto it = query.find(name);
      return it == query.end() ? std::string() : it->second;
    };
    std::uint64_t limit = kDefaultListLimit;
    if (const std::string l = param("limit"); !l.empty()) {
      const auto [p, ec] = std::from_chars(l.data(), l.data() + l.size(), limit);
      if (ec != std::errc() || p != l.data() + l.size() || limit == 0 || limit > kMaxListLimit)
        throw HttpError{400, fmt::format("limit must be 1 to {}", kMaxListLimit)};
    }
    const std::string pattern = param("pattern"), category = param("category"),
                      sort = param("sort").empty() ? "key" : param("sort");
    if (auto why = larder::util::glob_problem(pattern); !why.empty())
      throw HttpError{400, fmt::format("bad pattern: {}", why)};
    if (sort != "key" && sort != "size" && sort != "hits" && sort != "age")
      throw HttpError{400, "sort must be key, size, hits or age"};
    Handle h(cache_, r.ns);
    std::vector<std::string> keys = category.empty() ? h->keys() : h->keys_in_category(category);
    if (!pattern.empty())
      std::erase_if(keys,
                    [&](const std::string& k) { return !larder::util::glob_match(pattern, k); });
    bool truncated = false;
    if (sort == "key" && keys.size() > limit) {
      keys.resize(limit);
      truncated = true;
    }
    const std::string scope = r.ns.empty() ? std::string() : larder::core::ns_prefix(r.ns);
    std::vector<larder::EntryInfo> infos;
    for (std::size_t i = 0; i < keys.size(); i += kBatch) {
      std::vector<std::string> batch;
      for (std::size_t k = i; k < std::min(keys.size(), i + kBatch); ++k)
        batch.push_back(larder::core::stored_key(scope, keys[k]));
      auto found = session_.service->inspect(batch, false);
      for (std::size_t k = 0; k < found.size(); ++k)
        if (found[k]) {
          found[k]->info.key = keys[i + k];
          infos.push_back(std::move(found[k]->info));
        }
    }
    auto by = [&](auto f) { std::stable_sort(infos.begin(), infos.end(), f); };
    if (sort == "size")
      by([](const auto& a, const auto& b) { return a.size_bytes > b.size_bytes; });
    else if (sort == "hits")
      by([](const auto& a, const auto& b) { return a.access_count > b.access_count; });
    else if (sort == "age")
      by([](const auto& a, const auto& b) { return a.created_at < b.created_at; });
    if (infos.size() > limit) {
      infos.resize(limit);
      truncated = true;
    }
    Json j;
    j.w().StartObject();
    j.key("entries");
    j.w().StartArray();
    for (const auto& e : infos) entry_json(j, e);
    j.w().EndArray();
    j.field("truncated", truncated);
    j.w().EndObject();
    res.set_content(j.text(), "application/json");
  }

  static void check_key(const std::string& key) {
    if (!larder::core::valid_user_key(key))
      throw HttpError{400, fmt::format("a key is 1 to {} bytes (this one is {})",
                                       larder::kMaxKeyBytes, key.size())};
  }

  void entry(const Route& r, const std::string& method,
             const std::map<std::string, std::string>& query, const std::string& body,
             httplib::Response& res) {
    check_key(r.key);
    Handle h(cache_, r.ns);
    if (method == "GET" || method == "HEAD") {
      auto it = query.find("include_stale");
      const bool stale = it != query.end() && (it->second == "1" || it->second == "true");
      auto e = h->get_entry(r.key, stale);
      if (!e) throw HttpError{404, "no such entry"};
      res.set_header("X-Larder-Status", larder::core::to_string(e->info.status));
      res.set_header("X-Larder-Category", printable_header(e->info.category));
      if (e->info.expires_at) res.set_header("X-Larder-Expires-At", iso(*e->info.expires_at));
      res.set_content(std::move(e->value), "application/octet-stream");
      return;
    }
    if (method == "DELETE") {
      if (!h->remove(r.key)) throw HttpError{404, "no such entry"};
      res.status = 204;
      return;
    }
    // PUT
    larder::SetOptions o;
    if (auto it = query.find("ttl"); it != query.end()) {
      double seconds = 0;
      const std::string& t = it->second;
      const auto [p, ec] = std::from_chars(t.data(), t.data() + t.size(), seconds);
      std::optional<std::chrono::milliseconds> ms;
      if (ec == std::errc() && p == t.data() + t.size()) ms = larder::ttl_from_seconds(seconds);
      if (!ms)
        throw HttpError{400, "ttl must be a number of seconds, 0 or more (0: never expires)"};
      o.ttl = *ms;
    }
    if (auto it = query.find("category"); it != query.end()) o.category = it->second;
    if (!larder::core::valid_category(o.category))
      throw HttpError{400, fmt::format("a category is at most {} bytes without NUL",
                                       larder::kMaxCategoryBytes)};
    if (body.size() > max_body_)
      throw HttpError{413, fmt::format("the value is {} bytes; at most {} are taken here",
                                       body.size(), max_body_)};
    if (!h->set(r.key, body, o))
      throw HttpError{503, "the cache refused the write (the server's log says why)"};
    res.status = 204;
  }

  void invalidate(const Route& r, const std::map<std::string, std::string>& f,
                  httplib::Response& res) {
    if (f.size() != 1 || !(f.contains("key") || f.contains("pattern") || f.contains("category")))
      throw HttpError{400, "give exactly one of \"key\", \"pattern\" or \"category\""};
    Handle h(cache_, r.ns);
    std::uint64_t n = 0;
    if (auto it = f.find("key"); it != f.end()) {
      check_key(it->second);
      n = h->invalidate(it->second) ? 1 : 0;
    } else if (auto p = f.find("pattern"); p != f.end()) {
      if (auto why = larder::util::glob_problem(p->second); !why.empty())
        throw HttpError{400, fmt::format("bad pattern: {}", why)};
      n = h->invalidate_pattern(p->second);
    } else {
      n = h->invalidate_category(f.at("category"));
    }
    res.set_content(count_json("invalidated", n), "application/json");
  }

  void clear(const Route& r, const std::map<std::string, std::string>& f, httplib::Response& res) {
    if (f.size() > 1 || (f.size() == 1 && !f.contains("category")))
      throw HttpError{400, "the body may only give \"category\""};
    const auto c = f.find("category");
    std::uint64_t n = 0;
    if (!r.ns.empty()) {
      Handle h(cache_, r.ns);
      n = c == f.end() ? h->clear() : h->clear_category(c->second);
    } else {
      // The whole store: the unnamed namespace and every named one.
      auto& s = *session_.service;
      for (std::string_view scope : {std::string_view(), std::string_view("\0", 1)})
        n += c == f.end() ? s.clear(scope) : s.clear_category(c->second, scope);
    }
    res.set_content(count_json("removed", n), "application/json");
  }

  static std::string printable_header(const std::string& v) {
    std::string out;
    for (const char c : v) out.push_back(c >= 0x20 && c != 0x7f ? c : '?');
    return out;
  }

  Session session_;
  larder::Cache cache_;
  std::optional<Tokens> tokens_;
  bool verbose_;
  std::uint64_t max_body_ = kMaxBodyBytes;
};

struct Address {
  std::string host;
  int port = 0;
};

Address parse_listen(const std::string& text) {
  const auto colon = text.rfind(':');
  if (colon == std::string::npos || colon + 1 == text.size())
    throw Failure{kExitUsage, fmt::format("--listen '{}': give ADDRESS:PORT", text)};
  Address a;
  a.host = text.substr(0, colon);
  if (a.host.size() >= 2 && a.host.front() == '[' && a.host.back() == ']')
    a.host = a.host.substr(1, a.host.size() - 2);
  const std::string port = text.substr(colon + 1);
  const auto [p, ec] = std::from_chars(port.data(), port.data() + port.size(), a.port);
  if (ec != std::errc() || p != port.data() + port.size() || a.port < 0 || a.port > 65535 ||
      a.host.empty())
    throw Failure{kExitUsage,
                  fmt::format("--listen '{}': give ADDRESS:PORT (port 0 to 65535)", text)};
  return a;
}

bool loopback(const std::string& host) {
  return host == "localhost" || host == "::1" || host.starts_with("127.");
}

}  // namespace

}  // namespace serve

int cmd_serve(const Globals& g, const ServeOptions& o) {
  using namespace serve;
  if (!o.socket.empty() && !o.listen.empty())
    throw Failure{kExitUsage, "give --listen or --socket, not both"};
  std::optional<Tokens> tokens;
  if (!o.tokens.empty()) {
    std::string error;
    tokens = Tokens::load(o.tokens, &error);
    if (!tokens) throw Failure{kExitUsage, error};
    if (tokens->size() == 0)
      throw Failure{kExitUsage, fmt::format("--tokens {}: no token in it", o.tokens)};
    if (tokens->short_tokens() > 0)
      info(g, fmt::format("warning: {} token(s) in {} are shorter than 16 characters and can be "
                          "guessed",
                          tokens->short_tokens(), o.tokens));
  }
  Address addr;
  if (o.socket.empty()) {
    addr = parse_listen(o.listen.empty() ? "127.0.0.1:8437" : o.listen);
    if (!tokens && !loopback(addr.host))
      throw Failure{kExitUsage,
                    fmt::format("refusing to listen on {} without --tokens: without tokens every "
                                "request is admin, so only loopback addresses or --socket",
                                addr.host)};
  }
  // SIGINT and SIGTERM end the server: blocked here, before any thread starts (every thread
  // inherits the mask), and taken by sigwait below.
  sigset_t stop_signals;
  sigemptyset(&stop_signals);
  sigaddset(&stop_signals, SIGINT);
  sigaddset(&stop_signals, SIGTERM);
  pthread_sigmask(SIG_BLOCK, &stop_signals, nullptr);

  Session session = open_session(g, locate(g, true), true);
  session.require_writable("serve it");
  Api api(std::move(session), std::move(tokens), g.verbose > 0);
  GuardedServer server{Limits{}};
  server.set_payload_max_length(api.max_body());
  server.set_pre_routing_handler([&](const httplib::Request& req, httplib::Response& res) {
    return api.respond(req, res, false) ? httplib::Server::HandlerResponse::Handled
                                        : httplib::Server::HandlerResponse::Unhandled;
  });
  auto with_body = [&](const httplib::Request& req, httplib::Response& res) {
    api.respond(req, res, true);
  };
  server.Put(".*", with_body);
  server.Post(".*", with_body);
  server.set_error_handler([](const httplib::Request&, httplib::Response& res) {
    if (res.body.empty()) {
      res.set_content(error_json(fmt::format("HTTP {}", res.status)), "application/json");
    }
  });
  std::string where;
  if (!o.socket.empty()) {
    std::error_code ec;
    std::filesystem::remove(o.socket, ec);  // a socket a previous server left
    server.set_address_family(AF_UNIX);
    const mode_t old = ::umask(077);  // only this user may connect
    const bool bound = server.bind_to_port(o.socket, 80);
    ::umask(old);
    if (bound) ::chmod(o.socket.c_str(), 0600);  // read and write: what connecting takes
    if (!bound)
      throw Failure{kExitUsage, fmt::format("--socket {}: cannot listen there", o.socket)};
    where = "unix:" + o.socket;
  } else {
    int port = addr.port;
    if (port == 0)
      port = server.bind_to_any_port(addr.host);
    else if (!server.bind_to_port(addr.host, port))
      port = -1;
    if (port <= 0)
      throw Failure{kExitUsage, fmt::format("--listen {}: cannot listen there", o.listen)};
    where = fmt::format(
        "http://{}:{}",
        addr.host.find(':') != std::string::npos ? "[" + addr.host + "]" : addr.host, port);
  }
  server.set_backlog(1024);
  out(fmt::format("listening on {}\n", where));
  std::fflush(stdout);
  std::atomic<bool> signalled{false};
  std::thread stopper([&] {
    int sig = 0;
    sigwait(&stop_signals, &sig);
    signalled = true;
    server.stop();
  });
  server.listen_after_bind();
  // Returned without a signal (the listening socket failed): wake the waiting thread.
  if (!signalled) pthread_kill(stopper.native_handle(), SIGTERM);
  stopper.join();
  if (!o.socket.empty()) {
    std::error_code ec;
    std::filesystem::remove(o.socket, ec);
  }
  info(g, "cachectl serve: stopped");
  return kExitOk;
}

}  // namespace cachectl
