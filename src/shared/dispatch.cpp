#include "shared/dispatch.hpp"

#include <algorithm>

#include <fmt/format.h>

#include "core/service.hpp"

namespace larder::shared {

Reply dispatch(core::LocalService& l, const Request& q) {
  Reply r;
  r.id = q.id;
  auto bad = [&](std::string why) {
    r.status = ReplyStatus::bad_request;
    r.error = std::move(why);
    return r;
  };
  const auto settable = core::valid_set;
  const bool key_ok = core::valid_key(q.text);
  if (!core::valid_scope(q.scope)) return bad("scope is not a namespace's prefix");
  switch (q.opcode) {
    case Opcode::set:
      if (q.sets.size() != 1) return bad("set carries one item");
      r.flag = settable(q.sets[0]) && l.set(q.sets[0]);
      break;
    case Opcode::set_many:
      r.flags.reserve(q.sets.size());
      for (const auto& s : q.sets) r.flags.push_back(settable(s) && l.set(s));
      break;
    case Opcode::add:
      if (q.sets.size() != 1) return bad("add carries one item");
      r.flag = settable(q.sets[0]) && l.add(q.sets[0]);
      break;
    case Opcode::touch:
      if (q.number < 0) return bad("touch: negative ttl");
      r.flag = key_ok && l.touch(q.text, q.number);
      break;
    case Opcode::incr: {
      if (q.sets.size() != 1) return bad("incr carries one item");
      const auto v = settable(q.sets[0]) ? l.incr(q.sets[0], q.number) : std::nullopt;
      r.flag = v.has_value();
      r.count = static_cast<std::uint64_t>(v.value_or(0));
      break;
    }
    case Opcode::set_all:
      // All or nothing: one invalid item refuses the batch.
      r.flag = std::all_of(q.sets.begin(), q.sets.end(), settable) && l.set_all(q.sets);
      break;
    case Opcode::lease_acquire: {
      if (!key_ok || q.holder <= 0) return bad("lease_acquire needs a key and a holder pid");
      std::int64_t wait = 0;
      r.flag = l.acquire_lease(q.text, q.holder, q.number, &wait);
      r.count = static_cast<std::uint64_t>(std::max<std::int64_t>(wait, 0));
      break;
    }
    case Opcode::lease_release:
      if (key_ok) l.release_lease(q.text, q.holder);
      break;
    case Opcode::events: {
      const auto max =
          static_cast<std::size_t>(std::clamp<std::int64_t>(q.holder, 1, kMaxEventsPerReply));
      core::EventBatch b = l.events_since(static_cast<std::uint64_t>(q.number), max);
      r.value.emplace();
      r.strings.reserve(b.events.size());
      for (auto& e : b.events) {
        r.value->push_back(static_cast<char>(e.kind));
        r.strings.push_back(std::move(e.key));
      }
      r.count = b.next;
      r.fields["dropped"] = std::to_string(b.dropped);
      break;
    }
    case Opcode::get:
      r.value = l.get(q.text);
      break;
    case Opcode::get_many: {
      // Answer a prefix that fits one frame; r.count says how many (the client asks again for
      // the rest). The prefix ends once its values reach kMaxGetManyReplyBytes, so every key
      // answered is counted once and no key left out is counted. (A single value larger than a
      // frame minus that budget still makes the reply too large: it is refused then.)
      std::uint64_t bytes = 0;
      for (const auto& key : q.keys) {
        r.values.push_back(l.get(key));
        if (r.values.back()) bytes += r.values.back()->size();
        if (bytes >= kMaxGetManyReplyBytes) break;
      }
      r.count = r.values.size();
      break;
    }
    case Opcode::peek:
      if (key_ok) r.value = l.peek(q.text);
      break;
    case Opcode::get_entry:
      r.entry = l.get_entry(q.text, q.flag);
      break;
    case Opcode::exists:
      r.flag = key_ok && l.exists(q.text);
      break;
    case Opcode::metadata:
      if (key_ok) r.info = l.metadata(q.text);
      break;
    case Opcode::remove:
      r.flag = key_ok && l.remove(q.text);
      break;
    case Opcode::invalidate:
      r.flag = key_ok && l.invalidate(q.text);
      break;
    case Opcode::clear:
      r.count = l.clear(q.scope);
      break;
    case Opcode::clear_category:
      r.count = l.clear_category(q.text, q.scope);
      break;
    case Opcode::invalidate_category:
      r.count = l.invalidate_category(q.text, q.scope);
      break;
    case Opcode::invalidate_pattern:
      if (q.text.empty()) return bad("empty pattern");
      r.count = l.invalidate_pattern(q.text, q.scope);
      break;
    case Opcode::keys:
      r.strings = l.keys(q.scope);
      break;
    case Opcode::keys_in_category:
      r.strings = l.keys_in_category(q.text, q.scope);
      break;
    case Opcode::cleanup:
      r.count = l.cleanup();
      break;
    case Opcode::stats:
      r.stats = l.stats();
      break;
    case Opcode::flush:
      l.flush();
      break;
    case Opcode::inspect:
      r.entries = l.inspect(q.keys, q.flag);
      break;
    case Opcode::admin: {
      if (q.code < 1 || q.code > core::kLastAdminCommand)
        return bad(fmt::format("unknown maintenance operation {}", q.code));
      core::AdminResult a = l.admin(static_cast<core::AdminCommand>(q.code), q.number);
      r.flag = a.ok;
      r.error = std::move(a.error);
      r.count = a.count;
      r.strings = std::move(a.lines);
      r.fields = std::move(a.fields);
      break;
    }
  }
  return r;
}

}  // namespace larder::shared
