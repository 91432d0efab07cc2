// One set of a 4 MiB value (bench/copies/run.sh): process_isolated or a shared cache's client.
#include <cstdio>
#include <larder/larder.hpp>
#include <string>
int main(int argc, char** argv) {
  larder::Config cfg;
  cfg.cache_root = argv[1];
  cfg.strategy = std::string(argv[2]) == "shared" ? larder::Strategy::shared
                                                  : larder::Strategy::process_isolated;
  cfg.max_size_bytes = 0;
  std::string value(4u << 20, 'v');
  auto c = larder::Cache::open(cfg);
  bool ok = c.set("big", value);
  std::fprintf(stderr, "set %d\n", ok);
}
