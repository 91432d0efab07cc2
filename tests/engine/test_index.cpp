// engine::Index, the sharded key -> node map: every key found, iterated once and erased through
// its iterator, slots that stay in place while the shards grow.
#include <doctest/doctest.h>

#include <set>
#include <string>
#include <vector>

#include "engine/index.hpp"

using larder::engine::Index;
using larder::engine::Node;
using larder::engine::Slot;

TEST_CASE("index: find, iterate, erase across shards; slots do not move as shards grow") {
  Index index;
  CHECK(index.begin() == index.end());
  CHECK(index.size() == 0);
  auto [first, inserted] = index.try_emplace("k0");
  REQUIRE(inserted);
  first->second.size = 100;
  Slot* const pinned = &*first;
  for (int i = 1; i < 20000; ++i) {
    Node n;
    n.size = static_cast<std::uint64_t>(i) + 100;
    CHECK(index.emplace("k" + std::to_string(i), n).second);
  }
  CHECK_FALSE(index.emplace("k5", Node{}).second);  // present: not replaced
  CHECK_FALSE(index.try_emplace("k5").second);
  CHECK(index.size() == 20000);
  CHECK(&*index.find("k0") == pinned);  // grown many times, still in place
  CHECK(index.find("k0")->second.size == 100);
  CHECK(index.find("k19999")->second.size == 20099);
  CHECK(index.find("absent") == index.end());
  CHECK(index.contains("k123"));

  // Iteration visits every key once, over every shard.
  std::set<std::string> seen;
  std::size_t visits = 0;
  for (const Slot& s : index) {
    seen.emplace(s.first);
    ++visits;
  }
  CHECK(visits == 20000);
  CHECK(seen.size() == 20000);
  const Index& view = index;
  std::size_t const_visits = 0;
  for (auto it = view.begin(); it != view.end(); ++it) ++const_visits;
  CHECK(const_visits == 20000);

  // Erase through iterators, half of the keys.
  for (int i = 0; i < 20000; i += 2) index.erase(index.find("k" + std::to_string(i)));
  CHECK(index.size() == 10000);
  CHECK_FALSE(index.contains("k0"));
  CHECK(index.contains("k1"));
  std::size_t left = 0;
  for (const Slot& s : index)
    left += (std::stoi(std::string(s.first.view().substr(1))) % 2 == 1) ? 1 : 0;
  CHECK(left == 10000);
  index.clear();
  CHECK(index.size() == 0);
  CHECK(index.begin() == index.end());
}

TEST_CASE("index: an erased slot is reused; an index that empties gives its slab back") {
  Index index;
  for (int i = 0; i < 3000; ++i) index.try_emplace("k" + std::to_string(i));
  CHECK(index.chunks() == (3000 + Index::kChunkSlots - 1) / Index::kChunkSlots);
  // Erased slots are taken again before any new chunk: the slab stays at its peak.
  const std::size_t peak = index.chunks();
  for (int i = 0; i < 3000; i += 3) index.erase(index.find("k" + std::to_string(i)));
  for (int i = 0; i < 1000; ++i) {
    auto [it, inserted] = index.try_emplace("n" + std::to_string(i));
    REQUIRE(inserted);
    it->second.size = static_cast<std::uint64_t>(i);
  }
  CHECK(index.size() == 3000);
  CHECK(index.chunks() == peak);
  // The reused slots hold their own keys and nodes, and the others theirs.
  CHECK(index.find("n999")->second.size == 999);
  CHECK(index.find("n999")->first == "n999");
  CHECK(index.contains("k1"));
  CHECK_FALSE(index.contains("k3"));
  // Erasing every key releases the chunks; the next insert starts a new one.
  std::vector<std::string> keys;
  for (const Slot& s : index) keys.emplace_back(s.first);
  for (const std::string& k : keys) index.erase(index.find(k));
  CHECK(index.size() == 0);
  CHECK(index.chunks() == 0);
  CHECK(index.begin() == index.end());
  CHECK(index.try_emplace("again").second);
  CHECK(index.chunks() == 1);
  CHECK(index.find("again")->first == "again");
}

TEST_CASE("index: keys of every length are held and found (inline up to 12 bytes, longer apart)") {
  Index index;
  std::vector<std::string> keys = {"",
                                   "a",
                                   std::string(11, 'b'),
                                   std::string(12, 'c'),
                                   std::string(13, 'd'),
                                   std::string(4000, 'e'),
                                   std::string("nul\0inside", 10),
                                   std::string("long nul\0\0 key", 15)};
  for (std::size_t i = 0; i < keys.size(); ++i) {
    auto [it, inserted] = index.try_emplace(keys[i]);
    REQUIRE(inserted);
    it->second.size = i;
  }
  CHECK(index.size() == keys.size());
  for (std::size_t i = 0; i < keys.size(); ++i) {
    auto it = index.find(keys[i]);
    REQUIRE(it != index.end());
    CHECK(it->first == keys[i]);
    CHECK(it->first.size() == keys[i].size());
    CHECK(it->second.size == i);
  }
  CHECK_FALSE(index.contains(std::string(12, 'b')));  // a prefix or extension is another key
  CHECK_FALSE(index.contains(std::string(4001, 'e')));
  index.erase(index.find(keys[5]));
  CHECK_FALSE(index.contains(keys[5]));
  CHECK(index.contains(keys[4]));
}
