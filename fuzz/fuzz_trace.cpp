// libFuzzer target: the trace readers (CSV and oracleGeneral) on hostile bytes.
#include <cstdint>
#include <sstream>
#include <string>

#include "trace/trace.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::string in(reinterpret_cast<const char*>(data), size);
  (void)larder::trace::read_oracle_general(in);
  std::istringstream csv(in);
  (void)larder::trace::read_csv(csv);
  return 0;
}
