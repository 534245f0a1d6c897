#include "consumer/harness.hpp"

#include <doctest/doctest.h>

#include <signal.h>

#include <random>
#include <set>
#include <thread>

#include "support/support.hpp"

using namespace std::chrono_literals;
namespace t = clerk_sync::test;

namespace {

const std::vector<std::string> projections{"users", "referrals", "balances", "sessions"};

std::int64_t least_progress(const std::string& db, const std::string& topic) {
  const auto totals = t::stored_totals(db, topic);
  std::int64_t least = -1;
  for (const auto& p : projections) {
    const auto it = totals.find(p);
    const std::int64_t v = it == totals.end() ? 0 : it->second;
    least = least < 0 ? v : std::min(least, v);
  }
  return least;
}

}  // namespace

TEST_CASE("SIGKILLed at random moments while applying and restarted, the consumer ends with the rows of an "
          "uninterrupted run, each svix-id once per projection") {
  const auto topic = t::fresh_topic("cons-kill", 3);
  t::temp_dir dir;
  const auto killed_db = (dir / "killed.db").string();
  const auto reference_db = (dir / "reference.db").string();
  const auto events = t::generate_events({.users = 200, .events = 10'000, .seed = 2026});
  std::set<std::string> distinct;
  for (const auto& e : events) distinct.insert(e.svix_id);
  REQUIRE(events.size() >= 10'000);
  REQUIRE(distinct.size() < events.size());  // the stream holds duplicates
  t::produce_events(t::broker(), topic, events);
  const auto total = static_cast<std::int64_t>(events.size());

  const std::string all = "users,referrals,balances,sessions";
  auto reference = t::start_consumer({"--projection", all, "--topic", topic, "--db", reference_db, "--group-prefix",
                                      t::unique_name("ref")});

  // Small batches and a static member id: many transactions to die in, and
  // a restarted member takes its place at once instead of after the session timeout.
  const std::string group = t::unique_name("kill");
  const std::vector<std::string> args{"--projection", all, "--topic", topic, "--db", killed_db, "--group-prefix", group,
                                      "--batch-size", "25", "--kafka-property", "group.instance.id=kill-test"};
  std::mt19937 rng(std::random_device{}());
  int kills = 0;
  for (int round = 0; round < 12 && kills < 6; ++round) {
    auto c = t::start_consumer(args);
    const auto before = least_progress(killed_db, topic);
    // A random point of this run's progress, while it is applying.
    const auto target =
        before + std::uniform_int_distribution<std::int64_t>(1, std::max<std::int64_t>(2, (total - before) / 6))(rng);
    const auto deadline = std::chrono::steady_clock::now() + 30s;
    while (least_progress(killed_db, topic) < target && std::chrono::steady_clock::now() < deadline && c->running())
      std::this_thread::sleep_for(2ms);
    const auto progress = least_progress(killed_db, topic);
    REQUIRE_MESSAGE(c->running(), c->stderr_text());
    c->signal(SIGKILL);
    CHECK(c->wait(10s) == 128 + SIGKILL);
    if (progress < total) {
      ++kills;
      MESSAGE("SIGKILL " << kills << " with " << progress << " of " << total << " applied by every projection");
    } else {
      break;  // caught up before we could kill it while applying
    }
  }
  CHECK(kills >= 5);

  auto last = t::start_consumer(args);
  REQUIRE(t::wait_caught_up(killed_db, topic, projections, total, 90s));
  REQUIRE(t::wait_caught_up(reference_db, topic, projections, total, 90s));
  last->signal(SIGTERM);
  reference->signal(SIGTERM);
  CHECK_MESSAGE(last->wait(20s) == 0, last->stderr_text().substr(0, 3000));
  CHECK(reference->wait(20s) == 0);

  CHECK(t::query_int(killed_db, "SELECT count(*) FROM users") == 200);
  CHECK(t::query_int(killed_db, "SELECT count(*) FROM users WHERE deleted_at IS NOT NULL") > 0);
  CHECK(t::query_int(killed_db, "SELECT count(*) FROM sessions WHERE status IN ('ended','revoked')") > 0);
  CHECK(t::query_int(killed_db, "SELECT count(*) FROM dead_letters") == 0);
  const auto tables = t::dump_tables(killed_db);
  CHECK(tables == t::dump_tables(reference_db));
  for (const auto& p : projections) {
    const std::string sql = "SELECT count(*) FROM applied_events WHERE projection = '" + p + "'";
    // Each svix-id at most once (skips leave no row), exactly as the uninterrupted run.
    CHECK_MESSAGE(t::query_int(killed_db, sql) == t::query_int(reference_db, sql), p);
    CHECK_MESSAGE(t::query_int(killed_db, sql) <= static_cast<std::int64_t>(distinct.size()), p);
    CHECK_MESSAGE(t::query_int(killed_db, sql) > 0, p);
  }
}
