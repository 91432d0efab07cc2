// The engine: reads (entries, keys, categories, status counts).
#include "engine/engine.hpp"
#include "engine/txn.hpp"

#include <algorithm>
#include <chrono>
#include <cstring>
#include <future>
#include <limits>
#include <optional>
#include <set>
#include <system_error>
#include <tuple>

#include <absl/container/inlined_vector.h>
#include <fmt/format.h>

#include "engine/engine_detail.hpp"
#include "util/ttl.hpp"

namespace larder::engine {

using kv::Cf;
using kv::Code;
using kv::Status;
using namespace detail;

// ---------------------------------------------------------------- reads

Status Engine::read(std::string_view key, std::int64_t now_ns, Want want, Found* out) {
  bool decoded = false;
  // The value is copied once, straight out of the store's bytes.
  Status s = kv_->get_view(Cf::entries, key, [&](std::string_view record) {
    std::size_t offset = 0;
    decoded = want == Want::value_only
                  ? decode_entry_value(record, &out->header.flags, &out->header.created_ns,
                                       &out->header.ttl_ms, &offset)
                  : decode_entry(record, &out->header, &offset);
    if (!decoded) return;
    out->size = record.size() - offset;
    if (want != Want::header) out->value.assign(record.substr(offset));
  });
  if (!s.ok()) return s;
  if (!decoded) return corrupt("entry", key);
  out->status = status_at(out->header.flags, out->header.created_ns, out->header.ttl_ms,
                          options_.stale_factor, now_ns);
  return Status();
}

Status Engine::keys(std::string_view prefix, std::vector<std::string>* out) {
  // In pages, each its own scan: the memory store holds its lock for a scan, which must not
  // keep writers out for the whole family.
  constexpr std::size_t kKeysPage = 4096;
  const std::string end = prefix_end(prefix);
  std::string from(prefix);
  for (;;) {
    std::size_t n = 0;
    Status s = kv_->scan(keys_family(), from, end, [&](std::string_view k, std::string_view) {
      out->emplace_back(k);
      return ++n < kKeysPage;
    });
    if (!s.ok() || n < kKeysPage) return s;
    from = successor(out->back());
  }
}

Status Engine::has_keys(std::string_view prefix, bool* any) {
  *any = false;
  return kv_->scan(keys_family(), prefix, prefix_end(prefix),
                   [&](std::string_view, std::string_view) {
                     *any = true;
                     return false;
                   });
}

Status Engine::keys_in_category(std::string_view category, std::vector<std::string>* out) {
  // A walk over the index (categories are interned: one pointer comparison per key). Keeping a
  // per-category ordered set instead would cost ~40 B per entry for a call made by
  // clear/invalidate of a category only.
  {
    const auto lock = foreground_lock();
    auto cat = cats_.find(category);
    if (cat == cats_.end()) return Status();
    const std::string* interned = &cat->first;
    out->reserve(cat->second);
    for (const auto& [key, node] : index_)
      if (node.category == interned) out->emplace_back(key);
  }
  std::sort(out->begin(), out->end());
  return Status();
}

Status Engine::status_counts(std::int64_t now_ns, StatusCounts* out) {
  *out = {};
  const auto now = static_cast<std::uint64_t>(std::max<std::int64_t>(now_ns, 0));
  const auto lock = foreground_lock();
  // A walk over the nodes (each knows its expiry and stale times), not over expiry_ with a lookup
  // per entry.
  for (const auto& [key, n] : index_) {
    if (!n.has_expiry) continue;
    if (n.expiry_t == 0)
      ++out->invalid;
    else if (n.expiry_t <= now)
      ++out->expired;
    else if (n.stale_t <= now)
      ++out->stale;
  }
  const std::uint64_t total = entries_.load();
  const std::uint64_t other = out->invalid + out->expired + out->stale;
  out->fresh = total > other ? total - other : 0;
  return Status();
}

std::map<std::string, std::uint64_t> Engine::categories() {
  const auto lock = foreground_lock();
  return {cats_.begin(), cats_.end()};
}

}  // namespace larder::engine
