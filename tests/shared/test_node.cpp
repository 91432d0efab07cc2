// shared::open_node on its own: two nodes of one directory in one process, the first the owner
// (it holds the lock and serves), the second its client. The client's calls reach the owner's
// store through the socket with the owner's semantics; when the owner closes, the client takes
// over the same store. (Across real processes, with SIGKILL and SIGSTOP: process/test_shared.cpp.)
#include <doctest/doctest.h>

#include <memory>
#include <string>
#include <vector>

#include "api/config.hpp"
#include "core/service.hpp"
#include "shared/node.hpp"
#include "shared_support.hpp"

using namespace larder;
using namespace larder::test;

TEST_CASE("node: the second node of a directory is a client of the first, then takes over") {
  TempDir tmp;
  const core::Resolved r = api::resolve(shared_config(tmp / "cache"));
  auto owner = shared::open_node(r);
  auto client = shared::open_node(r);
  REQUIRE(owner->backend() != nullptr);  // the owner runs the store
  CHECK(client->backend() == nullptr);   // the client forwards
  CHECK_FALSE(owner->degraded());
  CHECK_FALSE(client->degraded());

  core::SetRequest from_client;
  from_client.key = "from-client";
  from_client.value = "c";
  CHECK(client->set(from_client));
  CHECK(owner->get("from-client") == "c");
  core::SetRequest from_owner;
  from_owner.key = "from-owner";
  from_owner.value = "o";
  CHECK(owner->set(from_owner));
  CHECK(client->get("from-owner") == "o");
  // A batch crosses as one request and comes back in order.
  const auto many = client->get_many({"from-owner", "missing", "from-client"});
  REQUIRE(many.size() == 3);
  CHECK(many[0] == "o");
  CHECK_FALSE(many[1]);
  CHECK(many[2] == "c");
  CHECK(client->remove("from-owner"));
  CHECK_FALSE(owner->get("from-owner"));
  // Counted once, where the store is: the owner's statistics include the client's calls.
  const Stats s = owner->stats();
  CHECK(s.set_count == 2);
  CHECK(s.total_entries == 1);

  owner.reset();  // a graceful close: the client finds nobody serving and takes over
  CHECK(client->get("from-client") == "c");
  CHECK(client->backend() != nullptr);
  CHECK_FALSE(client->degraded());
}
