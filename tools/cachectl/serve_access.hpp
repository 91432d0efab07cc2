// Access control of `cachectl serve` (docs/cachectl.md, "serve"): the tokens file and what each
// token may do.
//
// The file (mode 0600, else refused) holds one token per line: `TOKEN ROLE [ns=NAME]`, where
// ROLE is read (GETs), write (GET/PUT/DELETE of entries, invalidate) or admin (everything), and
// ns=NAME confines the token to /api/v1/ns/NAME/... . Blank lines and lines starting with '#' are
// ignored. Tokens are kept only as HMACs under a key drawn at start, compared in constant time,
// and never logged.
//
// Thread-safety: a Tokens is immutable once loaded; check() may be called from many threads.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace cachectl::serve {

enum class Role : std::uint8_t { read = 1, write = 2, admin = 3 };

// Who a request is: a role, and the namespace it is confined to ("" none).
struct Grant {
  Role role = Role::admin;
  std::string ns;
};

// What a request wants to do, for may().
enum class Action : std::uint8_t {
  read,        // GET of stats, metrics, entries
  write,       // PUT / DELETE of an entry
  invalidate,  // POST invalidate
  admin,       // POST clear, POST cleanup
};

// True when `grant` allows `action` on namespace `ns` ("" for the unnamed one and for paths that
// are not under /api/v1/ns/...).
bool may(const Grant& grant, Action action, std::string_view ns);

class Tokens {
 public:
  // Reads the tokens file. Returns nullopt and sets *error (naming the file and line) when the
  // file cannot be read, is readable by others than its owner, or has a malformed line.
  static std::optional<Tokens> load(const std::string& path, std::string* error);

  // The grant of an `Authorization` header's value ("Bearer TOKEN"); nullopt for none, another
  // scheme or an unknown token. Takes the same time whichever token matched.
  std::optional<Grant> check(std::string_view authorization) const;

  std::size_t size() const { return entries_.size(); }
  // Tokens shorter than 16 characters (guessable: serve warns about them).
  std::size_t short_tokens() const { return short_; }

 private:
  struct Entry {
    std::string tag;  // HMAC of the token under key_
    Grant grant;
  };
  std::string key_;
  std::vector<Entry> entries_;
  std::size_t short_ = 0;
};

}  // namespace cachectl::serve
