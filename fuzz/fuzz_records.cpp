// libFuzzer target: the store's record decoders (entry header, entry times, access record) on
// hostile bytes, as a damaged store would hand them over.
#include <cstdint>
#include <string>

#include "engine/records.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::string_view in(reinterpret_cast<const char*>(data), size);
  larder::engine::EntryHeader h;
  std::size_t offset = 0;
  if (larder::engine::decode_entry(in, &h, &offset) && offset > in.size()) __builtin_trap();
  std::uint8_t flags = 0;
  std::int64_t created = 0, ttl = 0;
  (void)larder::engine::decode_entry_times(in, &flags, &created, &ttl);
  larder::engine::AccessRecord a;
  (void)larder::engine::decode_access(in, &a);
  return 0;
}
