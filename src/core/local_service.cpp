// LocalService: the cache operations over this process's Backend (store or memory): writes
// and reads here; enumeration, statistics and maintenance in local_admin.cpp; leases and
// events in local_leases.cpp; the remote tier's share in near_cache.cpp. Every function is
// noexcept in spirit for I/O: failures become misses or false, counted and logged by
// Backend::finish.
#include <algorithm>
#include <functional>
#include <limits>
#include <set>

#include <fmt/format.h>

#include "core/backend.hpp"
#include "core/near_cache.hpp"
#include "core/op_scope.hpp"
#include "core/service.hpp"

namespace larder::core {

using namespace detail;

LocalService::LocalService(std::shared_ptr<Backend> backend) : backend_(std::move(backend)) {}

bool LocalService::set(const SetRequest& q) {
  return set_impl(q, /*write_remote=*/true, nullptr);
}

std::vector<bool> LocalService::set_many(const std::vector<SetRequest>& requests) {
  std::vector<bool> out(requests.size(), false);
  if (requests.empty()) return out;
  Backend& b = *backend_;
  const OpScope op(b, "set_many", OpScope::Kind::write);
  if (op.refused()) return out;
  const std::int64_t now = b.now_ns();
  // The items within the byte limit are stored in one batch (one write for all of them), while
  // Redis takes them in one pipeline; the others go to neither tier. Should the batch find no
  // room (a ttl cache full of live entries, or a batch larger than the limits), the items are
  // set one by one instead, each as set() would.
  std::vector<engine::SetItem> items;
  std::vector<std::string> written;
  std::vector<std::size_t> which;
  const Engine& limits = *b.begin().engine;
  for (std::size_t i = 0; i < requests.size(); ++i) {
    const SetRequest& q = requests[i];
    if (too_large(limits, q.value)) {
      b.log().logf(util::Level::debug, "set of '{}' refused: value larger than max_size_bytes",
                   q.key);
      continue;
    }
    items.push_back({q.key, q.value, q.ttl_ms, q.category, &q.metadata, std::nullopt});
    written.push_back(q.key);
    which.push_back(i);
  }
  if (items.empty()) return out;
  engine::SetOutcome outcome = engine::SetOutcome::full;
  kv::Status s;
  const auto local = [&] {
    b.settle_fills();
    const Backend::Lease lease = b.begin();
    s = lease.engine->set_all(items, now, &outcome);
    b.finish(lease, s, "set_many", std::span<const std::string>(written));
  };
  if (remote::Tier* t = b.remote()) {
    std::vector<std::pair<std::string, remote::Entry>> through;
    through.reserve(which.size());
    for (std::size_t i : which)
      through.emplace_back(requests[i].key, remote_entry(requests[i], now));
    if (!t->put_many(through, local)) b.counters().remote_error++;
  } else {
    local();
  }
  if (!s.ok()) return out;
  if (outcome == engine::SetOutcome::stored) {
    for (std::size_t i : which) out[i] = true;
    b.counters().set += which.size();
    return out;
  }
  for (std::size_t i : which) out[i] = set_impl(requests[i], /*write_remote=*/false, nullptr);
  return out;
}

bool LocalService::set_impl(const SetRequest& q, bool write_remote, std::int64_t* created_ns) {
  Backend& b = *backend_;
  const OpScope op(b, "set", OpScope::Kind::write);
  if (op.refused()) return false;
  engine::SetOutcome outcome = engine::SetOutcome::full;
  const std::int64_t now = b.now_ns();
  if (created_ns != nullptr) *created_ns = now;
  kv::Status s;
  const auto local = [&] {
    s = run(
        b, "set",
        [&](Engine& e) {
          return e.set(q.key, q.value, q.ttl_ms, q.category, q.metadata, now, &outcome);
        },
        q.key);
  };
  // With a remote tier, the local write is made while Redis takes the entry (one round trip
  // overlapping the local write). A value over the byte limit goes to neither tier; one the
  // local tier refuses otherwise (a failing disk, a ttl cache full of live entries) is still
  // on the remote (docs/remote.md).
  if (remote::Tier* t = write_remote ? b.remote() : nullptr;
      t != nullptr && !too_large(*b.begin().engine, q.value)) {
    if (!t->put(q.key, remote_entry(q, now), local)) b.counters().remote_error++;
  } else {
    local();
  }
  if (!s.ok()) return false;
  if (outcome != engine::SetOutcome::stored) {
    b.log().logf(util::Level::debug, "set of '{}' refused: {}", q.key,
                 outcome == engine::SetOutcome::too_large
                     ? "value larger than max_size_bytes"
                     : "cache full of live entries (ttl policy)");
    return false;
  }
  b.counters().set++;
  return true;
}

bool LocalService::set_if(const SetRequest& q, std::string_view what,
                          const std::function<bool(const std::string* fresh_value)>& allowed) {
  Backend& b = *backend_;
  const OpScope op(b, what, OpScope::Kind::write);
  if (op.refused()) return false;
  switch (remote_decides(
      b, q.key,
      [&](const remote::Entry* current, std::int64_t now) -> std::optional<remote::Entry> {
        if (!allowed(current != nullptr ? &current->value : nullptr)) return std::nullopt;
        return remote_entry(q, now);
      })) {
    case Decided::written:
      b.counters().set++;
      return true;
    case Decided::refused:
      return false;
    case Decided::unavailable:
      break;
  }
  engine::SetOutcome outcome = engine::SetOutcome::skipped;
  const kv::Status s = run(
      b, what,
      [&](Engine& e) {
        return e.update(
            q.key, b.now_ns(),
            [&](const engine::Found* current) {
              return allowed(is_fresh(current) ? &current->value : nullptr)
                         ? std::optional(rewrite_of(q, q.value))
                         : std::nullopt;
            },
            &outcome);
      },
      q.key);
  drop_if_corrupt(b, s, q.key);
  if (!s.ok() || !stored(b, outcome, what, q.key)) return false;
  b.counters().set++;
  push_local(b, q.key);
  return true;
}

bool LocalService::add(const SetRequest& q) {
  return set_if(q, "add", [](const std::string* fresh) { return fresh == nullptr; });
}

bool LocalService::compare_and_set(const SetRequest& q, std::string_view expected) {
  return set_if(q, "compare_and_set",
                [&](const std::string* fresh) { return fresh != nullptr && *fresh == expected; });
}

bool LocalService::touch(std::string_view key, std::int64_t ttl_ms) {
  Backend& b = *backend_;
  const OpScope op(b, "touch", OpScope::Kind::write);
  if (op.refused()) return false;
  switch (remote_decides(
      b, key, [&](const remote::Entry* current, std::int64_t now) -> std::optional<remote::Entry> {
        if (current == nullptr) return std::nullopt;
        remote::Entry e = *current;  // a lifetime that starts now
        e.created_ns = now;
        e.ttl_ms = ttl_ms;
        return e;
      })) {
    case Decided::written:
      return true;
    case Decided::refused:
      return false;
    case Decided::unavailable:
      break;
  }
  engine::SetOutcome outcome = engine::SetOutcome::skipped;
  const kv::Status s = run(
      b, "touch",
      [&](Engine& e) {
        return e.update(
            key, b.now_ns(),
            [&](const engine::Found* current) {
              std::optional<engine::Rewrite> w;
              // The same value, category and metadata, with a lifetime that starts now.
              if (is_fresh(current))
                w = engine::Rewrite{current->value, ttl_ms, current->header.category,
                                    current->header.metadata, std::nullopt};
              return w;
            },
            &outcome);
      },
      key);
  drop_if_corrupt(b, s, key);
  if (!s.ok() || !stored(b, outcome, "touch", key)) return false;
  push_local(b, key);
  return true;
}

std::optional<Entry> LocalService::get_and_touch(std::string_view key, std::int64_t ttl_ms) {
  Backend& b = *backend_;
  if (!valid_key(key)) {
    b.counters().miss++;
    return std::nullopt;
  }
  const OpScope op(b, "get_and_touch", OpScope::Kind::write);
  if (op.refused()) {
    b.counters().miss++;
    return std::nullopt;
  }
  std::optional<remote::Entry> renewed;
  switch (remote_decides(
      b, key, [&](const remote::Entry* current, std::int64_t now) -> std::optional<remote::Entry> {
        renewed.reset();
        if (current == nullptr) return std::nullopt;
        remote::Entry e = *current;  // a lifetime that starts now
        e.created_ns = now;
        e.ttl_ms = ttl_ms;
        renewed = e;
        return e;
      })) {
    case Decided::written:
      b.counters().hit++;
      return remote_as_entry(key, std::move(*renewed), /*fresh=*/true, b.now_ns());
    case Decided::refused:
      b.counters().miss++;
      return std::nullopt;
    case Decided::unavailable:
      break;
  }
  engine::SetOutcome outcome = engine::SetOutcome::skipped;
  const std::int64_t now = b.now_ns();
  engine::Found read;  // the entry as it is now stored: the same value, a lifetime from now
  engine::AccessRecord access;
  const kv::Status s = run(
      b, "get_and_touch",
      [&](Engine& e) {
        kv::Status st = e.update(
            key, now,
            [&](const engine::Found* current) {
              std::optional<engine::Rewrite> w;
              if (is_fresh(current)) {
                read = *current;
                read.header.created_ns = now;
                read.header.ttl_ms = ttl_ms;
                w = engine::Rewrite{current->value, ttl_ms, current->header.category,
                                    current->header.metadata, std::nullopt};
              }
              return w;
            },
            &outcome);
        if (st.ok() && outcome == engine::SetOutcome::stored) {
          if (!b.resolved().read_only) e.record_access(key, now);
          if (!e.access_of(key, &access).ok()) access.last_access_ns = now;
        }
        return st;
      },
      key);
  drop_if_corrupt(b, s, key);
  if (!s.ok() || !stored(b, outcome, "get_and_touch", key)) {
    b.counters().miss++;
    return std::nullopt;
  }
  b.counters().hit++;
  push_local(b, key);
  Entry entry;
  entry.info = make_info(key, read, access, now);
  entry.value = std::move(read.value);
  return entry;
}

std::optional<std::int64_t> LocalService::incr(const SetRequest& q, std::int64_t delta) {
  Backend& b = *backend_;
  const OpScope op(b, "incr", OpScope::Kind::write);
  if (op.refused()) return std::nullopt;
  engine::SetOutcome outcome = engine::SetOutcome::skipped;
  std::optional<std::int64_t> result;
  const char* refused = nullptr;
  switch (remote_decides(
      b, q.key,
      [&](const remote::Entry* current, std::int64_t now) -> std::optional<remote::Entry> {
        result.reset();
        std::int64_t sum = delta;
        if (current == nullptr) {  // a missing counter starts at 0, with the call's options
          remote::Entry e = remote_entry(q, now);
          e.value = std::to_string(sum);
          result = sum;
          return e;
        }
        const auto old = parse_int(current->value);
        if (!old) {
          refused = "the stored value is not a decimal integer";
          return std::nullopt;
        }
        if (__builtin_add_overflow(*old, delta, &sum)) {
          refused = "the sum overflows a 64-bit integer";
          return std::nullopt;
        }
        remote::Entry e = *current;  // a counter keeps its lifetime, category and metadata
        e.value = std::to_string(sum);
        result = sum;
        return e;
      })) {
    case Decided::written:
      b.counters().set++;
      return result;
    case Decided::refused:
      if (refused != nullptr)
        b.log().logf(util::Level::debug, "incr of '{}' refused: {}", q.key, refused);
      return std::nullopt;
    case Decided::unavailable:
      result.reset();
      refused = nullptr;
      break;
  }
  const kv::Status s = run(
      b, "incr",
      [&](Engine& e) {
        return e.update(
            q.key, b.now_ns(),
            [&](const engine::Found* current) {
              std::optional<engine::Rewrite> w;
              std::int64_t sum = delta;
              if (!is_fresh(current)) {  // a missing counter starts at 0, with the call's options
                w = rewrite_of(q, std::to_string(sum));
              } else if (const auto old = parse_int(current->value); !old) {
                refused = "the stored value is not a decimal integer";
              } else if (__builtin_add_overflow(*old, delta, &sum)) {
                refused = "the sum overflows a 64-bit integer";
              } else {
                // A counter keeps its lifetime (created time and TTL), category and metadata.
                w = engine::Rewrite{std::to_string(sum), current->header.ttl_ms,
                                    current->header.category, current->header.metadata,
                                    current->header.created_ns};
              }
              if (w) result = sum;
              return w;
            },
            &outcome);
      },
      q.key);
  drop_if_corrupt(b, s, q.key);
  if (refused != nullptr)
    b.log().logf(util::Level::debug, "incr of '{}' refused: {}", q.key, refused);
  if (!s.ok() || !stored(b, outcome, "incr", q.key)) return std::nullopt;
  b.counters().set++;
  push_local(b, q.key);
  return result;
}

bool LocalService::set_all(const std::vector<SetRequest>& requests) {
  Backend& b = *backend_;
  const OpScope op(b, "set_all", OpScope::Kind::write);
  if (op.refused()) return false;
  std::vector<engine::SetItem> items;
  items.reserve(requests.size());
  for (const SetRequest& q : requests)
    items.push_back({q.key, q.value, q.ttl_ms, q.category, &q.metadata, std::nullopt});
  std::vector<std::string> written;
  written.reserve(requests.size());
  for (const SetRequest& q : requests) written.push_back(q.key);
  engine::SetOutcome outcome = engine::SetOutcome::full;
  const std::int64_t now = b.now_ns();
  b.settle_fills();
  const Backend::Lease lease = b.begin();
  const kv::Status s = lease.engine->set_all(items, now, &outcome);
  b.finish(lease, s, "set_all", std::span<const std::string>(written));
  if (!s.ok() || !stored(b, outcome, "set_all", requests.empty() ? "" : requests[0].key))
    return false;
  std::set<std::string_view> distinct;
  for (const SetRequest& q : requests) distinct.insert(q.key);
  b.counters().set += distinct.size();
  if (remote::Tier* t = b.remote()) {
    // One pipeline; the remote is not transactional: each entry is written on its own there.
    std::vector<std::pair<std::string, remote::Entry>> items_out;
    for (const SetRequest& q : requests) items_out.emplace_back(q.key, remote_entry(q, now));
    if (!t->put_many(items_out)) b.counters().remote_error++;
  }
  return true;
}

std::optional<std::string> LocalService::get(std::string_view key) {
  return get_impl(key, /*ask_remote=*/true, /*count_miss=*/true);
}

std::vector<std::optional<std::string>> LocalService::get_many(
    const std::vector<std::string>& keys) {
  return get_many(keys, std::numeric_limits<std::uint64_t>::max());
}

std::vector<std::optional<std::string>> LocalService::get_many(const std::vector<std::string>& keys,
                                                               std::uint64_t max_value_bytes) {
  std::vector<std::optional<std::string>> out;
  out.reserve(keys.size());
  remote::Tier* t = backend_->remote();
  std::uint64_t bytes = 0;
  for (const auto& k : keys) {
    out.push_back(get_impl(k, /*ask_remote=*/false, t == nullptr));
    if (out.back()) bytes += out.back()->size();
    if (bytes >= max_value_bytes) break;
  }
  if (t == nullptr) return out;
  // The local misses, asked of the remote in one pipeline.
  Backend& b = *backend_;
  std::vector<std::string> missing;
  std::vector<std::size_t> where;
  for (std::size_t i = 0; i < out.size(); ++i)
    if (!out[i]) {
      missing.push_back(keys[i]);
      where.push_back(i);
    }
  if (missing.empty()) return out;
  std::vector<remote::Entry> entries;
  remote::StreamId at{};
  const std::vector<remote::Tier::Outcome> outcomes =
      t->get_many(missing, &entries, &at, [&b] { b.settle_fills(); });
  for (std::size_t j = 0; j < missing.size(); ++j) {
    auto copy = keep_remote(b, missing[j], outcomes[j], std::move(entries[j]), at, /*defer=*/true);
    if (copy && copy->fresh) {
      b.counters().hit++;
      out[where[j]] = std::move(copy->entry.value);
    } else {
      b.counters().miss++;
    }
  }
  return out;
}

std::optional<std::string> LocalService::get_impl(std::string_view key, bool ask_remote,
                                                  bool count_miss) {
  Backend& b = *backend_;
  const OpScope op(b, "get");
  if (outage_miss(b)) {
    if (count_miss) b.counters().miss++;
    return std::nullopt;
  }
  const std::int64_t now = b.now_ns();
  engine::Found f;
  Engine* used = nullptr;
  const auto read = [&](Engine& e) {
    used = &e;
    return e.read(key, now, engine::Want::value_only, &f);
  };
  // Remote copies waiting to be stored (other keys', as a rule) are left waiting for the round
  // trip below, unless this key's is among them.
  kv::Status s = run_unsettled(b, "get", read);
  if (!(s.ok() && f.status == EntryStatus::fresh) && b.fill_waits(key)) {
    f = engine::Found();
    s = run(b, "get", read);
  }
  if (s.ok() && f.status == EntryStatus::fresh) {
    if (!b.resolved().read_only) used->record_access(key, now);  // a view records nothing
    b.counters().hit++;
    return std::move(f.value);
  }
  drop_if_corrupt(b, s, key);
  if (auto copy = ask_remote ? from_remote(b, key, /*defer=*/true) : std::nullopt;
      copy && copy->fresh) {
    b.counters().hit++;
    return std::move(copy->entry.value);
  }
  if (count_miss) b.counters().miss++;
  return std::nullopt;
}

std::optional<Entry> LocalService::get_entry(std::string_view key, bool include_stale) {
  Backend& b = *backend_;
  const OpScope op(b, "get_entry");
  return local_get_entry(key, include_stale, /*ask_remote=*/b.remote() != nullptr);
}

std::optional<Entry> LocalService::local_get_entry(std::string_view key, bool include_stale,
                                                   bool ask_remote) {
  Backend& b = *backend_;
  if (outage_miss(b)) {
    b.counters().miss++;
    return std::nullopt;
  }
  const std::int64_t now = b.now_ns();
  // The local entry; on a miss, the remote's copy, stored locally (when no change raced it) and
  // read again as a local entry.
  std::optional<RemoteCopy> copy;
  for (bool asked = false;; asked = true) {
    engine::Found f;
    engine::AccessRecord a;
    bool hit = false;
    const kv::Status s = run(b, "get_entry", [&](Engine& e) {
      kv::Status st = e.read(key, now, engine::Want::value, &f);
      if (!st.ok() || (f.status != EntryStatus::fresh && !include_stale)) return st;
      if (!b.resolved().read_only) e.record_access(key, now);
      st = e.access_of(key, &a);
      if (st.not_found()) st = kv::Status();  // removed meanwhile: report what was read
      hit = st.ok();
      return st;
    });
    if (s.ok() && hit) {
      b.counters().hit++;
      Entry entry;
      entry.info = make_info(key, f, a, now);
      entry.value = std::move(f.value);
      return entry;
    }
    drop_if_corrupt(b, s, key);
    if (asked || !ask_remote) break;
    copy = from_remote(b, key);
    if (!copy || !copy->stored) break;
    b.copy_stored_for_test(key);
  }
  // A copy not kept, or stored and removed since (the listener applied the change that wrote
  // it, after the fetch): described from what the remote holds.
  if (copy && (copy->fresh || include_stale)) {
    b.counters().hit++;
    return remote_as_entry(key, std::move(copy->entry), copy->fresh, now);
  }
  b.counters().miss++;
  return std::nullopt;
}

bool LocalService::exists(std::string_view key) {
  Backend& b = *backend_;
  if (outage_miss(b)) return false;
  engine::Found f;
  const std::int64_t now = b.now_ns();
  const kv::Status s =
      run(b, "exists", [&](Engine& e) { return e.read(key, now, engine::Want::header, &f); });
  if (s.ok() && f.status == EntryStatus::fresh) return true;
  const auto copy = from_remote(b, key);
  return copy && copy->fresh;
}

std::optional<std::string> LocalService::peek(std::string_view key) {
  Backend& b = *backend_;
  engine::Found f;
  const std::int64_t now = b.now_ns();
  const kv::Status s =
      run(b, "peek", [&](Engine& e) { return e.read(key, now, engine::Want::value_only, &f); });
  if (s.ok() && f.status == EntryStatus::fresh) return std::move(f.value);
  return std::nullopt;
}

std::optional<EntryInfo> LocalService::metadata(std::string_view key) {
  Backend& b = *backend_;
  engine::Found f;
  engine::AccessRecord a;
  const std::int64_t now = b.now_ns();
  const kv::Status s = run(b, "metadata", [&](Engine& e) {
    kv::Status st = e.read(key, now, engine::Want::header, &f);
    if (st.ok()) st = e.access_of(key, &a);
    return st;
  });
  if (!s.ok()) return std::nullopt;
  return make_info(key, f, a, now);
}

bool LocalService::remove(std::string_view key) {
  Backend& b = *backend_;
  const OpScope op(b, "remove", OpScope::Kind::write);
  if (op.refused()) return false;
  bool removed = false;
  const kv::Status s = run(
      b, "remove", [&](Engine& e) { return e.remove(key, &removed); }, key);
  if (s.ok() && removed) b.counters().del++;
  if (remote::Tier* t = b.remote(); t != nullptr && !t->remove(key)) b.counters().remote_error++;
  return s.ok() && removed;
}

}  // namespace larder::core
