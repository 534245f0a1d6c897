// The whole pipeline as it runs in production: Svix-signed HTTP → the real
// clerk-sync-receiver → the real broker → two clerk-sync-consumer processes
// sharing each projection's partitions → one SQLite file.

#include <doctest/doctest.h>

#include <csignal>
#include <chrono>
#include <string>
#include <vector>

#include "consumer/generator.hpp"
#include "consumer/harness.hpp"
#include "projection/applier.hpp"
#include "receiver/harness.hpp"
#include "store/database.hpp"
#include "support/support.hpp"
#include "verify/svix.hpp"

using namespace std::chrono_literals;
namespace cs = clerk_sync;
namespace test = clerk_sync::test;

namespace {

const std::vector<std::string> all_projections{"users", "referrals", "balances", "sessions"};


}  // namespace

TEST_CASE("signed HTTP through the receiver and two consumer processes ends in the rows of a direct apply") {
  const auto cfg = test::broker();
  const auto topic = test::fresh_topic("e2e", 4);
  const auto secret = test::random_secret();
  test::temp_dir dir;
  const std::string live = (dir / "live.db").string();

  test::receiver recv(cfg.brokers, topic, secret);
  REQUIRE(recv.wait_ready(20s));

  // Two processes of the same projections: each group splits the four
  // partitions between them. The second joins before any event is sent.
  const std::vector<std::string> args{"--projection", "users,referrals,balances,sessions", "--db", live, "--topic",
                                      topic, "--batch-latency-ms", "20"};
  auto first = test::start_consumer(args);
  REQUIRE_MESSAGE(first->wait_for_log("msg=assigned", 30s), first->stderr_text());
  auto second = test::start_consumer(args);
  REQUIRE_MESSAGE(second->wait_for_log("msg=assigned", 30s), second->stderr_text());

  // Duplicated svix-ids (a Svix redelivery) and out-of-order updates included.
  const auto events = test::generate_events({.users = 40, .events = 800, .seed = 2026});
  for (const auto& e : events) {
    const auto s = test::sign_event(secret, e.body, std::nullopt, e.svix_id);
    const auto res = test::post_event(recv.port(), s);
    REQUIRE_MESSAGE(res.status == 200, "svix-id " << e.svix_id << ": " << res.status << " " << res.body);
  }

  REQUIRE(test::wait_caught_up(live, topic, all_projections, static_cast<std::int64_t>(events.size()), 90s));
  CHECK(test::dump_tables(live) == test::reference_tables(events, (dir / "reference.db").string()));

  // Every svix-id once per projection in the ledger, duplicates included.
  for (const auto& p : all_projections)
    CHECK(test::query_int(live, "SELECT count(*) FROM applied_events WHERE projection = '" + p + "'") ==
          test::query_int(live, "SELECT count(DISTINCT svix_id) FROM applied_events WHERE projection = '" + p + "'"));

  first->signal(SIGTERM);
  second->signal(SIGTERM);
  CHECK(first->wait(20s) == 0);
  CHECK(second->wait(20s) == 0);
  // Each process applied part of the stream: the partitions really were
  // shared. Read after exit, when every buffered log line is out.
  CHECK(first->stderr_text().find("outcome=applied") != std::string::npos);
  CHECK(second->stderr_text().find("outcome=applied") != std::string::npos);
}
