#include "shared/dispatch.hpp"

namespace larder::shared {

Reply dispatch(core::LocalService& l, const Request& q) {
  Reply r;
  r.id = q.id;
  std::visit(
      [&](const auto& o) {
        using Op = std::decay_t<decltype(o)>;
        if (const char* why = refusal(o)) {
          r.status = ReplyStatus::bad_request;
          r.error = fmt::format("{}: {}", Op::name, why);
          return;
        }
        r.result =
            encode_result(std::apply([&](const auto&... a) { return Op::run(l, a...); }, o.args()));
      },
      q.op);
  return r;
}

}  // namespace larder::shared
