// rapidjson, configured exactly as cereal's JSON archive configures it. rapidjson is header-only
// and its behaviour depends on macros (RAPIDJSON_ASSERT throws in cereal's configuration); every
// translation unit of one program must see the same definitions, or the linker keeps one copy of
// its inline functions for all (an ODR violation: cereal's parser would then abort instead of
// throwing). So code that uses rapidjson directly includes this header, never rapidjson's own.
// Thread-safety: as rapidjson (documents and writers are not shared between threads).
#pragma once

#include <cereal/archives/json.hpp>  // defines the RAPIDJSON_* configuration, then includes it

#include <rapidjson/document.h>
#include <rapidjson/prettywriter.h>
#include <rapidjson/stringbuffer.h>
#include <rapidjson/writer.h>
