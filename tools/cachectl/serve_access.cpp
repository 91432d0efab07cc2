// The tokens file and access rules of `cachectl serve` (serve_access.hpp).
#include "serve_access.hpp"

#include <sys/stat.h>

#include <fstream>
#include <sstream>

#include <fmt/format.h>

#include "larder/larder.hpp"
#include "util/hmac.hpp"

namespace cachectl::serve {

bool may(const Grant& grant, Action action, std::string_view ns) {
  if (!grant.ns.empty() && grant.ns != ns) return false;
  switch (action) {
    case Action::read:
      return true;
    case Action::write:
    case Action::invalidate:
      return grant.role == Role::write || grant.role == Role::admin;
    case Action::admin:
      return grant.role == Role::admin;
  }
  return false;
}

std::optional<Tokens> Tokens::load(const std::string& path, std::string* error) {
  struct stat st {};
  if (::stat(path.c_str(), &st) != 0) {
    *error = fmt::format("--tokens {}: cannot read it", path);
    return std::nullopt;
  }
  if (!S_ISREG(st.st_mode)) {
    *error = fmt::format("--tokens {}: not a regular file", path);
    return std::nullopt;
  }
  if ((st.st_mode & 077) != 0) {
    *error = fmt::format("--tokens {}: mode {:o} lets others read it; it must be 0600", path,
                         st.st_mode & 0777);
    return std::nullopt;
  }
  std::ifstream in(path);
  if (!in) {
    *error = fmt::format("--tokens {}: cannot read it", path);
    return std::nullopt;
  }
  Tokens t;
  t.key_ = larder::util::random_bytes(32);
  std::vector<std::string> seen;  // tags, to refuse a token given twice
  std::string line;
  for (int number = 1; std::getline(in, line); ++number) {
    if (!line.empty() && line.back() == '\r') line.pop_back();
    std::istringstream words(line);
    std::string token, role, extra, more;
    if (!(words >> token) || token.starts_with('#')) continue;
    auto bad = [&](std::string_view why) {
      *error = fmt::format("--tokens {} line {}: {}", path, number, why);
      return std::nullopt;
    };
    if (!(words >> role)) return bad("a token needs a role (read, write or admin)");
    Entry e;
    if (role == "read")
      e.grant.role = Role::read;
    else if (role == "write")
      e.grant.role = Role::write;
    else if (role == "admin")
      e.grant.role = Role::admin;
    else
      return bad(fmt::format("the role must be read, write or admin, not '{}'", role));
    if (words >> extra) {
      if (!extra.starts_with("ns=") || extra.size() == 3 ||
          extra.size() - 3 > larder::kMaxNamespaceBytes)
        return bad("after the role only ns=NAME may follow");
      e.grant.ns = extra.substr(3);
    }
    if (words >> more) return bad(fmt::format("unexpected '{}'", more));
    if (token.size() < 16) ++t.short_;
    e.tag = larder::util::hmac_sha256(t.key_, {token});
    for (const auto& s : seen)
      if (s == e.tag) return bad("this token is already given on an earlier line");
    seen.push_back(e.tag);
    t.entries_.push_back(std::move(e));
  }
  return t;
}

std::optional<Grant> Tokens::check(std::string_view authorization) const {
  constexpr std::string_view kScheme = "Bearer ";
  if (!authorization.starts_with(kScheme)) return std::nullopt;
  const std::string_view token = authorization.substr(kScheme.size());
  const Entry* found = nullptr;
  // Every entry is compared, in constant time each, whether or not one matched already.
  for (const auto& e : entries_)
    if (larder::util::hmac_valid(key_, {token}, e.tag) && found == nullptr) found = &e;
  if (found == nullptr) return std::nullopt;
  return found->grant;
}

}  // namespace cachectl::serve
