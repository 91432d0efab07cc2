// Cache::Impl: what a Cache handle holds (its Service, value signer, default TTL and namespace)
// and the argument checks every public call shares. Private to src/api (cache.cpp,
// cache_compute.cpp, cache_subscribe.cpp).
//
// Thread-safety: an Impl is immutable once made; its Service is thread-safe.
#pragma once

#include <chrono>
#include <memory>
#include <stdexcept>
#include <string>
#include <string_view>
#include <vector>

#include <fmt/format.h>

#include "api/value_signer.hpp"
#include "core/service.hpp"
#include "larder/larder.hpp"
#include "stats/counters.hpp"

namespace larder {

using core::Service;
using core::SetRequest;

class Cache::Impl {
 public:
  Impl(std::shared_ptr<Service> s, std::shared_ptr<api::ValueSigner> signer,
       std::chrono::milliseconds default_ttl, std::string prefix = {},
       stats::Counters* ns = nullptr)
      : service(std::move(s)),
        signer(std::move(signer)),
        default_ttl(default_ttl),
        prefix(std::move(prefix)),
        ns(ns) {}
  std::shared_ptr<Service> service;
  // Signs values whose decoding would run code (shared by the handles of one open).
  std::shared_ptr<api::ValueSigner> signer;
  std::chrono::milliseconds default_ttl;
  // The namespace's key prefix (core::ns_prefix); empty for the unnamed namespace.
  std::string prefix;
  // A named namespace's operations through this process's handles (Service::ns_counters).
  stats::Counters* ns;

  // A key this handle can hold: 1 to kMaxKeyBytes bytes.
  static bool valid_key(std::string_view key) { return core::valid_user_key(key); }
  // The key as stored (core::stored_key).
  std::string stored(std::string_view key) const { return core::stored_key(prefix, key); }
  // Runs f(stored key), without copying the key when it is stored as it is.
  template <class F>
  auto with_key(std::string_view key, F&& f) const {
    if (prefix.empty() && !key.starts_with('\0')) return f(key);
    const std::string k = stored(key);
    return f(std::string_view(k));
  }
  // The key as the namespace's user knows it.
  std::string user_key(std::string_view stored_key) const {
    return std::string(core::user_key(prefix, stored_key));
  }
  void strip(std::vector<std::string>& keys) const {
    for (auto& k : keys)
      if (!prefix.empty() || k.starts_with('\0')) k = user_key(k);
  }
  void count(stats::Counter c, std::uint64_t n = 1) const {
    if (ns == nullptr || n == 0) return;
    switch (c) {
#define LARDER_NS_COUNT(member, field, metric, label, help) \
  case stats::Counter::member:                              \
    ns->member += n;                                        \
    break;
      LARDER_COUNTERS(LARDER_NS_COUNT)
#undef LARDER_NS_COUNT
    }
  }

  // A SetRequest for a key and options that passed the checks.
  SetRequest request(std::string_view key, std::string_view value,
                     const SetOptions& options) const {
    SetRequest q;
    q.key = stored(key);
    q.value = std::string(value);
    q.ttl_ms = options.ttl ? options.ttl->count() : default_ttl.count();
    q.category = options.category;
    q.metadata = options.metadata;
    return q;
  }
};

namespace api {

// Throws std::invalid_argument naming `what` when a TTL is negative (0 means no expiry).
inline void check_ttl(std::chrono::milliseconds ttl, std::string_view what = "ttl") {
  if (ttl.count() < 0)
    throw std::invalid_argument(
        fmt::format("{}: must not be negative (got {}ms)", what, ttl.count()));
}
inline void check_ttl(const SetOptions& options) {
  if (options.ttl) check_ttl(*options.ttl);
}

}  // namespace api
}  // namespace larder
