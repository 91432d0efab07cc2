#include "remote/url.hpp"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <charconv>
#include <cstring>

#include <fmt/format.h>

namespace larder::remote {

namespace {

std::optional<long long> parse_number(std::string_view s, long long lo, long long hi) {
  long long v = 0;
  const auto [p, ec] = std::from_chars(s.data(), s.data() + s.size(), v);
  if (ec != std::errc() || p != s.data() + s.size() || s.empty() || v < lo || v > hi)
    return std::nullopt;
  return v;
}

util::Result<std::string> percent_decode(std::string_view s, std::string_view what) {
  std::string out;
  out.reserve(s.size());
  for (std::size_t i = 0; i < s.size(); ++i) {
    if (s[i] != '%') {
      out.push_back(s[i]);
      continue;
    }
    unsigned v = 0;
    if (i + 2 >= s.size()) return util::fail("{}: '%' must be followed by two hex digits", what);
    const auto [p, ec] = std::from_chars(s.data() + i + 1, s.data() + i + 3, v, 16);
    if (ec != std::errc() || p != s.data() + i + 3)
      return util::fail("{}: '%' must be followed by two hex digits", what);
    out.push_back(static_cast<char>(v));
    i += 2;
  }
  return out;
}

bool valid_prefix(std::string_view p) {
  if (p.empty() || p.size() > 64) return false;
  for (char c : p) {
    const bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                    c == '_' || c == '-' || c == '.' || c == ':';
    if (!ok) return false;
  }
  return true;
}

util::Status apply_query(std::string_view query, RemoteUrl* u) {
  while (!query.empty()) {
    const std::size_t amp = query.find('&');
    const std::string_view item = query.substr(0, amp);
    query = amp == std::string_view::npos ? std::string_view{} : query.substr(amp + 1);
    if (item.empty()) continue;
    const std::size_t eq = item.find('=');
    if (eq == std::string_view::npos) return util::fail("option '{}' has no value", item);
    const std::string_view name = item.substr(0, eq);
    const std::string_view value = item.substr(eq + 1);
    if (name == "prefix") {
      if (!valid_prefix(value))
        return util::fail("prefix '{}': 1 to 64 letters, digits, '_', '-', '.' or ':' expected",
                          value);
      u->prefix = std::string(value);
    } else if (name == "connect_timeout" || name == "operation_timeout") {
      const auto ms = parse_number(value, 1, 3'600'000);
      if (!ms) return util::fail("{}={}: milliseconds from 1 to 3600000 expected", name, value);
      (name == "connect_timeout" ? u->connect_timeout : u->operation_timeout) =
          std::chrono::milliseconds(*ms);
    } else if (name == "read_only") {
      if (value != "0" && value != "1") return util::fail("read_only={}: 0 or 1 expected", value);
      u->read_only = value == "1";
    } else if (name == "outage") {
      if (value != "local" && value != "miss")
        return util::fail("outage={}: local or miss expected", value);
      u->outage = value == "miss" ? RemoteUrl::Outage::miss : RemoteUrl::Outage::local;
    } else if (name == "secret_file") {
      auto path = percent_decode(value, "secret_file");
      if (!path) return util::fail("{}", path.error());
      if (path->empty() || (*path)[0] != '/')
        return util::fail("secret_file={}: an absolute path expected", value);
      u->secret_file = std::move(*path);
    } else if (name == "db") {
      const auto db = parse_number(value, 0, 1'000'000);
      if (!db) return util::fail("db={}: a database number expected", value);
      u->db = static_cast<int>(*db);
    } else {
      return util::fail(
          "unknown option '{}' (known: prefix, connect_timeout, operation_timeout, read_only, db, "
          "secret_file, outage)",
          name);
    }
  }
  return {};
}

}  // namespace

std::string RemoteUrl::display() const {
  std::string q = fmt::format("prefix={}", prefix);
  std::string auth;
  if (!user.empty())
    auth = user + (password.empty() ? "@" : ":***@");
  else if (!password.empty())
    auth = "***@";
  if (transport == Transport::unix_socket)
    return fmt::format("redis+unix://{}{}?db={}&{}", auth, path, db, q);
  const bool v6 = host.find(':') != std::string::npos;
  return fmt::format("redis://{}{}{}{}:{}/{}?{}", auth, v6 ? "[" : "", host, v6 ? "]" : "", port,
                     db, q);
}

util::Result<RemoteUrl> parse_url(std::string_view url) {
  RemoteUrl u;
  std::string_view rest;
  const std::size_t qm = url.find('?');
  const std::string_view query = qm == std::string_view::npos ? "" : url.substr(qm + 1);
  const std::string_view base = url.substr(0, qm);
  // [[user:]password@] in either form.
  const auto credentials = [&](std::string_view cred) -> util::Status {
    const std::size_t colon = cred.find(':');
    auto user = percent_decode(cred.substr(0, colon), "user");
    if (!user) return util::fail("redis URL: {}", user.error());
    u.user = std::move(*user);
    if (colon != std::string_view::npos) {
      auto pw = percent_decode(cred.substr(colon + 1), "password");
      if (!pw) return util::fail("redis URL: {}", pw.error());
      u.password = std::move(*pw);
    } else {
      // "redis://secret@host": the only credential is the password.
      u.password = std::move(u.user);
      u.user.clear();
    }
    return {};
  };
  if (base.starts_with("redis+unix://")) {
    u.transport = RemoteUrl::Transport::unix_socket;
    std::string_view rest_unix = base.substr(13);
    if (const std::size_t at = rest_unix.find('@');
        at != std::string_view::npos &&
        rest_unix.substr(0, at).find('/') == std::string_view::npos) {
      if (auto ok = credentials(rest_unix.substr(0, at)); !ok) return util::fail(ok.error());
      rest_unix = rest_unix.substr(at + 1);
    }
    auto path = percent_decode(rest_unix, "socket path");
    if (!path) return util::fail("'{}': {}", url, path.error());
    if (path->empty() || (*path)[0] != '/')
      return util::fail("'{}': redis+unix:// needs an absolute socket path", url);
    u.path = std::move(*path);
  } else if (base.starts_with("redis://")) {
    rest = base.substr(8);
    const std::size_t slash = rest.find('/');
    std::string_view authority = rest.substr(0, slash);
    const std::string_view db = slash == std::string_view::npos ? "" : rest.substr(slash + 1);
    if (const std::size_t at = authority.rfind('@'); at != std::string_view::npos) {
      if (auto ok = credentials(authority.substr(0, at)); !ok) return util::fail(ok.error());
      authority = authority.substr(at + 1);
    }
    std::string_view port;
    if (authority.starts_with('[')) {
      const std::size_t close = authority.find(']');
      if (close == std::string_view::npos) return util::fail("'{}': unterminated '[' in host", url);
      u.host = std::string(authority.substr(1, close - 1));
      const std::string_view after = authority.substr(close + 1);
      if (!after.empty() && after[0] != ':') return util::fail("'{}': junk after ']'", url);
      if (!after.empty()) port = after.substr(1);
    } else {
      const std::size_t colon = authority.rfind(':');
      u.host = std::string(authority.substr(0, colon));
      if (colon != std::string_view::npos) port = authority.substr(colon + 1);
    }
    if (u.host.empty()) return util::fail("redis URL: no host (redis://host[:port][/db])");
    if (u.host.find_first_of(" /?#@") != std::string::npos)
      return util::fail("redis URL: host '{}' is not a host name or address", u.host);
    if (!port.empty() || authority.ends_with(':')) {
      const auto p = parse_number(port, 1, 65535);
      if (!p) return util::fail("redis URL: port '{}' is not a number from 1 to 65535", port);
      u.port = static_cast<int>(*p);
    }
    if (!db.empty()) {
      const auto n = parse_number(db, 0, 1'000'000);
      if (!n) return util::fail("redis URL: database '{}' is not a number", db);
      u.db = static_cast<int>(*n);
    }
  } else {
    const std::size_t colon = url.find("://");
    return util::fail(
        "'{}' is not a remote URL: redis://[[user:]password@]host[:port][/db] or "
        "redis+unix:///path{}",
        colon == std::string_view::npos ? std::string(url)
                                        : std::string(url.substr(0, colon)) + "://...",
        colon == std::string_view::npos ? "" : " expected");
  }
  if (auto applied = apply_query(query, &u); !applied)
    return util::fail("remote URL {}: {}", u.display(), applied.error());
  return u;
}

util::Status load_secret(RemoteUrl* u) {
  u->secret.clear();
  if (u->secret_file.empty()) return {};
  const std::string& path = u->secret_file;
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NOFOLLOW | O_NONBLOCK);
  if (fd < 0) return util::fail("secret_file {}: {}", path, std::strerror(errno));
  struct stat st {};
  std::string bytes;
  const auto done = [&](util::Status s) {
    ::close(fd);
    return s;
  };
  if (::fstat(fd, &st) != 0)
    return done(util::fail("secret_file {}: {}", path, std::strerror(errno)));
  if (!S_ISREG(st.st_mode)) return done(util::fail("secret_file {}: not a regular file", path));
  if ((st.st_mode & 077) != 0)
    return done(util::fail(
        "secret_file {}: mode {:04o} lets group or others access it (0600 or stricter required)",
        path, st.st_mode & 07777));
  if (st.st_size <= 0) return done(util::fail("secret_file {}: empty", path));
  if (st.st_size > kMaxSecretBytes)
    return done(util::fail("secret_file {}: larger than {} bytes", path, kMaxSecretBytes));
  bytes.resize(static_cast<std::size_t>(st.st_size));
  std::size_t got = 0;
  while (got < bytes.size()) {
    const ssize_t n = ::read(fd, bytes.data() + got, bytes.size() - got);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) break;
    got += static_cast<std::size_t>(n);
  }
  bytes.resize(got);
  // A trailing newline (echo secret > file) is not part of the key.
  while (!bytes.empty() && (bytes.back() == '\n' || bytes.back() == '\r')) bytes.pop_back();
  if (bytes.empty()) return done(util::fail("secret_file {}: empty", path));
  u->secret = std::move(bytes);
  return done({});
}

}  // namespace larder::remote
