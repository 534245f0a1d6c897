#include "consumer/harness.hpp"

#include <doctest/doctest.h>

#include <signal.h>

#include <random>
#include <set>
#include <thread>

#include "projection/mapping.hpp"
#include "store/database.hpp"
#include "support/hang.hpp"
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

// The next offset `projection` stored for partition 0, or 0.
std::int64_t stored(const std::string& db, const std::string& topic, const std::string& projection) {
  const auto totals = t::stored_totals(db, topic);
  const auto it = totals.find(projection);
  return it == totals.end() ? 0 : it->second;
}

}  // namespace

TEST_CASE("SIGKILLed inside a transaction that wrote rows and ledger, the consumer keeps none of them and "
          "restarts to the rows of an uninterrupted run") {
  // The random kills below rarely land between BEGIN and COMMIT. Here a
  // trigger on the offsets table, the batch's last write, hangs the
  // transaction that would store referrals' offset past `hang_past`, after
  // it wrote that batch's rows and ledger rows; the process is killed there.
  const auto topic = t::fresh_topic("cons-kill-tx", 1);
  t::temp_dir dir;
  const auto db = (dir / "killed.db").string();
  const auto events = t::generate_events({.users = 100, .events = 2'000, .seed = 7});
  t::produce_events(t::broker(), topic, events);
  const auto total = static_cast<std::int64_t>(events.size());
  const std::int64_t hang_past = 1'000;
  { const clerk_sync::store::database create(db); }
  t::hang_writes(db, "kafka_offsets", "INSERT", "NEW.projection = 'referrals' AND NEW.next_offset > " + std::to_string(hang_past));
  t::hang_writes(db, "kafka_offsets", "UPDATE", "NEW.projection = 'referrals' AND NEW.next_offset > " + std::to_string(hang_past));
  const std::vector<std::string> args{"--projection", "users,referrals", "--topic", topic, "--db", db,
                                      "--group-prefix", t::unique_name("kill-tx"), "--batch-size", "25"};
  auto c = t::start_consumer(args);
  const auto deadline = std::chrono::steady_clock::now() + 60s;
  while (std::chrono::steady_clock::now() < deadline && c->running() &&
         !(stored(db, topic, "referrals") > hang_past - 25 && t::write_lock_held_for(db, 1s)))
    std::this_thread::sleep_for(20ms);
  REQUIRE_MESSAGE(c->running(), c->stderr_text());
  const auto committed = stored(db, topic, "referrals");
  REQUIRE(committed > hang_past - 25);
  REQUIRE(committed <= hang_past);
  REQUIRE(t::write_lock_held_for(db, 1s));  // still inside the hanging transaction
  c->signal(SIGKILL);
  CHECK(c->wait(10s) == 128 + SIGKILL);

  // What survived is exactly what the events before the committed offset
  // make: nothing of the batch the transaction was writing.
  const std::vector<t::generated_event> before(events.begin(), events.begin() + committed);
  const auto prefix_db = (dir / "prefix.db").string();
  (void)t::reference_tables(before, prefix_db, {clerk_sync::projection::kind::referrals});
  const std::string referral_ledger = "SELECT count(*) FROM applied_events WHERE projection = 'referrals'";
  CHECK(t::query_int(db, referral_ledger) == t::query_int(prefix_db, referral_ledger));
  CHECK(t::query_int(db, "SELECT count(*) FROM referrals") == t::query_int(prefix_db, "SELECT count(*) FROM referrals"));
  // The hanging batch, which holds the events up to hang_past at least,
  // would have written some: otherwise this proves nothing.
  const std::vector<t::generated_event> through(events.begin(), events.begin() + hang_past + 1);
  const auto through_db = (dir / "through.db").string();
  (void)t::reference_tables(through, through_db, {clerk_sync::projection::kind::referrals});
  REQUIRE(t::query_int(through_db, referral_ledger) > t::query_int(prefix_db, referral_ledger));

  t::unhang_writes(db);
  auto last = t::start_consumer(args);
  REQUIRE(t::wait_caught_up(db, topic, {"users", "referrals"}, total, 90s));
  last->signal(SIGTERM);
  CHECK_MESSAGE(last->wait(20s) == 0, last->stderr_text().substr(0, 3000));
  const auto reference_db = (dir / "reference.db").string();
  const auto reference = t::reference_tables(
      events, reference_db, {clerk_sync::projection::kind::users, clerk_sync::projection::kind::referrals});
  CHECK(t::dump_tables(db) == reference);
  for (const std::string p : {"users", "referrals"}) {
    const std::string sql = "SELECT count(*) FROM applied_events WHERE projection = '" + p + "'";
    CHECK_MESSAGE(t::query_int(db, sql) == t::query_int(reference_db, sql), p);
  }
}

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
