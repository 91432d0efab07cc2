// libFuzzer target: the shared strategy's wire decoder (requests and replies) on hostile bytes.
// Must never crash, leak or allocate beyond its bound; whatever decodes must encode back.
#include <cstdint>
#include <string>

#include "shared/protocol.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::string_view in(reinterpret_cast<const char*>(data), size);
  std::string error;
  larder::shared::Request q;
  if (larder::shared::decode(in, &q, &error)) (void)larder::shared::encode(q);
  larder::shared::Reply r;
  if (larder::shared::decode(in, &r, &error)) (void)larder::shared::encode(r);
  return 0;
}
