// core::CacheDir (cache_dir.hpp).
#include "core/cache_dir.hpp"

#include <fmt/format.h>

#include "larder/larder.hpp"

namespace larder::core {

void CacheDir::check_root(const Resolved& r) {
  if (auto safe = util::check_private_directory(r.root); !safe)
    throw ConfigError(fmt::format("cache_root: {}", safe.error()));
}

util::Status CacheDir::open(Resolved& r, util::Symlinks symlinks) {
  if (auto made = util::create_private_directories(r.dir, symlinks); !made) return made;
  if (auto safe = util::check_private_directory(r.dir); !safe)
    throw ConfigError(fmt::format("cache_root: {}", safe.error()));
  if (r.pinned && r.pinned->dir() == r.dir) return {};  // pinned already (the shared node)
  auto pin = util::PinnedDir::open(r.dir);
  if (!pin) return pin.status();
  r.pinned = std::move(*pin);
  return {};
}

std::unique_ptr<stats::CounterFile> CacheDir::counter_file(const Resolved& r,
                                                           const util::Logger& log,
                                                           stats::Counters& local) {
  if (!r.config.enable_statistics) return nullptr;
  auto file = stats::CounterFile::create(r.io());
  if (file) return std::move(*file);
  log.logf(util::Level::warn, "statistics are kept in memory only: {}", file.error());
  local.error++;
  return nullptr;
}

}  // namespace larder::core
