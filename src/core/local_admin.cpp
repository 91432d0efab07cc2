// LocalService's enumerating calls (clear, invalidate by category or pattern, keys), statistics,
// inspection and maintenance (admin). See local_service.cpp.
#include <fmt/format.h>

#include "core/backend.hpp"
#include "core/near_cache.hpp"
#include "core/op_scope.hpp"
#include "core/service.hpp"
#include "util/glob.hpp"

namespace larder::core {

using namespace detail;

namespace {

// The stored keys of `scope` (any status), in key order.
kv::Status scope_keys(Engine& e, std::string_view scope, std::vector<std::string>* out) {
  kv::Status s = e.keys(scope, out);
  if (s.ok() && scope.size() <= 1)
    std::erase_if(*out, [&](const std::string& k) { return !in_scope(k, scope); });
  return s;
}

kv::Status category_keys(Engine& e, std::string_view category, std::string_view scope,
                         std::vector<std::string>* out) {
  kv::Status s = e.keys_in_category(category, out);
  if (s.ok()) std::erase_if(*out, [&](const std::string& k) { return !in_scope(k, scope); });
  return s;
}

}  // namespace

std::size_t LocalService::clear(std::string_view scope) {
  Backend& b = *backend_;
  const OpScope op(b, "clear", OpScope::Kind::write);
  if (op.refused()) return 0;
  std::size_t n = 0;
  const kv::Status s = run(
      b, "clear",
      [&](Engine& e) {
        // The whole store at once while no stored key starts with NUL (no named namespace, no
        // escaped key); else key by key. One look suffices: the scan stops at the first key.
        bool any_nul = false;
        kv::Status st =
            scope.empty() ? e.has_keys(std::string_view("\0", 1), &any_nul) : kv::Status();
        if (st.ok() && scope.empty() && !any_nul) return e.clear(&n);
        std::vector<std::string> keys;
        if (st.ok()) st = scope_keys(e, scope, &keys);
        return st.ok() ? e.remove_keys(keys, &n) : st;
      },
      {}, Wrote::everything);
  if (remote::Tier* t = b.remote(); t != nullptr && !t->remove_all(scope))
    b.counters().remote_error++;
  if (!s.ok()) return 0;
  b.counters().del += n;
  return n;
}

std::size_t LocalService::clear_category(std::string_view category, std::string_view scope) {
  Backend& b = *backend_;
  const OpScope op(b, "clear_category", OpScope::Kind::write);
  if (op.refused()) return 0;
  std::size_t n = 0;  // on failure: what was removed before it
  (void)run(
      b, "clear_category",
      [&](Engine& e) {
        std::vector<std::string> keys;
        kv::Status st = category_keys(e, category, scope, &keys);
        return st.ok() ? e.remove_keys(keys, &n) : st;
      },
      {}, Wrote::everything);
  b.counters().del += n;
  if (remote::Tier* t = b.remote(); t != nullptr && !t->remove_category(category, scope))
    b.counters().remote_error++;
  return n;
}

bool LocalService::invalidate(std::string_view key) {
  Backend& b = *backend_;
  const OpScope op(b, "invalidate", OpScope::Kind::write);
  if (op.refused()) return false;
  std::size_t n = 0;
  const kv::Status s = run(
      b, "invalidate", [&](Engine& e) { return e.invalidate_keys({std::string(key)}, &n); }, key);
  if (remote::Tier* t = b.remote(); t != nullptr && !t->remove(key)) b.counters().remote_error++;
  return s.ok() && n == 1;
}

std::size_t LocalService::invalidate_category(std::string_view category, std::string_view scope) {
  Backend& b = *backend_;
  const OpScope op(b, "invalidate_category", OpScope::Kind::write);
  if (op.refused()) return 0;
  std::size_t n = 0;
  (void)run(
      b, "invalidate_category",
      [&](Engine& e) {
        std::vector<std::string> keys;
        kv::Status st = category_keys(e, category, scope, &keys);
        return st.ok() ? e.invalidate_keys(keys, &n) : st;
      },
      {}, Wrote::everything);
  if (remote::Tier* t = b.remote(); t != nullptr && !t->remove_category(category, scope))
    b.counters().remote_error++;
  return n;
}

std::size_t LocalService::invalidate_pattern(std::string_view glob, std::string_view scope) {
  Backend& b = *backend_;
  const OpScope op(b, "invalidate_pattern", OpScope::Kind::write);
  if (op.refused()) return 0;
  std::size_t n = 0;
  // The pattern applies to keys as the namespace's user knows them (without the prefix).
  const std::string prefix = stored_key(scope, util::glob_literal_prefix(glob));
  (void)run(
      b, "invalidate_pattern",
      [&](Engine& e) {
        std::vector<std::string> keys;
        kv::Status st = e.keys(prefix, &keys);
        if (!st.ok()) return st;
        std::erase_if(keys, [&](const std::string& k) {
          return !in_scope(k, scope) || !util::glob_match(glob, user_key(scope, k));
        });
        return e.invalidate_keys(keys, &n);
      },
      {}, Wrote::everything);
  if (remote::Tier* t = b.remote(); t != nullptr && !t->remove_matching(glob, scope))
    b.counters().remote_error++;
  return n;
}

std::vector<std::string> LocalService::keys(std::string_view scope) {
  std::vector<std::string> out;
  (void)run(*backend_, "keys", [&](Engine& e) { return scope_keys(e, scope, &out); });
  return out;
}

std::vector<std::string> LocalService::keys_in_category(std::string_view category,
                                                        std::string_view scope) {
  std::vector<std::string> out;
  (void)run(*backend_, "keys_in_category",
            [&](Engine& e) { return category_keys(e, category, scope, &out); });
  return out;
}

std::size_t LocalService::cleanup() {
  Backend& b = *backend_;
  const OpScope op(b, "cleanup", OpScope::Kind::write);
  if (op.refused()) return 0;
  std::size_t n = 0;
  const kv::Status s = op.run([&](Engine& e) { return e.cleanup(b.now_ns(), &n); });
  if (s.ok()) b.counters().cleanup++;
  (void)b.save_stats();  // counted and logged
  return n;
}

Stats LocalService::stats() {
  Backend& b = *backend_;
  Stats st;
  b.counter_totals(&st);
  engine::StatusCounts counts;
  (void)run(b, "stats", [&](Engine& e) {
    st.total_entries = e.entries();
    st.total_size_bytes = e.bytes();
    st.categories = e.categories();
    return e.status_counts(b.now_ns(), &counts);
  });
  st.fresh_entries = counts.fresh;
  st.stale_entries = counts.stale;
  st.expired_entries = counts.expired;
  st.invalid_entries = counts.invalid;
  return st;
}

void LocalService::flush() {
  Backend& b = *backend_;
  (void)run(b, "flush", [&](Engine& e) { return e.flush_access(); });
  (void)b.save_stats();  // counted and logged
}

void LocalService::count_error(std::string_view what) {
  Backend& b = *backend_;
  b.counters().error++;
  if (!what.empty()) b.log().log(util::Level::warn, what);
}

std::vector<std::optional<Entry>> LocalService::inspect(const std::vector<std::string>& keys,
                                                        bool with_values) {
  Backend& b = *backend_;
  std::vector<std::optional<Entry>> out(keys.size());
  const std::int64_t now = b.now_ns();
  (void)run(b, "inspect", [&](Engine& e) {
    for (std::size_t i = 0; i < keys.size(); ++i) {
      engine::Found f;
      engine::AccessRecord a;
      kv::Status st =
          e.read(keys[i], now, with_values ? engine::Want::value : engine::Want::header, &f);
      if (st.ok()) st = e.access_of(keys[i], &a);
      if (st.not_found()) continue;  // not stored (or removed meanwhile)
      if (!st.ok()) return st;
      out[i] = Entry{std::move(f.value), make_info(keys[i], f, a, now)};
    }
    return kv::Status();
  });
  return out;
}

AdminResult LocalService::admin(AdminCommand command, std::int64_t arg) {
  Backend& b = *backend_;
  AdminResult res;
  // Maintenance works on the store itself, never on the memory stand-in of a degraded cache.
  auto on_store = [&](std::string_view what, auto&& f) {
    b.settle_fills();
    const Backend::Lease lease = b.begin();
    if (!lease.primary || b.degraded()) {
      b.finish(lease, kv::Status(), what);
      res.error = fmt::format("the store is not in use: {}", b.last_error());
      return;
    }
    const kv::Status s = f(*lease.engine);
    b.finish(lease, s, what, {}, Wrote::everything);
    res.ok = s.ok();
    if (!s.ok()) res.error = s.message;
  };
  auto verify_into = [&](Engine& e) {
    engine::VerifyReport report;
    const kv::Status s = e.verify(&report);
    res.lines = std::move(report.problems);
    res.count = res.lines.size();
    res.fields["entries"] = std::to_string(report.entries);
    res.fields["bytes"] = std::to_string(report.bytes);
    return s;
  };
  switch (command) {
    case AdminCommand::settings: {
      const engine::Options o = b.engine_options();
      const Config& c = b.resolved().config;
      res.ok = true;
      res.fields = {
          {"policy", to_string(o.policy)},
          {"max_entries", std::to_string(o.max_entries)},
          {"max_size_bytes", std::to_string(o.max_bytes)},
          {"limits_set_by", b.primary().admin_limits() ? "cachectl" : "config"},
          {"default_ttl_ms", std::to_string(o.default_ttl_ms)},
          {"stale_factor", fmt::format("{}", o.stale_factor)},
          {"cleanup_interval_s", std::to_string(c.cleanup_interval.count())},
          {"strategy", to_string(c.strategy)},
          {"directory", b.resolved().dir.string()},
          {"pid", std::to_string(::getpid())},
          {"read_only", b.resolved().read_only ? "true" : "false"},
          {"degraded", b.degraded() ? "true" : "false"},
          {"last_error", b.last_error()},
      };
      if (remote::Tier* t = b.remote()) {
        const bool up = t->check();
        res.fields["remote"] = t->url().display();
        res.fields["remote_reachable"] = up ? "true" : "false";
        res.fields["remote_error"] = up ? "" : t->last_error();
      } else if (b.resolved().remote) {
        res.fields["remote"] = b.resolved().remote->display();
        res.fields["remote_reachable"] = "false";
        res.fields["remote_error"] = b.last_error();  // e.g. built without Redis support
      }
      break;
    }
    case AdminCommand::verify:
      on_store("verify", verify_into);
      break;
    case AdminCommand::repair:
      on_store("repair", [&](Engine& e) {
        kv::Status s = e.rebuild();
        return s.ok() ? verify_into(e) : s;
      });
      break;
    case AdminCommand::compact:
      on_store("compact", [&](Engine& e) { return e.compact(); });
      break;
    case AdminCommand::evict_older_than:
      if (arg < 0) {
        res.error = "the age must not be negative";
        break;
      }
      on_store("evict_older_than", [&](Engine& e) {
        const std::int64_t cutoff = b.now_ns() - arg * 1'000'000'000;
        std::vector<std::string> keys, old;
        kv::Status s = e.keys({}, &keys);
        for (std::size_t i = 0; s.ok() && i < keys.size(); ++i) {
          engine::Found f;
          s = e.read(keys[i], b.now_ns(), engine::Want::header, &f);
          if (s.not_found()) {
            s = kv::Status();
          } else if (s.ok() && f.header.created_ns < cutoff) {
            old.push_back(keys[i]);
          }
        }
        std::size_t n = 0;
        if (s.ok()) s = e.remove_keys(old, &n);
        res.count = n;
        b.counters().eviction += n;
        return s;
      });
      break;
    case AdminCommand::set_max_entries:
    case AdminCommand::set_max_bytes:
    case AdminCommand::reset_limits: {
      if (arg < 0) {
        res.error = "a limit must not be negative";
        break;
      }
      const auto limit = static_cast<std::uint64_t>(arg);
      on_store("limits", [&](Engine& e) {
        std::size_t n = 0;
        kv::Status s;
        if (command == AdminCommand::reset_limits)
          s = e.reset_limits(b.now_ns(), &n);
        else if (command == AdminCommand::set_max_entries)
          s = e.set_limits(limit, std::nullopt, b.now_ns(), &n);
        else
          s = e.set_limits(std::nullopt, limit, b.now_ns(), &n);
        res.count = n;
        return s;
      });
      break;
    }
    case AdminCommand::zero_stats:
      if (auto zeroed = b.save_stats(stats::FoldMode::zero); !zeroed) {
        res.ok = false;
        res.error = zeroed.error();
      } else {
        res.ok = true;
      }
      break;
  }
  return res;
}

}  // namespace larder::core
