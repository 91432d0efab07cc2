// Typed values for a Cache: Cache::set_object / Cache::get_object, declared in larder.hpp and
// defined here, serialize with cereal's binary archive. Include this header (and have cereal on
// the include path) to use them; larder.hpp alone does not need cereal.
//
// Stored bytes are not trusted (another process or machine may have written them): get_object
// reads them with larder::BoundedInputArchive, which reads cereal's binary layout but refuses a
// size tag larger than the bytes left, so a value never makes the reader allocate more than a
// small multiple of its own size (a container of N elements needs at least N bytes).
//
// Thread-safety: as Cache::set and Cache::get. A BoundedInputArchive is used by one thread.
#pragma once

#include <cstring>
#include <sstream>
#include <string>
#include <string_view>
#include <type_traits>

#include <cereal/archives/binary.hpp>
#include <cereal/cereal.hpp>

#include "larder/larder.hpp"

namespace larder {

// Reads what cereal::BinaryOutputArchive wrote, from a byte string it does not own. Every read
// is checked against the bytes left; a size tag (the element count of a container or string)
// larger than the bytes left throws cereal::Exception before anything is allocated for it.
class BoundedInputArchive
    : public cereal::InputArchive<BoundedInputArchive, cereal::AllowEmptyClassElision> {
 public:
  explicit BoundedInputArchive(std::string_view bytes)
      : cereal::InputArchive<BoundedInputArchive, cereal::AllowEmptyClassElision>(this),
        bytes_(bytes) {}

  // Copies the next `size` bytes into `data`; throws cereal::Exception when fewer are left.
  void loadBinary(void* data, std::size_t size) {
    if (size > bytes_.size()) throw_short("the value", size);
    if (size != 0) std::memcpy(data, bytes_.data(), size);
    bytes_.remove_prefix(size);
  }
  // Reads a size tag; throws cereal::Exception when it declares more elements than bytes are
  // left (every element of a serialized container takes at least one byte).
  template <class T>
  void loadSize(T& size) {
    std::uint64_t n = 0;
    loadBinary(&n, sizeof(n));
    if (n > bytes_.size()) throw_short("a size tag", n);
    size = static_cast<T>(n);
  }
  std::size_t remaining() const { return bytes_.size(); }

 private:
  [[noreturn]] void throw_short(const char* what, std::uint64_t wanted) const {
    throw cereal::Exception(std::string(what) + " declares " + std::to_string(wanted) +
                            " bytes or elements, but only " + std::to_string(bytes_.size()) +
                            " bytes are left");
  }
  std::string_view bytes_;
};

template <class T>
inline std::enable_if_t<std::is_arithmetic_v<T>> CEREAL_LOAD_FUNCTION_NAME(BoundedInputArchive& ar,
                                                                           T& t) {
  ar.loadBinary(std::addressof(t), sizeof(t));
}
template <class T>
inline void CEREAL_SERIALIZE_FUNCTION_NAME(BoundedInputArchive& ar, cereal::NameValuePair<T>& t) {
  ar(t.value);
}
template <class T>
inline void CEREAL_SERIALIZE_FUNCTION_NAME(BoundedInputArchive& ar, cereal::SizeTag<T>& t) {
  ar.loadSize(t.size);
}
template <class T>
inline void CEREAL_LOAD_FUNCTION_NAME(BoundedInputArchive& ar, cereal::BinaryData<T>& bd) {
  ar.loadBinary(bd.data, static_cast<std::size_t>(bd.size));
}

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
    BoundedInputArchive archive(*bytes);
    T value{};
    archive(value);
    return value;
  } catch (const std::exception& e) {  // cereal::Exception, or bad_alloc for a huge element
    count_decode_error(key, e.what());
    return std::nullopt;
  }
}

}  // namespace larder

CEREAL_REGISTER_ARCHIVE(larder::BoundedInputArchive)
// Reads what BinaryOutputArchive writes (load_minimal needs the pairing; BinaryOutputArchive's
// own input archive stays cereal's, so only this direction is declared).
namespace cereal::traits::detail {
template <>
struct get_output_from_input<larder::BoundedInputArchive> {
  using type = cereal::BinaryOutputArchive;
};
}  // namespace cereal::traits::detail
