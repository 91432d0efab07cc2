// The engine: verify, every invariant between the store and the index checked.
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

// ---------------------------------------------------------------- verify

Status Engine::verify(VerifyReport* report) {
  const auto lock = foreground_lock();
  if (Status s = flush_access_locked(); !s.ok()) return s;
  *report = {};
  auto problem = [&](std::string line) {
    if (report->problems.size() < 1000) report->problems.push_back(std::move(line));
  };
  for (const std::string& p : open_problems_) problem(p);
  std::map<std::string, std::uint64_t> cats;
  bool access_damaged = false;
  Status failure;
  Status scanned = for_each_page(*kv_, Cf::entries, [&](const Page& page) {
    for (const auto& [key, record] : page) {
      EntryHeader h;
      std::size_t offset = 0;
      if (!decode_entry(record, &h, &offset)) {
        problem(fmt::format("entry '{}': undecodable record", key));
        continue;
      }
      const std::uint64_t size = record.size() - offset;
      ++report->entries;
      report->bytes += size;
      ++cats[h.category];
      const bool want_expiry = h.invalid() || h.ttl_ms > 0;
      const std::uint64_t want_t =
          h.invalid() ? 0
          : h.ttl_ms > 0
              ? expiry_time(deadlines(h.created_ns, h.ttl_ms, options_.stale_factor).expired_at)
              : 0;
      auto node = index_.find(key);
      if (node == index_.end()) {
        problem(fmt::format("entry '{}': not in the in-memory index", key));
      } else {
        const Node& n = node->second;
        if (n.size != size || *n.category != h.category || n.has_expiry != want_expiry ||
            (want_expiry && n.expiry_t != want_t))
          problem(fmt::format("entry '{}': the in-memory index does not match the entry", key));
      }
      if (access_damaged || !durable_) continue;
      std::string bytes_a;
      Status s = kv_->get(Cf::access, key, &bytes_a);
      if (s.code == Code::corruption) {
        problem(fmt::format("the access family cannot be read ({}); verify --repair rebuilds it",
                            s.message));
        access_damaged = true;
        continue;
      }
      if (s.not_found()) {
        problem(fmt::format("entry '{}': no access record", key));
        continue;
      }
      if (!s.ok()) {
        failure = s;
        return s;
      }
      AccessRecord a;
      if (!decode_access(bytes_a, &a)) {
        problem(fmt::format("entry '{}': undecodable access record", key));
        continue;
      }
      if (a.size != size)
        problem(fmt::format("entry '{}': access record says {} bytes, value has {}", key, a.size,
                            size));
      if (a.category != h.category)
        problem(fmt::format("entry '{}': access record says category '{}', entry '{}'", key,
                            a.category, h.category));
      if (a.has_expiry != want_expiry || (want_expiry && a.expiry_t != want_t))
        problem(
            fmt::format("entry '{}': access record's expiry does not match its ttl/status", key));
      if (node != index_.end()) {
        const Node& n = node->second;
        const Node want_node = load_node(a);  // as the index loads it (the policy's place too)
        if (n.last_tick != a.last_tick || n.access_count != a.access_count ||
            n.insert_tick != a.insert_tick || !policy_->same_place(n, want_node))
          problem(
              fmt::format("entry '{}': the in-memory index and the access record disagree "
                          "on its access history",
                          key));
      }
    }
    return Status();
  });
  if (failure.failed()) return failure;
  if (!scanned.ok()) return scanned;
  std::uint64_t n = 0;
  if (!access_damaged && durable_) {
    Status st = kv_->scan(Cf::access, "", "", [&](std::string_view, std::string_view) {
      ++n;
      return true;
    });
    if (st.code == Code::corruption)
      problem(fmt::format("the access family cannot be read ({}); verify --repair rebuilds it",
                          st.message));
    else if (!st.ok())
      return st;
    else if (n != report->entries)
      problem(fmt::format("{} access records for {} entries", n, report->entries));
  }
  // The index's own structures.
  if (index_.size() != report->entries)
    problem(fmt::format("the in-memory index holds {} keys for {} entries", index_.size(),
                        report->entries));
  std::uint64_t with_expiry = 0;
  for (const auto& [key, node] : index_) with_expiry += node.has_expiry ? 1 : 0;
  policy_->verify(problem);
  if (expiry_.size() != with_expiry)
    problem(fmt::format("the expiry order holds {} keys for {} with a ttl or invalid",
                        expiry_.size(), with_expiry));
  std::map<std::string, std::uint64_t> index_cats(cats_.begin(), cats_.end());
  if (index_cats != cats) problem("per-category counts do not match the entries");
  // Counters as stored (not only as held in memory).
  std::string totals_bytes;
  if (!durable_) {
    // Not kept in a store that ends with the process: the in-memory totals are checked below.
  } else if (Status s = kv_->get(Cf::counters, kTotalsKey, &totals_bytes);
             s.ok() && totals_bytes.size() == 24) {
    if (get_le64(totals_bytes) != report->entries ||
        get_le64(totals_bytes.substr(8)) != report->bytes)
      problem(fmt::format("counters say {} entries / {} bytes, the store holds {} / {}",
                          get_le64(totals_bytes), get_le64(totals_bytes.substr(8)), report->entries,
                          report->bytes));
  } else {
    problem("the totals counter is missing or malformed");
  }
  for (const Cf cf : {Cf::order, Cf::expiry, Cf::category}) {
    bool any = false;
    Status st = kv_->scan(cf, "", "", [&](std::string_view, std::string_view) {
      any = true;
      return false;
    });
    if (!st.ok() || any)
      problem(fmt::format("the retired {} family is not empty; verify --repair empties it",
                          kv::to_string(cf)));
  }
  if (entries_.load() != report->entries || bytes_.load() != report->bytes)
    problem("in-memory totals do not match the store");
  return Status();
}

}  // namespace larder::engine
