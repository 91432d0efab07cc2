// Uses the installed public API only: a memory cache, a set, a get and an incr. Prints "ok".
#include <larder/larder.hpp>

#include <cstdio>

int main() {
  larder::Cache cache = larder::create_memory_cache();
  if (!cache.set("k", "v") || cache.get("k") != "v") return 1;
  if (cache.incr("n", 41) != 41 || cache.incr("n") != 42) return 1;
  std::puts("ok");
  return 0;
}
