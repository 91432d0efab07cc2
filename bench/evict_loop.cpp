// larder-evict-loop: sets of 1 KB values into a cache held at its entry limit (every set
// evicts), or with no limit; prints sets per second. Run by hand to compare builds of the
// eviction path (docs/performance.md):   larder-evict-loop [--at-limit] [--dir DIR]
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <string>

#include <fmt/format.h>

#include "larder/larder.hpp"

int main(int argc, char** argv) {
  namespace fs = std::filesystem;
  bool at_limit = false;
  fs::path base = "/tmp";
  for (int i = 1; i < argc; ++i) {
    if (std::strcmp(argv[i], "--at-limit") == 0) {
      at_limit = true;
    } else if (std::strcmp(argv[i], "--dir") == 0 && i + 1 < argc) {
      base = argv[++i];
    } else {
      std::fprintf(stderr, "usage: larder-evict-loop [--at-limit] [--dir DIR]\n");
      return 2;
    }
  }
  const fs::path root = base / fmt::format("larder-evict-loop-{}", ::getpid());
  fs::remove_all(root);
  fs::create_directories(root);
  fs::permissions(root, fs::perms::owner_all);
  constexpr int kFill = 5000, kSets = 100'000;
  double per_second = 0;
  {
    larder::Config c;
    c.cache_root = root;
    c.max_entries = at_limit ? kFill : 0;
    c.max_size_bytes = 0;
    c.cleanup_interval = std::chrono::seconds(0);
    larder::Cache cache = larder::Cache::open(c);
    const std::string value(1000, 'v');
    for (int i = 0; i < kFill; ++i) cache.set(fmt::format("fill{:08}", i), value);
    const auto t0 = std::chrono::steady_clock::now();
    for (int i = 0; i < kSets; ++i) cache.set(fmt::format("key{:08}", (i * 7919) % kSets), value);
    per_second =
        kSets / std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  }
  fs::remove_all(root);
  std::printf("%.0f sets/s (%s)\n", per_second, at_limit ? "at the limit" : "no limit");
  return 0;
}
