#include "util/hmac.hpp"

#include <sys/random.h>

#include <cerrno>
#include <cstring>
#include <memory>
#include <stdexcept>

#include <openssl/core_names.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/params.h>

namespace larder::util {

std::string hmac_sha256(std::string_view key, std::initializer_list<std::string_view> parts) {
  if (key.empty()) return {};
  // The HMAC implementation is fetched once; each call gets a context of its own.
  static EVP_MAC* const mac = EVP_MAC_fetch(nullptr, "HMAC", nullptr);
  if (mac == nullptr) return {};
  std::unique_ptr<EVP_MAC_CTX, decltype(&EVP_MAC_CTX_free)> ctx(EVP_MAC_CTX_new(mac),
                                                                &EVP_MAC_CTX_free);
  if (!ctx) return {};
  char digest[] = "SHA256";
  const OSSL_PARAM params[] = {OSSL_PARAM_construct_utf8_string(OSSL_MAC_PARAM_DIGEST, digest, 0),
                               OSSL_PARAM_END};
  if (EVP_MAC_init(ctx.get(), reinterpret_cast<const unsigned char*>(key.data()), key.size(),
                   params) != 1)
    return {};
  for (std::string_view p : parts)
    if (EVP_MAC_update(ctx.get(), reinterpret_cast<const unsigned char*>(p.data()), p.size()) != 1)
      return {};
  std::string out(kTagBytes, '\0');
  std::size_t len = 0;
  if (EVP_MAC_final(ctx.get(), reinterpret_cast<unsigned char*>(out.data()), &len, out.size()) !=
          1 ||
      len != kTagBytes)
    return {};
  return out;
}

bool hmac_valid(std::string_view key, std::initializer_list<std::string_view> parts,
                std::string_view tag) {
  if (key.empty() || tag.size() != kTagBytes) return false;
  const std::string want = hmac_sha256(key, parts);
  return want.size() == kTagBytes && CRYPTO_memcmp(want.data(), tag.data(), kTagBytes) == 0;
}

std::string random_bytes(std::size_t n) {
  std::string out(n, '\0');
  std::size_t got = 0;
  while (got < n) {
    const ssize_t r = ::getrandom(out.data() + got, n - got, 0);
    if (r < 0 && errno == EINTR) continue;
    if (r <= 0) throw std::runtime_error(std::string("getrandom: ") + std::strerror(errno));
    got += static_cast<std::size_t>(r);
  }
  return out;
}

}  // namespace larder::util
