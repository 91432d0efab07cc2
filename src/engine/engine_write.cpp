// The engine: writes (sets, removals, invalidation, eviction, limits, cleanup) and their commit.
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

// ---------------------------------------------------------------- writes

bool Engine::over_limits(const Txn& t) const {
  const auto e = static_cast<std::int64_t>(entries_.load()) + t.d_entries;
  const auto b = static_cast<std::int64_t>(bytes_.load()) + t.d_bytes;
  return (max_entries() != 0 && e > static_cast<std::int64_t>(max_entries())) ||
         (max_bytes() != 0 && b > static_cast<std::int64_t>(max_bytes()));
}

Txn Engine::new_txn() {
  return Txn(*kv_, *policy_);
}

void Engine::remove_in_txn(Txn& t, std::string_view key, const Node& node, EventKind why) {
  t.batch->del(Cf::entries, key);
  if (durable_) t.batch->del(Cf::access, key);
  t.d_entries -= 1;
  t.d_bytes -= static_cast<std::int64_t>(node.size);
  policy_->removing(node);
  t.add_removed(key, why);
  t.totals_dirty = true;
}

void Engine::evict_locked(Txn& t, std::int64_t now_ns, const Keep& keep) {
  apply_pending_locked();  // victims by every hit so far
  const auto now = static_cast<std::uint64_t>(std::max<std::int64_t>(now_ns, 0));
  for (const auto& [when, id] : expiry_) {
    if (!over_limits(t) || when > now) break;
    const Slot& slot = index_.slot(id);
    if (keep(slot.first) || t.removes(slot.first)) continue;
    remove_in_txn(t, slot.first, slot.second, when != 0 ? EventKind::expire : EventKind::remove);
    // An invalid entry was counted when it was invalidated; an expired one counts now.
    if (when != 0) ++t.expirations;
  }
  if (over_limits(t)) policy_->victims(t, keep);
}

Status Engine::commit(Txn& t) {
  std::int64_t d_entries = t.d_entries, d_bytes = t.d_bytes;
  if (t.totals_dirty && durable_) {
    const auto e =
        static_cast<std::uint64_t>(static_cast<std::int64_t>(entries_.load()) + d_entries);
    const auto b = static_cast<std::uint64_t>(static_cast<std::int64_t>(bytes_.load()) + d_bytes);
    t.batch->put(Cf::counters, kTotalsKey, totals(e, b, tick_.load()));
  }
  if (t.watermark)
    t.batch->put(Cf::counters, kWatermarkKey, le64(static_cast<std::uint64_t>(*t.watermark)));
  policy_->stage(t);
  if (t.batch->count() == 0) return Status();
  const bool relabel = format_relabel_;  // before the batch's entries or merge operands land
  if (relabel) t.batch->put(Cf::counters, kFormatKey, le64(kStoreFormat));
  if (Status s = kv_->write(*t.batch); !s.ok()) return s;
  if (relabel) format_relabel_ = false;
  if (sink_ != nullptr && sink_->wants_events()) {
    for (std::size_t i = 0; i < t.removed.size(); ++i)
      sink_->on_event(t.removed_why[i], t.removed[i]);
    for (const Staged& st : t.staged) sink_->on_event(st.kind, st.key);
  }
  policy_->commit(t);
  for (const std::string& key : t.removed)
    if (auto it = index_.find(key); it != index_.end()) erase_node(it);
  for (Staged& st : t.staged) {
    if (st.kind == EventKind::invalidate) {
      // Only the expiry order changes (to the invalid position): eviction order and category stay.
      auto it = index_.find(st.key);
      Node& n = it->second;
      if (n.has_expiry) expiry_.erase({n.expiry_t, it.id()});
      n.has_expiry = true;
      n.expiry_t = 0;
      expiry_.emplace(0, it.id());
    } else {
      upsert_node(st.key, st.node, st.category);
    }
    // The node is what was just written: no hit of it is left to persist.
    if (!dirty_.empty() && dirty_.erase(st.key) > 0)
      dirty_size_.fetch_sub(1, std::memory_order_relaxed);
  }
  if (t.watermark) watermark_->store(*t.watermark);
  if (t.evictions != 0) counters_->eviction += t.evictions;
  if (t.expirations != 0) counters_->expiration += t.expirations;
  if (t.invalidations != 0) counters_->invalidation += t.invalidations;
  return Status();
}

Status Engine::set(std::string_view key, std::string_view value, std::int64_t ttl_ms,
                   std::string_view category, const std::map<std::string, std::string>& metadata,
                   std::int64_t now_ns, SetOutcome* outcome) {
  const SetItem item{key, value, ttl_ms, category, &metadata, std::nullopt};
  if (max_bytes() != 0 && value.size() > max_bytes()) {
    *outcome = SetOutcome::too_large;
    return Status();
  }
  const auto lock = write_lock({&item, 1}, /*adds=*/true);
  return set_locked({&item, 1}, now_ns, outcome);
}

Status Engine::set_all(std::span<const SetItem> items, std::int64_t now_ns, SetOutcome* outcome) {
  // A key given twice is stored once, with its last item (as sets one after another would).
  absl::flat_hash_set<std::string_view, Hash, std::equal_to<>> seen;
  std::vector<SetItem> last;
  last.reserve(items.size());
  for (auto it = items.rbegin(); it != items.rend(); ++it) {
    if (max_bytes() != 0 && it->value.size() > max_bytes()) {
      *outcome = SetOutcome::too_large;
      return Status();
    }
    if (seen.insert(it->key).second) last.push_back(*it);
  }
  std::reverse(last.begin(), last.end());
  *outcome = SetOutcome::stored;
  if (last.empty()) return Status();
  const auto lock = write_lock(last, /*adds=*/true);
  return set_locked(last, now_ns, outcome);
}

Status Engine::update(std::string_view key, std::int64_t now_ns,
                      const std::function<std::optional<Rewrite>(const Found*)>& decide,
                      SetOutcome* outcome) {
  const auto lock = foreground_lock();
  Found current;
  const Status s = read(key, now_ns, Want::value, &current);
  if (!s.ok() && !s.not_found()) return s;
  std::optional<Rewrite> w = decide(s.ok() ? &current : nullptr);
  if (!w) {
    *outcome = SetOutcome::skipped;
    return Status();
  }
  if (max_bytes() != 0 && w->value.size() > max_bytes()) {
    *outcome = SetOutcome::too_large;
    return Status();
  }
  const SetItem item{key, w->value, w->ttl_ms, w->category, &w->metadata, w->created_ns};
  return set_locked({&item, 1}, now_ns, outcome);
}

Status Engine::fill(std::span<const SetItem> items, std::int64_t now_ns) {
  const auto lock = foreground_lock();
  std::vector<SetItem> todo;
  todo.reserve(items.size());
  for (const SetItem& item : items) {
    if (!value_fits(item.value.size())) continue;
    if (!index_.contains(item.key)) {  // the index holds every stored key: none is
      todo.push_back(item);
      continue;
    }
    Found current;
    const Status s = read(item.key, now_ns, Want::header, &current);
    if (s.ok() && current.status == EntryStatus::fresh) continue;  // a newer local write
    if (s.code == Code::corruption) continue;                      // left for a read to drop
    if (!s.ok() && !s.not_found()) return s;
    todo.push_back(item);
  }
  if (todo.empty()) return Status();
  SetOutcome outcome = SetOutcome::full;
  return set_locked(todo, now_ns, &outcome);
}

// Stores `items` (distinct keys, each within the byte limit) in one transaction. Under mu_.
Status Engine::set_locked(std::span<const SetItem> items, std::int64_t now_ns,
                          SetOutcome* outcome) {
  // LRU and LFU: hits recorded before this set go into the lists first, so that they land near
  // their list's tail (the set's node lands at its list's tail).
  if (policy_->hits_reorder()) apply_pending_locked();
  Txn t = new_txn();
  t.totals_dirty = true;
  // Where each new key goes, asked before any eviction (S3-FIFO looks it up in its ghosts).
  absl::InlinedVector<Place, 1> places;
  places.reserve(items.size());
  // Each key's node before the set (end() for a new key). Planning leaves the index as it is,
  // so these stay valid until the commit.
  absl::InlinedVector<Index::iterator, 1> olds;
  olds.reserve(items.size());
  for (const SetItem& item : items) {
    const auto old = olds.emplace_back(index_.find(item.key));
    const bool had_old = old != index_.end();
    t.d_entries += had_old ? 0 : 1;
    t.d_bytes += static_cast<std::int64_t>(item.value.size()) -
                 (had_old ? static_cast<std::int64_t>(old->second.size) : 0);
    places.push_back(had_old ? Place{} : policy_->admit(t, item.key, item.value.size()));
  }
  if (over_limits(t)) {
    absl::flat_hash_set<std::string_view, Hash, std::equal_to<>> batch_keys;
    if (items.size() > 1)
      for (const SetItem& item : items) batch_keys.insert(item.key);
    const Keep keep{items[0].key, items.size() > 1 ? &batch_keys : nullptr};
    evict_locked(t, now_ns, keep);
    if (over_limits(t)) {
      *outcome = SetOutcome::full;
      return Status();
    }
  }

  t.staged.reserve(items.size());
  for (std::size_t i = 0; i < items.size(); ++i) {
    const SetItem& item = items[i];
    const Pending pending = take_pending(item.key);
    const std::uint64_t tick = tick_.fetch_add(1) + 1;
    const auto old = olds[i];
    Node a;
    if (old != index_.end()) {
      a = old->second;  // an overwrite counts as a hit
      a.access_count += pending.count + 1;
      policy_->rewritten(a, pending.count + 1);
    } else {
      a.access_count = 1;
      a.insert_tick = tick;
      policy_->placed(a, places[i], tick);
    }
    a.last_tick = tick;
    a.last_access_ns = now_ns;
    a.size = item.value.size();
    a.has_expiry = false;
    a.expiry_t = 0;
    a.stale_t = 0;
    const std::int64_t created_ns = item.created_ns.value_or(now_ns);
    if (item.ttl_ms > 0) {
      const Deadlines d = deadlines(created_ns, item.ttl_ms, options_.stale_factor);
      a.has_expiry = true;
      a.expiry_t = expiry_time(d.expired_at);
      a.stale_t = static_cast<std::uint64_t>(std::max<std::int64_t>(d.stale_at, 0));
      if (d.expired_at < watermark_->load() &&
          (!t.watermark || d.expired_at < *t.watermark))  // keep the filter off it
        t.watermark = d.expired_at;
    }

    entry_head_.clear();
    append_entry_head(&entry_head_, 0, created_ns, std::max<std::int64_t>(item.ttl_ms, 0),
                      item.category, item.metadata);
    t.batch->put_parts(Cf::entries, item.key, entry_head_, item.value);
    if (durable_) t.batch->put(Cf::access, item.key, encode_access(record_of(a, item.category)));
    t.staged.push_back({std::string(item.key), a, std::string(item.category), EventKind::set});
  }
  if (Status s = commit(t); !s.ok()) return s;
  *outcome = SetOutcome::stored;
  return Status();
}

Status Engine::set_limits(std::optional<std::uint64_t> max_entries,
                          std::optional<std::uint64_t> max_bytes, std::int64_t now_ns,
                          std::size_t* evicted) {
  const auto lock = foreground_lock();
  return apply_limits_locked(max_entries.value_or(this->max_entries()),
                             max_bytes.value_or(this->max_bytes()), true, now_ns, evicted);
}

Status Engine::reset_limits(std::int64_t now_ns, std::size_t* evicted) {
  const auto lock = foreground_lock();
  return apply_limits_locked(options_.max_entries, options_.max_bytes, false, now_ns, evicted);
}

Status Engine::apply_limits_locked(std::uint64_t max_entries, std::uint64_t max_bytes, bool admin,
                                   std::int64_t now_ns, std::size_t* evicted) {
  *evicted = 0;
  auto batch = kv_->new_batch();
  if (admin)
    batch->put(Cf::counters, kAdminLimitsKey, encode_admin_limits(max_entries, max_bytes));
  else
    batch->del(Cf::counters, kAdminLimitsKey);
  batch->put(Cf::counters, kLimitsKey, limits_record(max_entries, max_bytes));
  if (Status s = kv_->write(*batch); !s.ok()) return s;
  max_entries_.store(max_entries);
  max_bytes_.store(max_bytes);
  admin_limits_.store(admin);
  // Down to the new limits at once, as a set would: expired and invalid entries first.
  Txn t = new_txn();
  if (!over_limits(t)) return Status();
  evict_locked(t, now_ns, Keep{});
  *evicted = t.removed.size();
  return commit(t);
}

Status Engine::remove_locked(std::string_view key, bool* removed) {
  *removed = false;
  auto it = index_.find(key);
  if (it == index_.end()) return Status();
  take_pending(key);
  Txn t = new_txn();
  remove_in_txn(t, it->first, it->second);
  if (Status s = commit(t); !s.ok()) return s;
  *removed = true;
  return Status();
}

Status Engine::remove(std::string_view key, bool* removed) {
  const SetItem item{key, {}, 0, {}, nullptr, std::nullopt};
  const auto lock = write_lock({&item, 1}, /*adds=*/false);
  return remove_locked(key, removed);
}

Status Engine::drop_corrupt(std::string_view key) {
  const auto lock = foreground_lock();
  if (auto it = index_.find(key); it != index_.end()) {
    take_pending(key);
    Txn t = new_txn();
    remove_in_txn(t, it->first, it->second);
    return commit(t);
  }
  auto batch = kv_->new_batch();
  batch->del(Cf::entries, key);
  batch->del(Cf::access, key);
  log_->logf(util::Level::warn, "dropped the records of '{}' without index data; run a verify",
             key);
  return kv_->write(*batch);
}

Status Engine::remove_keys(const std::vector<std::string>& keys, std::size_t* removed) {
  *removed = 0;
  for (std::size_t i = 0; i < keys.size(); i += kRemovePage) {
    const auto lock = page_lock();
    Txn t = new_txn();
    for (std::size_t j = i; j < std::min(keys.size(), i + kRemovePage); ++j) {
      auto it = index_.find(keys[j]);
      if (it == index_.end() || t.removes(keys[j])) continue;
      take_pending(keys[j]);
      remove_in_txn(t, it->first, it->second);
    }
    const std::size_t n = t.removed.size();
    if (Status s = commit(t); !s.ok()) return s;
    *removed += n;
  }
  return Status();
}

Status Engine::remove_if(const std::function<bool(std::string_view)>& doomed,
                         std::size_t* removed) {
  *removed = 0;
  for (;;) {  // each page starts again from the first key: the removed ones are gone
    const auto lock = page_lock();
    Txn t = new_txn();
    for (auto it = index_.begin(); it != index_.end() && t.removed.size() < kRemovePage; ++it) {
      if (!doomed(it->first)) continue;
      take_pending(it->first);
      remove_in_txn(t, it->first, it->second);
    }
    const std::size_t n = t.removed.size();
    if (Status s = commit(t); !s.ok()) return s;
    *removed += n;
    if (n < kRemovePage) return Status();
  }
}

// Blind writes only: the index knows whether the key is stored and already invalid (expiry_t 0),
// and the entry's flag is set by an or-byte merge, not by reading and rewriting the entry.
void Engine::invalidate_locked(Txn& t, std::string_view key) {
  auto it = index_.find(key);
  if (it == index_.end()) return;
  if (it->second.has_expiry && it->second.expiry_t == 0) return;  // already invalid
  Node a = it->second;
  a.has_expiry = true;
  a.expiry_t = 0;
  if (durable_) t.batch->put(Cf::access, key, encode_access(record_of(a, *it->second.category)));
  t.batch->or_byte(Cf::entries, key, kEntryFlagsOffset, kFlagInvalid);
  t.staged.push_back({std::string(key), {}, {}, EventKind::invalidate});  // commit: expiry only
  ++t.invalidations;
}

Status Engine::invalidate_keys(const std::vector<std::string>& keys, std::size_t* marked) {
  *marked = 0;
  for (std::size_t i = 0; i < keys.size(); i += kWritePage) {
    const auto lock = page_lock();
    apply_pending_locked();  // the access records written below carry every hit so far
    Txn t = new_txn();
    absl::flat_hash_set<std::string_view, Hash, std::equal_to<>> seen;
    for (std::size_t j = i; j < std::min(keys.size(), i + kWritePage); ++j) {
      if (!seen.insert(keys[j]).second) continue;
      invalidate_locked(t, keys[j]);
    }
    const std::uint64_t n = t.invalidations;
    if (Status s = commit(t); !s.ok()) return s;
    *marked += n;
  }
  return Status();
}

Status Engine::clear(std::size_t* removed) {
  const auto lock = foreground_lock();
  drain_pending();
  auto batch = kv_->new_batch();
  for (Cf cf : {Cf::entries, Cf::access, Cf::order, Cf::expiry, Cf::category})
    batch->delete_range(cf, "", "");
  batch->delete_range(Cf::counters, kGhostPrefix, kGhostEnd);  // clear forgets S3-FIFO's ghosts
  batch->put(Cf::counters, kTotalsKey, totals(0, 0, tick_.load()));
  if (Status s = kv_->write(*batch); !s.ok()) return s;
  *removed = entries_.load();
  if (sink_ != nullptr && sink_->wants_events())
    for (const auto& [key, node] : index_) sink_->on_event(EventKind::remove, key);
  clear_index();
  return Status();
}

Status Engine::cleanup(std::int64_t now_ns, std::size_t* removed) {
  *removed = 0;
  const auto now = static_cast<std::uint64_t>(std::max<std::int64_t>(now_ns, 0));
  // A page at a time, releasing the mutex between pages: other calls wait for one page at most.
  for (;;) {
    const auto lock = page_lock();
    Txn t = new_txn();
    for (const auto& [when, id] : expiry_) {
      if (when > now || t.removed.size() >= kRemovePage) break;
      const Slot& slot = index_.slot(id);
      take_pending(slot.first);
      remove_in_txn(t, slot.first, slot.second, when != 0 ? EventKind::expire : EventKind::remove);
      if (when != 0) ++t.expirations;
    }
    const bool last = t.removed.size() < kRemovePage;
    if (last) t.watermark = std::max(now_ns, watermark_->load());
    const std::size_t n = t.removed.size();
    if (Status s = commit(t); !s.ok()) return s;
    *removed += n;
    if (last) return Status();
  }
}

}  // namespace larder::engine
