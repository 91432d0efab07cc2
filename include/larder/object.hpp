// Typed values for a Cache: Cache::set_object / Cache::get_object, declared in larder.hpp and
// defined here, serialize with cereal's binary archive. Include this header (and have cereal on
// the include path) to use them; larder.hpp alone does not need cereal.
//
// Thread-safety: as Cache::set and Cache::get.
#pragma once

#include <sstream>

#include <cereal/archives/binary.hpp>

#include "larder/larder.hpp"

namespace larder {

template <class T>
bool Cache::set_object(std::string_view key, const T& value, const SetOptions& options) {
  std::ostringstream out(std::ios::binary);
  {
    cereal::BinaryOutputArchive archive(out);
    archive(value);
  }
  return set(key, out.str(), options);
}

template <class T>
std::optional<T> Cache::get_object(std::string_view key) {
  std::optional<std::string> bytes = get(key);
  if (!bytes) return std::nullopt;
  try {
    std::istringstream in(*bytes, std::ios::binary);
    cereal::BinaryInputArchive archive(in);
    T value{};
    archive(value);
    return value;
  } catch (const std::exception& e) {
    count_decode_error(key, e.what());
    return std::nullopt;
  }
}

}  // namespace larder
