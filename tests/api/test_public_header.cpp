// The public header is the API and nothing else: it must compile on its own, without cereal
// (set_object/get_object live in larder/object.hpp). This file includes it first and alone; the
// build fails here if larder.hpp pulls cereal in again.
#include "larder/larder.hpp"

#if defined(CEREAL_CEREAL_HPP_) || defined(CEREAL_ARCHIVES_BINARY_HPP_)
#error "larder/larder.hpp includes cereal; keep cereal in larder/object.hpp"
#endif

#include <doctest/doctest.h>

TEST_CASE("larder.hpp alone gives a usable cache (no cereal, no internal types)") {
  larder::Cache c = larder::create_memory_cache();
  CHECK(c.set("k", "v"));
  CHECK(c.get("k") == "v");
}
