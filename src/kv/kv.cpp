#include "kv/kv.hpp"

namespace larder::kv {

std::string or_byte_operand(std::uint32_t offset, std::uint8_t bits) {
  std::string s(kOrByteSize, '\0');
  s[0] = static_cast<char>(kOrByteFormat);
  for (int i = 0; i < 4; ++i) s[1 + i] = static_cast<char>((offset >> (8 * i)) & 0xff);
  s[5] = static_cast<char>(bits);
  return s;
}

bool decode_or_byte(std::string_view operand, std::uint32_t* offset, std::uint8_t* bits) {
  if (operand.size() != kOrByteSize || static_cast<std::uint8_t>(operand[0]) != kOrByteFormat)
    return false;
  *offset = 0;
  for (int i = 0; i < 4; ++i)
    *offset |= static_cast<std::uint32_t>(static_cast<std::uint8_t>(operand[1 + i])) << (8 * i);
  *bits = static_cast<std::uint8_t>(operand[5]);
  return true;
}

bool apply_or_byte(std::string_view operand, std::string* value) {
  std::uint32_t offset = 0;
  std::uint8_t bits = 0;
  if (!decode_or_byte(operand, &offset, &bits)) {
    value->clear();
    return false;
  }
  if (offset >= value->size()) {
    value->clear();
    return true;
  }
  (*value)[offset] = static_cast<char>(static_cast<std::uint8_t>((*value)[offset]) | bits);
  return true;
}

}  // namespace larder::kv
