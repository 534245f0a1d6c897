#include "consumer/harness.hpp"

#include <doctest/doctest.h>

#include <SQLiteCpp/SQLiteCpp.h>
#include <signal.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

#include <filesystem>
#include <map>
#include <set>
#include <sstream>
#include <thread>

#include "kafka/mock_cluster.hpp"
#include "projection/applier.hpp"
#include "store/database.hpp"
#include "support/support.hpp"

using namespace std::chrono_literals;
namespace t = clerk_sync::test;
namespace pj = clerk_sync::projection;

namespace {

// The ledger rows an in-process applier leaves for the same events (skipped
// outcomes leave none).
std::int64_t reference_ledger_rows(const std::vector<t::generated_event>& events, pj::kind k, const t::temp_dir& dir,
                                   const std::string& name) {
  const auto path = (dir / name).string();
  (void)t::reference_tables(events, path, {k});
  return t::query_int(path, "SELECT count(*) FROM applied_events");
}

// Starts a users,sessions consumer with `args`, lets it catch up with all
// of `events` and stop; its tables and users' ledger must equal an
// in-process apply of them: nothing lost, nothing doubled.
void catch_up_to_reference(const std::vector<std::string>& args, const std::string& db, const std::string& topic,
                           const std::vector<t::generated_event>& events, const t::temp_dir& dir) {
  auto c = t::start_consumer(args);
  REQUIRE(t::wait_caught_up(db, topic, {"users", "sessions"}, static_cast<std::int64_t>(events.size()), 60s));
  c->signal(SIGTERM);
  CHECK(c->wait(20s) == 0);
  CHECK(t::dump_tables(db) ==
        t::reference_tables(events, (dir / "reference.db").string(), {pj::kind::users, pj::kind::sessions}));
  CHECK(t::query_int(db, "SELECT count(*) FROM applied_events WHERE projection = 'users'") ==
        reference_ledger_rows(events, pj::kind::users, dir, "ref-users.db"));
}

std::size_t distinct_svix(const std::vector<t::generated_event>& events) {
  std::set<std::string> ids;
  for (const auto& e : events) ids.insert(e.svix_id);
  return ids.size();
}

}  // namespace

TEST_CASE("an event of a type no projection maps is a warning line for each projection, not debug only") {
  const auto topic = t::fresh_topic("cons-unknown-type", 1);
  t::temp_dir dir;
  const auto db = (dir / "unknown.db").string();
  const std::vector<t::generated_event> events{
      {"u1", "msg_unknown_type", "user.frobnicated",
       R"({"type":"user.frobnicated","timestamp":1765000000000,"data":{"id":"u1","updated_at":1765000000000}})"}};
  t::produce_events(t::broker(), topic, events);
  auto c = t::start_consumer(
      {"--projection", "users,sessions", "--topic", topic, "--db", db, "--group-prefix", t::unique_name("unknown")});
  REQUIRE(t::wait_caught_up(db, topic, {"users", "sessions"}, 1, 60s));
  c->signal(SIGTERM);
  CHECK(c->wait(20s) == 0);
  const auto err = c->stderr_text();
  for (const char* p : {"users", "sessions"})
    CHECK_MESSAGE(err.find(std::string("level=warn msg=event svix_id=msg_unknown_type type=user.frobnicated user=\"\" "
                                       "projection=") +
                           p + " outcome=skipped partition=0 offset=0 reason=\"event type user.frobnicated is not "
                               "projected\"") != std::string::npos,
                  err);
}

TEST_CASE("no partitions from the group within the join deadline is an error line, not warnings only") {
  // A wrong address, or plaintext against a SASL listener: librdkafka
  // retries for ever and says so at warn, nothing is consumed, and
  // journalctl -p err must say so.
  t::temp_dir dir;
  // The file is a finished replay moved into place whole, its mark on.
  { clerk_sync::store::database replayed((dir / "down.db").string()); }
  t::mark_finished_replay((dir / "down.db").string());
  t::process consumer(t::binary_path("app/consumer/clerk-sync-consumer"),
                      {"--projection", "users", "--db", (dir / "down.db").string(), "--join-deadline-s", "2"},
                      {{"KAFKA_BROKERS", "127.0.0.1:" + std::to_string(t::free_port())}, {"NOTIFY_SOCKET", ""}});
  CHECK_MESSAGE(consumer.wait_for_log("level=error msg=not_joined projection=users topic=clerk.events waited_s=", 20s),
                consumer.stderr_text());
  CHECK(consumer.stderr_text().find("error=_ALL_BROKERS_DOWN") != std::string::npos);
  CHECK(t::line_with(consumer.stderr_text(), "msg=not_joined").find("is Kafka reachable") != std::string::npos);
  consumer.signal(SIGTERM);
  CHECK(consumer.wait(30s) == 0);
  // Live now: the mark is off, so a copy of the file never passes swap-in
  // as a finished replay.
  CHECK(t::query_int((dir / "down.db").string(), "PRAGMA application_id") == 0);
  CHECK(consumer.stderr_text().find("incomplete_replay_live") == std::string::npos);
  // One that finished with events missing (--allow-incomplete) is said.
  const auto incomplete = (dir / "incomplete.db").string();
  { clerk_sync::store::database replayed(incomplete); }
  {
    SQLite::Database c(incomplete, SQLite::OPEN_READWRITE);
    c.exec("PRAGMA application_id = " + std::to_string(clerk_sync::store::incomplete_replay_id));
  }
  t::process on_incomplete(t::binary_path("app/consumer/clerk-sync-consumer"),
                           {"--projection", "users", "--db", incomplete, "--join-deadline-s", "2"},
                           {{"KAFKA_BROKERS", "127.0.0.1:" + std::to_string(t::free_port())}, {"NOTIFY_SOCKET", ""}});
  CHECK_MESSAGE(on_incomplete.wait_for_log("level=warn msg=incomplete_replay_live db=" + incomplete, 20s),
                on_incomplete.stderr_text());
  // Signalled once it runs (a SIGTERM before its handler ends it at once).
  CHECK(on_incomplete.wait_for_log("msg=subscribed", 20s));
  on_incomplete.signal(SIGTERM);
  CHECK_MESSAGE(on_incomplete.wait(30s) == 0, on_incomplete.stderr_text());
  CHECK(t::query_int(incomplete, "PRAGMA application_id") == 0);
  // A consumer that joins says nothing of the kind (a deadline a loaded
  // machine's join stays well within).
  const auto topic = t::fresh_topic("consumer-joins", 1);
  auto joined = t::start_consumer({"--projection", "users", "--db", (dir / "up.db").string(), "--topic", topic,
                                   "--group-prefix", t::unique_name("joins"), "--join-deadline-s", "8"});
  REQUIRE(joined->wait_for_log("msg=subscribed", 30s));
  const auto subscribed = std::chrono::steady_clock::now();  // the deadline counts from here, a little before
  REQUIRE(joined->wait_for_log("msg=assigned", 30s));
  std::this_thread::sleep_until(subscribed + 9s);
  joined->signal(SIGTERM);
  CHECK(joined->wait(30s) == 0);
  CHECK(joined->stderr_text().find("not_joined") == std::string::npos);
  // A topic that does not exist (not created yet, or deleted) is said as
  // such, not as a question of reaching Kafka.
  const auto missing = t::unique_name("consumer-no-topic");
  auto lonely = t::start_consumer({"--projection", "users", "--db", (dir / "none.db").string(), "--topic", missing,
                                   "--group-prefix", t::unique_name("none"), "--join-deadline-s", "2"});
  CHECK_MESSAGE(lonely->wait_for_log("msg=not_joined", 30s), lonely->stderr_text());
  CHECK_MESSAGE(t::line_with(lonely->stderr_text(), "msg=not_joined")
                    .find("outcome=\"no partitions assigned: topic " + missing + " does not exist") != std::string::npos,
                lonely->stderr_text());
  lonely->signal(SIGTERM);
  CHECK(lonely->wait(30s) == 0);
}

TEST_CASE("partitions lost with the cluster and not given back within the join deadline is an error line") {
  // The group's session lapses while the only broker is down: librdkafka
  // revokes the assignment and says so at warn, and nothing is consumed.
  clerk_sync::kafka::mock_cluster mock(1);
  mock.create_topic("lost", 1);
  t::temp_dir dir;
  t::process consumer(t::binary_path("app/consumer/clerk-sync-consumer"),
                      {"--projection", "users", "--db", (dir / "lost.db").string(), "--topic", "lost",
                       "--join-deadline-s", "8", "--kafka-property", "session.timeout.ms=6000"},
                      {{"KAFKA_BROKERS", mock.bootstrap_servers()}, {"NOTIFY_SOCKET", ""}});
  REQUIRE_MESSAGE(consumer.wait_for_log("msg=assigned", 30s), consumer.stderr_text());
  mock.set_broker_down(1);
  CHECK_MESSAGE(consumer.wait_for_log("level=error msg=not_joined projection=users topic=lost", 60s),
                consumer.stderr_text());
  consumer.signal(SIGTERM);
  CHECK(consumer.wait(30s) == 0);
}

TEST_CASE("a second consumer of one projection with another database is an error line in both, naming the other") {
  // Members of a projection's group writing another file (another host, a
  // run by hand with another --db, a copy of the file) take partitions, and
  // their events go to that file instead of this one while they run.
  // Members writing the same file share the partitions as designed (next
  // test): no such line.
  const auto topic = t::fresh_topic("consumer-shared", 2);
  const auto prefix = t::unique_name("shared");
  t::temp_dir dir;
  const auto start = [&](const std::string& db) {
    return t::start_consumer(
        {"--projection", "users", "--db", (dir / db).string(), "--topic", topic, "--group-prefix", prefix});
  };
  const auto identity = [&](const std::string& db) {  // as the consumer names its file in its client.id
    struct stat st {};
    REQUIRE(::stat((dir / db).c_str(), &st) == 0);
    std::ostringstream out;
    out << "file-" << std::hex << st.st_dev << "-" << std::dec << st.st_ino;
    return out.str();
  };
  auto first = start("first.db");
  REQUIRE_MESSAGE(first->wait_for_log("msg=assigned", 30s), first->stderr_text());
  REQUIRE(first->wait_for_log("partition=1", 30s));  // the whole topic
  auto second = start("second.db");
  const std::string line = "level=error msg=group_shared projection=users group=" + prefix +
                           ".users assigned=1 partitions=2 others=" + prefix + ".users.";
  REQUIRE_MESSAGE(first->wait_for_log(line, 60s), first->stderr_text());
  REQUIRE_MESSAGE(second->wait_for_log(line, 60s), second->stderr_text());
  CHECK(first->stderr_text().find(line + identity("second.db") + "@127.0.0.1 outcome=") != std::string::npos);
  CHECK(second->stderr_text().find(line + identity("first.db") + "@127.0.0.1 outcome=") != std::string::npos);
  CHECK(identity("first.db") != identity("second.db"));
  // The second one leaves: the first holds the whole topic again, and says so.
  second->signal(SIGTERM);
  CHECK(second->wait(30s) == 0);
  CHECK_MESSAGE(first->wait_for_log("level=info msg=group_whole projection=users group=" + prefix + ".users", 60s),
                first->stderr_text());
  first->signal(SIGTERM);
  CHECK(first->wait(30s) == 0);
  CHECK(first->stderr_text().find("group_shared") == first->stderr_text().rfind("group_shared"));  // once
}

TEST_CASE("a short assignment whose group cannot be described is a warning, not silence") {
  // librdkafka 2.0.2's mock cluster answers DescribeGroups with "not
  // supported": the check cannot be made, and the consumer says so.
  clerk_sync::kafka::mock_cluster mock(1);
  mock.create_topic("described", 2);
  t::temp_dir dir;
  const auto start = [&](const std::string& db) {
    return std::make_unique<t::process>(
        t::binary_path("app/consumer/clerk-sync-consumer"),
        std::vector<std::string>{"--projection", "users", "--db", (dir / db).string(), "--topic", "described"},
        std::map<std::string, std::string>{{"KAFKA_BROKERS", mock.bootstrap_servers()}, {"NOTIFY_SOCKET", ""}});
  };
  auto first = start("first.db");
  REQUIRE_MESSAGE(first->wait_for_log("partition=1", 30s), first->stderr_text());
  auto second = start("second.db");
  CHECK_MESSAGE(first->wait_for_log("level=warn msg=group_unchecked projection=users reason=", 60s),
                first->stderr_text());
  second->signal(SIGTERM);
  first->signal(SIGTERM);
  CHECK(second->wait(30s) == 0);
  CHECK(first->wait(30s) == 0);
}

TEST_CASE("an unknown projection or a bad setting: one clear line, exit 2") {
  const auto exe = t::binary_path("app/consumer/clerk-sync-consumer");
  auto r = t::run(exe, {"--projection", "users,payments"});
  CHECK(r.status == 2);
  // One line in the log's format, like every other line of the process.
  CHECK(r.err.ends_with(
      " level=error msg=bad_setting program=clerk-sync-consumer error=\"unknown projection 'payments' (expected users, "
      "referrals, balances or sessions)\" exit_code=2\n"));
  CHECK(std::count(r.err.begin(), r.err.end(), '\n') == 1);
  r = t::run(exe, {"--projection", "users", "--batch-size", "0"});
  CHECK(r.status == 2);
  CHECK(r.err.find("--batch-size") != std::string::npos);
  r = t::run(exe, {}, {{"CLERK_SYNC_PROJECTIONS", ""}});
  CHECK(r.status == 2);
  t::temp_dir dir;
  r = t::run(exe, {"--projection", "users,sessions", "--db", (dir / "k.db").string(), "--kafka-property",
                   "no.such.property=1"});
  CHECK(r.status == 2);
  CHECK(r.err.find("no.such.property") != std::string::npos);
  // Offsets live in the database: Kafka's auto-commit stays off, and saying otherwise is an error.
  r = t::run(exe, {"--projection", "users", "--db", (dir / "k.db").string(), "--kafka-property",
                   "enable.auto.commit=true"});
  CHECK(r.status == 2);
  CHECK(r.err.find("clerk-sync sets enable.auto.commit=false itself") != std::string::npos);
  // Nor is an aborted transaction's record ever read, as read_uncommitted would.
  r = t::run(exe, {"--projection", "users", "--db", (dir / "k.db").string(), "--kafka-property",
                   "isolation.level=read_uncommitted"});
  CHECK(r.status == 2);
  CHECK(r.err.find("clerk-sync sets isolation.level=read_committed itself") != std::string::npos);
  // Nor a batch changed on a broker's disk applied: the CRC check stays on.
  r = t::run(exe, {"--projection", "users", "--db", (dir / "k.db").string(), "--kafka-property", "check.crcs=false"});
  CHECK(r.status == 2);
  CHECK(r.err.find("clerk-sync sets check.crcs=true itself") != std::string::npos);
  // OAUTHBEARER with no token source librdkafka has itself: it would ask
  // the process for tokens it never gets, and never connect.
  r = t::run(exe, {"--projection", "users", "--db", (dir / "k.db").string(), "--kafka-property",
                   "security.protocol=SASL_SSL", "--kafka-property", "sasl.mechanisms=OAUTHBEARER"});
  CHECK(r.status == 2);
  CHECK(r.err.find("OAUTHBEARER needs a token source of librdkafka's own") != std::string::npos);
  r = t::run(exe, {"--projection", "users", "--db", "/proc/no/such/dir/x.db"});
  CHECK(r.status == 2);
  CHECK(r.err.find("cannot open database") != std::string::npos);
  // A batch still failing must end in exit 3 before the group evicts the
  // member: its last attempt may wait the busy timeout past the budget,
  // after as long a wait for the write turn, then the ledger prune's wait
  // and two position checks (15 s each) before the next poll.
  r = t::run(exe, {"--projection", "users", "--db-busy-timeout-ms", "50000", "--db-retry-ms", "120000"});
  CHECK(r.status == 2);
  CHECK(r.err.find("plus --db-retry-ms plus two position checks of 15000 ms (300000 ms) must stay below "
                   "max.poll.interval.ms (300000 ms)") != std::string::npos);
  r = t::run(exe, {"--projection", "users", "--db-retry-ms", "15000", "--kafka-property", "max.poll.interval.ms=60000"});
  CHECK(r.status == 2);
  CHECK(r.err.find("(60000 ms) must stay below max.poll.interval.ms (60000 ms)") != std::string::npos);
  // Several projections in one process take turns at the write lock: each
  // other loop's failing attempt (or ledger prune) holds the turn for up to
  // the busy timeout before this one's attempt may wait its own.
  r = t::run(exe, {"--projection", "users,referrals,balances,sessions", "--db", (dir / "turns.db").string(),
                   "--db-busy-timeout-ms", "40000", "--db-retry-ms", "30000"},
             {}, 20s);
  CHECK(r.status == 2);
  CHECK(r.err.find("(300000 ms) must stay below max.poll.interval.ms (300000 ms)") != std::string::npos);
  // The value as librdkafka reads it: "5m" is 5 ms to it.
  r = t::run(exe, {"--projection", "users", "--kafka-property", "max.poll.interval.ms=5m"});
  CHECK(r.status == 2);
  CHECK(r.err.find("must stay below max.poll.interval.ms (5 ms)") != std::string::npos);
}

TEST_CASE("a database locked past the busy timeout at start-up is retried, then a database failure (exit 3, restarted), "
          "not a bad setting") {
  const auto exe = t::binary_path("app/consumer/clerk-sync-consumer");
  t::temp_dir dir;
  const auto db = (dir / "locked.db").string();
  {
    // A fresh file needs its WAL switch and migrations: both wait for the lock.
    SQLite::Database holder(db, SQLite::OPEN_READWRITE | SQLite::OPEN_CREATE);
    holder.exec("BEGIN EXCLUSIVE");
    const auto r =
        t::run(exe, {"--projection", "users", "--db", db, "--db-busy-timeout-ms", "300", "--db-retry-ms", "3000"});
    CHECK(r.status == 3);  // the unit's RestartPreventExitStatus=2 would leave exit 2 stopped for good
    CHECK_MESSAGE(t::count_of(r.err, "level=warn msg=db_retry stage=open attempt=") >= 2, r.err);
    CHECK(t::count_of(r.err, "msg=db_open_failed") == 1);
    CHECK(r.err.find("locked") != std::string::npos);
    holder.exec("ROLLBACK");
  }
  {
    // Released within the retries: the consumer goes on, where it exited 3
    // at once, and a failure of a minute or two used up the unit's start limit.
    SQLite::Database holder(db, SQLite::OPEN_READWRITE);
    holder.exec("BEGIN EXCLUSIVE");
    auto c = t::start_consumer({"--projection", "users", "--db", db, "--db-busy-timeout-ms", "300", "--group-prefix",
                                t::unique_name("open-retry")});
    CHECK_MESSAGE(c->wait_for_log("msg=db_retry stage=open attempt=2 ", 10s), c->stderr_text());
    holder.exec("ROLLBACK");
    CHECK_MESSAGE(c->wait_for_log("msg=ready ", 30s), c->stderr_text());
    c->signal(SIGTERM);
    CHECK(c->wait(30s) == 0);
    CHECK(c->stderr_text().find("db_open_failed") == std::string::npos);
  }
  // A path that cannot be a database stays a bad setting.
  const auto r = t::run(exe, {"--projection", "users", "--db", dir.path().string()});
  CHECK(r.status == 2);
  CHECK(r.err.find("cannot open database") != std::string::npos);
}

TEST_CASE("a batch is bounded by the bytes of its bodies, not only by its count and latency") {
  // Held until it commits, beside the prefetch: a backlog of large events
  // must not make a batch of batch_size of them.
  const auto topic = t::fresh_topic("cons-batch-bytes", 1);
  t::temp_dir dir;
  const auto db = (dir / "bytes.db").string();
  const auto events = t::generate_events({.users = 20, .events = 300, .seed = 31});
  std::size_t total = 0, largest = 0;
  for (const auto& e : events) {
    total += e.body.size();
    largest = std::max(largest, e.body.size());
  }
  const std::size_t cap = 16 * 1024;
  REQUIRE(total > 8 * (cap + largest));
  t::produce_events(t::broker(), topic, events);
  auto c = t::start_consumer({"--projection", "users", "--topic", topic, "--db", db, "--group-prefix",
                              t::unique_name("bytes"), "--batch-size", "100000", "--batch-latency-ms", "10000",
                              "--batch-bytes", std::to_string(cap)});
  REQUIRE_MESSAGE(t::wait_caught_up(db, topic, {"users"}, static_cast<std::int64_t>(events.size()), 60s),
                  c->stderr_text());
  c->signal(SIGTERM);
  REQUIRE(c->wait(20s) == 0);
  const auto totals = t::line_with(c->stderr_text(), "msg=write_totals");
  INFO(totals);
  const auto at = totals.find("batches=");
  REQUIRE(at != std::string::npos);
  // Each batch holds under cap bytes, then the event that reaches it.
  CHECK(std::stoul(totals.substr(at + 8)) >= total / (cap + largest));
}

TEST_CASE("two consumer processes of one projection share the partitions and end with the right rows, once each") {
  const auto topic = t::fresh_topic("cons-share", 4);
  t::temp_dir dir;
  const auto db = (dir / "shared.db").string();
  const std::string group = t::unique_name("share");
  const std::vector<std::string> args{"--projection", "users,sessions", "--topic", topic, "--db", db,
                                      "--group-prefix", group, "--batch-size", "50"};
  auto a = t::start_consumer(args);
  auto b = t::start_consumer(args);
  REQUIRE_MESSAGE(a->wait_for_log("msg=ready", 20s), a->stderr_text());
  REQUIRE_MESSAGE(b->wait_for_log("msg=ready", 20s), b->stderr_text());
  // Both members hold partitions before anything is produced.
  REQUIRE(a->wait_for_log("msg=assigned", 30s));
  REQUIRE(b->wait_for_log("msg=assigned", 30s));

  auto events = t::generate_events({.users = 40, .events = 800, .seed = 7});
  events.push_back(events[10]);  // the same svix-id published twice, well apart
  t::produce_events(t::broker(), topic, events);
  REQUIRE(t::wait_caught_up(db, topic, {"users", "sessions"}, static_cast<std::int64_t>(events.size()), 60s));

  a->signal(SIGTERM);
  b->signal(SIGTERM);
  // One file: sharing the partitions is the design, not an error.
  CHECK(a->stderr_text().find("group_shared") == std::string::npos);
  CHECK(b->stderr_text().find("group_shared") == std::string::npos);
  CHECK(a->wait(20s) == 0);
  CHECK(b->wait(20s) == 0);
  // Both did real work, on different partitions.
  CHECK(a->stderr_text().find("outcome=applied") != std::string::npos);
  CHECK(b->stderr_text().find("outcome=applied") != std::string::npos);
  const std::string all_logs = a->stderr_text() + b->stderr_text();
  CHECK(all_logs.find("svix_id=" + events[10].svix_id) != std::string::npos);
  CHECK(all_logs.find("outcome=duplicate") != std::string::npos);

  // Once per svix-id a projection does not skip: the in-process reference.
  CHECK(t::query_int(db, "SELECT count(*) FROM applied_events WHERE projection = 'users'") ==
        reference_ledger_rows(events, pj::kind::users, dir, "ref-users.db"));
  CHECK(t::query_int(db, "SELECT count(*) FROM applied_events WHERE projection = 'sessions'") ==
        reference_ledger_rows(events, pj::kind::sessions, dir, "ref-sessions.db"));
  CHECK(t::query_int(db, "SELECT count(*) FROM applied_events WHERE projection = 'users'") <=
        static_cast<std::int64_t>(distinct_svix(events)));
  CHECK(t::query_int(db, "SELECT count(*) FROM users") == 40);
  CHECK(t::query_int(db, "SELECT count(*) FROM dead_letters") == 0);
  CHECK(t::dump_tables(db) ==
        t::reference_tables(events, (dir / "reference.db").string(), {pj::kind::users, pj::kind::sessions}));
}

TEST_CASE("a locked database never advances offsets: bounded retries, exit 3 - released, the same events apply") {
  const auto topic = t::fresh_topic("cons-lock", 2);
  t::temp_dir dir;
  const auto db = (dir / "locked.db").string();
  const std::string group = t::unique_name("lock");
  { const clerk_sync::store::database create(db); }
  const auto events = t::generate_events({.users = 10, .events = 50, .seed = 3});
  t::produce_events(t::broker(), topic, events);

  auto holder = std::make_unique<SQLite::Database>(db, SQLite::OPEN_READWRITE);
  holder->exec("BEGIN IMMEDIATE");
  const auto started = std::chrono::steady_clock::now();
  auto c = t::start_consumer({"--projection", "balances", "--topic", topic, "--db", db, "--group-prefix", group,
                              "--db-busy-timeout-ms", "100", "--db-retry-ms", "1500"});
  CHECK(c->wait(40s) == 3);
  CHECK(std::chrono::steady_clock::now() - started < 30s);
  CHECK(c->stderr_text().find("msg=db_retry") != std::string::npos);
  CHECK(c->stderr_text().find("msg=db_failed") != std::string::npos);
  holder->exec("ROLLBACK");
  holder.reset();
  CHECK(t::stored_totals(db, topic).empty());
  CHECK(t::query_int(db, "SELECT count(*) FROM balances") == 0);

  auto again = t::start_consumer({"--projection", "balances", "--topic", topic, "--db", db, "--group-prefix", group,
                                  "--db-busy-timeout-ms", "100", "--db-retry-ms", "20000"});
  REQUIRE(t::wait_caught_up(db, topic, {"balances"}, static_cast<std::int64_t>(events.size()), 60s));

  // A lock released within the retry budget: the same batch goes through.
  holder = std::make_unique<SQLite::Database>(db, SQLite::OPEN_READWRITE);
  holder->exec("BEGIN IMMEDIATE");
  const auto more = t::generate_events({.users = 10, .events = 5, .seed = 4});
  t::produce_events(t::broker(), topic, more);
  CHECK(again->wait_for_log("msg=db_retry", 20s));
  std::this_thread::sleep_for(300ms);
  CHECK(t::stored_totals(db, topic)["balances"] == static_cast<std::int64_t>(events.size()));
  holder->exec("ROLLBACK");
  holder.reset();
  CHECK(t::wait_caught_up(db, topic, {"balances"}, static_cast<std::int64_t>(events.size() + more.size()), 30s));
  CHECK(again->running());
  again->signal(SIGTERM);
  CHECK(again->wait(20s) == 0);
  CHECK(t::query_int(db, "SELECT count(*) FROM balances") == 10);
  auto all_events = events;
  all_events.insert(all_events.end(), more.begin(), more.end());
  CHECK(t::query_int(db, "SELECT count(*) FROM applied_events") ==
        reference_ledger_rows(all_events, pj::kind::balances, dir, "ref-ledger.db"));
  CHECK(t::query_int(db, "SELECT count(*) FROM applied_events") <=
        static_cast<std::int64_t>(distinct_svix(events) + distinct_svix(more)));
}

TEST_CASE("a backup moved over the database or the file deleted under a running consumer: exit 6, one line each, "
          "and a start goes on from that file's own offsets") {
  const auto topic = t::fresh_topic("cons-moved", 2);
  t::temp_dir dir;
  const auto db = (dir / "live.db").string();
  const auto backup = (dir / "backup.db").string();
  const std::string group = t::unique_name("moved");
  const std::vector<std::string> args{"--projection", "users,sessions", "--topic", topic, "--db", db,
                                      "--group-prefix", group};
  const auto events = t::generate_events({.users = 20, .events = 200, .seed = 21});
  const std::vector<t::generated_event> first(events.begin(), events.begin() + 100);
  const std::vector<t::generated_event> second(events.begin() + 100, events.end());
  const auto total = static_cast<std::int64_t>(events.size());  // the generator may add one
  const auto expect_stop = [&](t::process& c) {
    const auto st = c.wait(10s);
    const auto err = c.stderr_text();
    REQUIRE_MESSAGE(st.has_value(), err);
    CHECK_MESSAGE(*st == 6, err);  // not restarted by systemd: an operator starts it again
    for (const std::string p : {"users", "sessions"})
      CHECK_MESSAGE(t::count_of(err, "level=error msg=db_failed projection=" + p + " db=" + db +
                                         " error=\"the database path no longer names the file") == 1,
                    err);
    // The last connection to stop empties the -wal; one that stopped while
    // the other still wrote could not.
    CHECK_MESSAGE(err.find(" wal_emptied=true") != std::string::npos, err);
  };

  auto c = t::start_consumer(args);
  t::produce_events(t::broker(), topic, first);
  REQUIRE(t::wait_caught_up(db, topic, {"users", "sessions"}, 100, 60s));
  SQLite::Database(db, SQLite::OPEN_READONLY).backup(backup.c_str(), SQLite::Database::Save);
  t::produce_events(t::broker(), topic, second);
  REQUIRE(t::wait_caught_up(db, topic, {"users", "sessions"}, total, 60s));

  // The consumer's -wal stays beside the file moved there: emptied, the
  // backup reads as itself.
  std::filesystem::rename(backup, db);
  expect_stop(*c);
  CHECK(t::stored_totals(db, topic) == std::map<std::string, std::int64_t>{{"sessions", 100}, {"users", 100}});
  CHECK(t::query_int(db, "SELECT count(*) FROM pragma_integrity_check WHERE integrity_check <> 'ok'") == 0);

  c = t::start_consumer(args);
  REQUIRE(t::wait_caught_up(db, topic, {"users", "sessions"}, total, 60s));
  std::filesystem::remove(db);
  expect_stop(*c);

  // A fresh file, rebuilt from the log, with nothing of the old -wal in it.
  catch_up_to_reference(args, db, topic, events, dir);
}

TEST_CASE("a write that fails for want of space: lines naming the file and SQLite's error, exit 3, no partial "
          "batch - with space again, nothing lost or doubled") {
  const auto topic = t::fresh_topic("cons-full", 1);  // one partition: the offsets say which events were applied
  t::temp_dir dir;
  const auto db = (dir / "full.db").string();
  const std::string group = t::unique_name("full");
  const std::vector<std::string> args{"--projection", "users,sessions", "--topic", topic, "--db", db,
                                      "--group-prefix", group, "--db-retry-ms", "1000"};
  const auto events = t::generate_events({.users = 20, .events = 200, .seed = 22});
  const std::vector<t::generated_event> first(events.begin(), events.begin() + 100);
  const std::vector<t::generated_event> second(events.begin() + 100, events.end());
  const auto total = static_cast<std::int64_t>(events.size());  // the generator may add one

  // No file may grow past its size now (RLIMIT_FSIZE): a full disk without
  // a mount, as `ulimit -f` or systemd's LimitFSIZE= give one. SIGXFSZ keeps
  // its default action here: the consumer itself must turn it into a failed
  // write (EFBIG), not die of it without a line.
  auto c = t::start_consumer(args);
  t::produce_events(t::broker(), topic, first);
  REQUIRE(t::wait_caught_up(db, topic, {"users", "sessions"}, 100, 60s));
  const auto size = std::max(std::filesystem::file_size(db), std::filesystem::file_size(db + "-wal"));
  const rlimit limit{size, size};
  REQUIRE(::prlimit(c->pid(), RLIMIT_FSIZE, &limit, nullptr) == 0);
  t::produce_events(t::broker(), topic, second);
  const auto st = c->wait(20s);
  const auto err = c->stderr_text();
  REQUIRE_MESSAGE(st.has_value(), err);
  CHECK_MESSAGE(*st == 3, err);
  CHECK_MESSAGE(err.find("level=warn msg=db_retry projection=") != std::string::npos, err);
  // SQLite words EFBIG as an I/O error (a full disk, ENOSPC: "database or disk is full").
  CHECK_MESSAGE(err.find(" db=" + db + " error=\"disk I/O error") != std::string::npos, err);
  CHECK_MESSAGE(err.find("level=error msg=db_failed projection=") != std::string::npos, err);
  // Each projection's batches are whole: its ledger goes with its offsets.
  const auto stored = t::stored_totals(db, topic);
  for (const auto k : {pj::kind::users, pj::kind::sessions}) {
    const auto n = stored.at(std::string(pj::name(k)));
    CHECK(n < total);
    CHECK(t::query_int(db, "SELECT count(*) FROM applied_events WHERE projection = '" + std::string(pj::name(k)) +
                               "'") == reference_ledger_rows({events.begin(), events.begin() + n}, k, dir,
                                                             "ref-part-" + std::string(pj::name(k)) + ".db"));
  }

  catch_up_to_reference(args, db, topic, events, dir);
}

TEST_CASE("SIGTERM in the middle of a backlog: the ledger holds exactly the events before the stored offset, exit 0") {
  // Whether the open batch was committed or dropped is not seen from here
  // (either leaves ledger and offset agreeing); what is pinned is that a
  // stop leaves no event applied past its offset and none below it missing.
  const auto topic = t::fresh_topic("cons-term", 1);  // one partition: topic order = generation order
  t::temp_dir dir;
  const auto db = (dir / "term.db").string();
  const auto events = t::generate_events({.users = 50, .events = 4000, .seed = 11});
  t::produce_events(t::broker(), topic, events);
  auto c = t::start_consumer({"--projection", "users", "--topic", topic, "--db", db, "--group-prefix",
                              t::unique_name("term"), "--batch-size", "20"});
  const auto deadline = std::chrono::steady_clock::now() + 30s;
  while (t::stored_totals(db, topic)["users"] < 200 && std::chrono::steady_clock::now() < deadline)
    std::this_thread::sleep_for(2ms);
  c->signal(SIGTERM);
  CHECK(c->wait(20s) == 0);
  CHECK(c->stderr_text().find("msg=stopped") != std::string::npos);
  const auto next = t::stored_totals(db, topic)["users"];
  MESSAGE("stopped at offset " << next << " of " << events.size());
  CHECK(next < static_cast<std::int64_t>(events.size()));
  // Exactly the events before the stored offset are in the ledger: nothing
  // applied beyond it, nothing below it missing.
  const std::vector<t::generated_event> before(events.begin(), events.begin() + next);
  CHECK(t::query_int(db, "SELECT count(*) FROM applied_events") ==
        reference_ledger_rows(before, pj::kind::users, dir, "ref-ledger.db"));
  CHECK(t::query_int(db, "SELECT max(\"offset\") FROM applied_events") < next);
}

TEST_CASE("a partition whose log range cannot be read at its first start is a warning, not silence") {
  // No stored offset: the consumer asks where the partition's log starts,
  // to say when its first events were deleted (start_incomplete). When that
  // question fails, start_unchecked says so, and the partition is read.
  clerk_sync::kafka::mock_cluster mock(1);
  mock.create_topic("unchecked", 1);
  // One failure: the check's first request (the log's start) fails, and
  // the consumer's own offset lookup after it must not meet a second one.
  mock.fail_next_requests(2 /* ListOffsets */, 1, 29 /* TOPIC_AUTHORIZATION_FAILED */);
  t::temp_dir dir;
  t::process consumer(t::binary_path("app/consumer/clerk-sync-consumer"),
                      {"--projection", "users", "--db", (dir / "u.db").string(), "--topic", "unchecked"},
                      {{"KAFKA_BROKERS", mock.bootstrap_servers()}, {"NOTIFY_SOCKET", ""}});
  CHECK_MESSAGE(consumer.wait_for_log("level=warn msg=start_unchecked projection=users partition=0 reason=", 60s),
                consumer.stderr_text());
  consumer.signal(SIGTERM);
  CHECK(consumer.wait(30s) == 0);
}
