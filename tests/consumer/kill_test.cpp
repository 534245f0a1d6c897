#include "consumer/harness.hpp"

#include <doctest/doctest.h>

#include <signal.h>

#include <random>
#include <set>
#include <thread>

#include "kafka/mock_cluster.hpp"
#include "projection/mapping.hpp"
#include "store/database.hpp"
#include "support/hang.hpp"
#include "support/support.hpp"

using namespace std::chrono_literals;
namespace t = clerk_sync::test;
using t::count_of;

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

TEST_CASE("SIGKILLed while moving its stored position back to a record of a recreated topic, the consumer restarted "
          "(in a broker hiccup that skips the resume check, or not) applies nothing twice, nothing of the new log, "
          "and stops with exit 5") {
  const auto cfg = t::broker();
  const auto topic = t::fresh_topic("cons-kill-rewind", 1);
  t::temp_dir dir;
  const auto db = (dir / "killed.db").string();
  auto before = t::generate_events({.users = 5, .events = 20, .seed = 41});
  before.resize(10);
  auto after = t::generate_events({.users = 5, .events = 90, .seed = 42});
  after.resize(45);
  const std::vector<t::generated_event> refilled(after.begin(), after.begin() + 40);
  const auto args = [&](const std::string& group) {
    // Each run its own group: a killed member's session is not waited for
    // (offsets are the database's).
    // A group session longer than the SIGSTOP below (seconds on a loaded host).
    return std::vector<std::string>{"--projection", "users", "--topic", topic, "--db", db, "--group-prefix",
                                    t::unique_name(group), "--position-check-ms", "600000",
                                    "--kafka-property", "session.timeout.ms=45000"};
  };
  // Killed between a recreation and its next position check
  // (edges_test.cpp): records 10..39 of the new log applied, the old log's
  // record 9 stored as the one its last check found.
  t::produce_events(cfg, topic, before);
  auto first = t::start_consumer(args("kill-rewind"));
  REQUIRE_MESSAGE(t::wait_caught_up(db, topic, {"users"}, 10, 60s), first->stderr_text());
  const auto stopped = std::chrono::steady_clock::now();
  first->signal(SIGSTOP);
  t::recreate_topic(topic);
  t::produce_events(cfg, topic, refilled);
  first->signal(SIGCONT);
  REQUIRE_MESSAGE(std::chrono::steady_clock::now() - stopped < 40s, "stopped too long: its group session may end");
  REQUIRE_MESSAGE(t::wait_caught_up(db, topic, {"users"}, 40, 30s), first->stderr_text());
  first->signal(SIGKILL);
  (void)first->wait(10s);
  REQUIRE(t::query_int(db, "SELECT checked_offset FROM kafka_offsets WHERE projection = 'users'") == 9);
  const std::string ledger_sql = "SELECT count(*) FROM applied_events";
  const auto ledger = t::query_int(db, ledger_sql);
  const auto tables = t::dump_tables(db);
  const auto unchanged = [&](const std::string& when) {
    CHECK_MESSAGE(t::query_int(db, ledger_sql) == ledger, when);
    CHECK_MESSAGE(t::dump_tables(db) == tables, when);
  };
  const std::string recreated = "level=error msg=topic_recreated projection=users topic=" + topic +
                                " partition=0 offset=9 applied_svix_id=" + before[9].svix_id +
                                " found_svix_id=" + after[9].svix_id;

  // Restarted, it finds the recreation and moves its position back to
  // record 9: killed inside that write (the one write that moves an offset
  // back), before it commits.
  t::hang_writes(db, "kafka_offsets", "UPDATE", "NEW.next_offset < OLD.next_offset");
  auto finder = t::start_consumer(args("kill-rewind-find"));
  REQUIRE_MESSAGE(finder->wait_for_log(recreated + " applied_after=30", 60s), finder->stderr_text());
  REQUIRE_MESSAGE(t::wait_until_hung(*finder, db, 30s), finder->stderr_text());
  finder->signal(SIGKILL);
  CHECK(finder->wait(10s) == 128 + SIGKILL);
  t::unhang_writes(db);
  CHECK_MESSAGE(count_of(finder->stderr_text(), "msg=event ") == 0, finder->stderr_text());
  CHECK(t::stored_totals(db, topic)["users"] == 40);
  CHECK(t::query_int(db, "SELECT checked_offset FROM kafka_offsets WHERE projection = 'users'") == 9);
  unchanged("killed while moving back");

  // Restarted while the broker does not answer its watermark queries, the
  // resume cannot compare. The real broker cannot be made to fail one
  // request: a mock cluster holds the same log (the same records at the
  // same offsets), and 5 records more.
  clerk_sync::kafka::mock_cluster mock(1);
  mock.create_topic(topic, 1);
  t::produce_events({mock.bootstrap_servers(), {}}, topic, after);
  const auto in_hiccup = [&](const std::string& group) {
    mock.fail_next_requests(2 /* ListOffsets: one watermark query */, 2, 6 /* NOT_LEADER_FOR_PARTITION */);
    return t::start_consumer_on(mock.bootstrap_servers(), args(group));
  };
  // The stored checked record survives the skipped resume check: the first
  // position check compares it before anything is applied.
  auto hiccup = in_hiccup("kill-rewind-hiccup");
  const auto st = hiccup->wait(30s);
  const auto err = hiccup->stderr_text();
  REQUIRE_MESSAGE(st.has_value(), err);  // not still running, applying the new log
  CHECK_MESSAGE(*st == 5, err);
  CHECK_MESSAGE(count_of(err, "level=warn msg=resume_unchecked projection=users partition=0 offset=40 ") == 1, err);
  CHECK_MESSAGE(err.find(recreated + " applied_after=30") != std::string::npos, err);
  CHECK_MESSAGE(count_of(err, "msg=event ") == 0, err);
  CHECK(t::stored_totals(db, topic)["users"] == 10);
  CHECK(t::query_int(db, "SELECT count(*) FROM kafka_offsets WHERE checked_offset IS NOT NULL") == 0);
  unchanged("moved back after a skipped resume check");

  // An exit 5 writes nothing after the move: this is also what a kill just
  // after it leaves. In a hiccup again, the record before the stored
  // offset, record 9, is what the first position check compares.
  auto again = in_hiccup("kill-rewind-again");
  const auto st2 = again->wait(30s);
  const auto err2 = again->stderr_text();
  REQUIRE_MESSAGE(st2.has_value(), err2);
  CHECK_MESSAGE(*st2 == 5, err2);
  CHECK_MESSAGE(count_of(err2, "level=warn msg=resume_unchecked projection=users partition=0 offset=10 ") == 1, err2);
  CHECK_MESSAGE(err2.find(recreated + " applied_after=0") != std::string::npos, err2);
  CHECK_MESSAGE(count_of(err2, "msg=event ") == 0, err2);

  // And on the real broker, without a hiccup: the resume's own check.
  auto last = t::start_consumer(args("kill-rewind-last"));
  const auto st3 = last->wait(30s);
  const auto err3 = last->stderr_text();
  REQUIRE_MESSAGE(st3.has_value(), err3);
  CHECK_MESSAGE(*st3 == 5, err3);
  CHECK_MESSAGE(count_of(err3, "msg=resume_unchecked") == 0, err3);
  CHECK_MESSAGE(err3.find(recreated + "\n") != std::string::npos, err3);  // found on resume: no applied_after
  CHECK_MESSAGE(count_of(err3, "msg=event ") == 0, err3);
  CHECK(t::stored_totals(db, topic)["users"] == 10);
  unchanged("after every restart");
}

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
