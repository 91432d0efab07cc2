// libFuzzer target: the shared strategy's wire decoder (requests, replies and the results a
// client decodes from a reply) on hostile bytes. Must never crash, leak or allocate beyond its
// bound; whatever decodes must encode back.
#include <cstdint>
#include <string>

#include "shared/protocol.hpp"

namespace {

template <class R>
void result(std::string_view in) {
  R out{};
  std::string error;
  if (larder::shared::decode_result(in, &out, &error)) (void)larder::shared::encode_result(out);
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::string_view in(reinterpret_cast<const char*>(data), size);
  std::string error;
  larder::shared::Request q;
  if (larder::shared::decode(in, &q, &error)) (void)larder::shared::encode(q);
  larder::shared::Reply r;
  if (larder::shared::decode(in, &r, &error)) (void)larder::shared::encode(r);
  // Every result type of the operation table, as a client decodes a reply's result.
  [&]<std::size_t... I>(std::index_sequence<I...>) {
    (result<typename std::variant_alternative_t<I, larder::shared::Operation>::Result>(in), ...);
  }
  (std::make_index_sequence<std::variant_size_v<larder::shared::Operation>>());
  return 0;
}
