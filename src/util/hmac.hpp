// HMAC-SHA256 (OpenSSL's libcrypto) over one or more byte strings, and its constant-time check.
// Signs what larder must not trust unsigned: remote records (secret_file) and Python pickles.
//
// Thread-safety: pure functions; any thread, concurrently.
#pragma once

#include <cstddef>
#include <initializer_list>
#include <string>
#include <string_view>

namespace larder::util {

inline constexpr std::size_t kTagBytes = 32;

// The 32-byte HMAC-SHA256 of the concatenation of `parts` under `key`. Never fails for a
// non-empty key (libcrypto failing to compute one aborts nothing: an empty string comes back,
// which no check accepts).
std::string hmac_sha256(std::string_view key, std::initializer_list<std::string_view> parts);

// True when `tag` is hmac_sha256(key, parts), compared in constant time; false for an empty key.
bool hmac_valid(std::string_view key, std::initializer_list<std::string_view> parts,
                std::string_view tag);

// `n` bytes from the system's random source (getrandom); throws std::runtime_error when there is
// none.
std::string random_bytes(std::size_t n);

}  // namespace larder::util
