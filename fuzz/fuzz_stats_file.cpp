// libFuzzer target: the statistics file parser (.cache_stats.json) on hostile bytes.
#include <cstdint>
#include <string>

#include "stats/stats_file.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::string in(reinterpret_cast<const char*>(data), size);
  if (auto s = larder::stats::from_json(in)) (void)larder::stats::to_json(*s);
  return 0;
}
