// libFuzzer target: the counter-file loader (another process's .stats/<id>.cnt) on hostile bytes.
#include <cstdint>
#include <string>

#include "stats/counter_file.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  (void)larder::stats::decode_counter_file(
      std::string_view(reinterpret_cast<const char*>(data), size));
  return 0;
}
