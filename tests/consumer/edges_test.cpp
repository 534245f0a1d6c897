// The consumer at Kafka's edges, on the real broker (on a mock cluster where
// a request must fail): a stored offset the log no longer holds is fatal and
// loud (exit 5), and librdkafka's trouble shows as the project's own log
// lines (JSON when asked).
#include "consumer/harness.hpp"

#include <doctest/doctest.h>

#include <SQLiteCpp/SQLiteCpp.h>
#include <rapidjson/document.h>

#include <fcntl.h>
#include <sys/file.h>
#include <unistd.h>

#include <csignal>
#include <fstream>
#include <optional>
#include <thread>

#include "kafka/admin.hpp"
#include "kafka/consumer.hpp"
#include "kafka/mock_cluster.hpp"
#include "store/database.hpp"
#include "store/file_lock.hpp"
#include "support/own_broker.hpp"
#include "support/support.hpp"

using namespace std::chrono_literals;
namespace t = clerk_sync::test;
namespace kafka = clerk_sync::kafka;
using t::count_of;
using t::line_with;
using t::lines_of;

namespace {

std::vector<t::generated_event> some_events(int count, std::uint64_t seed) {
  auto all = t::generate_events({.users = 5, .events = count * 2, .seed = seed});
  all.resize(static_cast<std::size_t>(count));
  return all;
}

// CRC-32C (Castagnoli), as a record batch v2 holds it over its bytes from
// the attributes on.
std::uint32_t crc32c(std::string_view bytes) {
  std::uint32_t c = 0xFFFFFFFFu;
  for (const char b : bytes) {
    c ^= static_cast<unsigned char>(b);
    for (int k = 0; k < 8; ++k) c = (c >> 1) ^ (0x82F63B78u & (0u - (c & 1u)));
  }
  return ~c;
}

// Runs a consumer of `users` until it has stored `total`, then stops it
// cleanly; returns what it logged.
std::string consume_until(const std::string& topic, const std::string& db, const std::string& group,
                          std::int64_t total) {
  auto c = t::start_consumer({"--projection", "users", "--topic", topic, "--db", db, "--group-prefix", group});
  REQUIRE_MESSAGE(t::wait_caught_up(db, topic, {"users"}, total, 60s), c->stderr_text());
  c->signal(SIGTERM);
  const auto st = c->wait(60s);
  REQUIRE(st.has_value());
  REQUIRE(*st == 0);
  return c->stderr_text();
}

// The consumer must stop on its own with exit 5 and one error line `msg`
// that starts with `expected`; returns what it logged.
std::string expect_exit_5(const std::string& topic, const std::string& db, const std::string& group,
                          const std::string& msg, const std::string& expected) {
  auto c = t::start_consumer({"--projection", "users", "--topic", topic, "--db", db, "--group-prefix", group});
  const auto st = c->wait(90s);
  const auto err = c->stderr_text();
  REQUIRE_MESSAGE(st.has_value(), err);
  CHECK_MESSAGE(*st == 5, err);
  CHECK_MESSAGE(count_of(err, "msg=" + msg + " ") == 1, err);
  CHECK_MESSAGE(err.find("level=error msg=" + msg + " projection=users topic=" + topic + " " + expected) !=
                    std::string::npos,
                err);
  // The loop's totals are said however it ends, an exception included.
  CHECK_MESSAGE(count_of(err, "msg=write_totals projection=users batches=") == 1, err);
  return err;
}

// Exit 5 with a line naming the partition, the stored offset and the log's range.
void expect_out_of_range(const std::string& topic, const std::string& db, const std::string& group,
                         std::int64_t stored, std::int64_t log_start, std::int64_t log_end) {
  (void)expect_exit_5(topic, db, group, "offset_out_of_range",
                      "partition=0 offset=" + std::to_string(stored) + " log_start=" + std::to_string(log_start) +
                          " log_end=" + std::to_string(log_end));
}

}  // namespace

TEST_CASE("records deleted below the stored offset stop the consumer: one error line, exit 5") {
  const auto cfg = t::broker();
  const auto topic = t::fresh_topic("edge-deleted", 1);
  t::temp_dir dir;
  const auto db = (dir / "c.db").string();
  const auto group = t::unique_name("edge-del");
  t::produce_events(cfg, topic, some_events(10, 1));
  consume_until(topic, db, group, 10);

  t::produce_events(cfg, topic, some_events(10, 2));
  kafka::delete_records(cfg, topic, 0, 15, 30s);
  expect_out_of_range(topic, db, group, 10, 15, 20);
  // Nothing was skipped: the stored offset did not move.
  CHECK(t::stored_totals(db, topic)["users"] == 10);
}

TEST_CASE("a topic deleted and recreated stops the consumer: one error line, exit 5") {
  const auto cfg = t::broker();
  const auto topic = t::fresh_topic("edge-recreated", 1);
  t::temp_dir dir;
  const auto db = (dir / "c.db").string();
  const auto group = t::unique_name("edge-rec");
  t::produce_events(cfg, topic, some_events(10, 3));
  consume_until(topic, db, group, 10);

  t::recreate_topic(topic);
  t::produce_events(cfg, topic, some_events(3, 4));
  expect_out_of_range(topic, db, group, 10, 0, 3);
}

TEST_CASE("a topic deleted under a running consumer does not hold its stop: SIGTERM ends it within seconds") {
  // librdkafka 2.0.2's rd_kafka_destroy waits for ever for a broker thread
  // once a partition of the group was lost with its topic (librdkafka
  // #4187, fixed in 2.1.0): the process never exited, and systemd killed it
  // at TimeoutStopSec, or its watchdog aborted it, without a word.
  const auto cfg = t::broker();
  const auto topic = t::fresh_topic("edge-gone", 1);
  t::temp_dir dir;
  const auto db = (dir / "c.db").string();
  t::produce_events(cfg, topic, some_events(10, 5));
  auto c = t::start_consumer(
      {"--projection", "users", "--topic", topic, "--db", db, "--group-prefix", t::unique_name("edge-gone")});
  REQUIRE_MESSAGE(t::wait_caught_up(db, topic, {"users"}, 10, 60s), c->stderr_text());
  kafka::delete_topic(cfg, topic, 30s);
  std::this_thread::sleep_for(5s);  // the consumer finds its partition gone
  c->signal(SIGTERM);
  // The stop, then the destroy's 10 s bound: well within systemd's 60 s.
  const auto st = c->wait(25s);
  if (!st) c->signal(SIGKILL);
  REQUIRE_MESSAGE(st.has_value(), c->stderr_text());
  CHECK_MESSAGE(*st == 0, c->stderr_text());
  const auto err = c->stderr_text();
  CHECK_MESSAGE(err.find("msg=stopped exit_code=0") != std::string::npos, err);
  // The destroy left behind is said, when librdkafka is stuck in it.
  if (const auto stuck = line_with(err, "msg=kafka_destroy_stuck"); !stuck.empty()) {
    MESSAGE(stuck);
    CHECK(stuck.find("level=error") != std::string::npos);
  }
  CHECK(t::stored_totals(db, topic)["users"] == 10);  // nothing lost on the way out
}

TEST_CASE("a topic recreated and refilled past the stored offset stops the consumer: one error line, exit 5") {
  // Also when the last record applied came from another tool without a
  // svix-id (dead-lettered): its absence is compared too. It was left
  // unchecked as "no_svix_id", as if stored before migration 003, and the
  // new log's records up to the offset were skipped for good.
  for (const bool last_without_id : {false, true}) {
    CAPTURE(last_without_id);
    const auto cfg = t::broker();
    const auto topic = t::fresh_topic("edge-refilled", 1);
    t::temp_dir dir;
    const auto db = (dir / "c.db").string();
    const auto group = t::unique_name("edge-refill");
    auto before = some_events(10, 6);
    if (last_without_id) before.back().svix_id = "";
    t::produce_events(cfg, topic, before);
    const auto first = consume_until(topic, db, group, 10);
    CHECK(count_of(first, "reason=\"message without a svix-id header\"") == (last_without_id ? 1 : 0));

    t::recreate_topic(topic);
    const auto after = some_events(15, 7);
    t::produce_events(cfg, topic, after);
    const auto applied = last_without_id ? std::string("\"\"") : before[9].svix_id;
    const auto err = expect_exit_5(topic, db, group, "topic_recreated",
                                   "partition=0 offset=9 applied_svix_id=" + applied +
                                       " found_svix_id=" + after[9].svix_id);
    CHECK_MESSAGE(count_of(err, "msg=resume_unchecked") == 0, err);
    // Nothing of the new log was applied, and the stored offset did not move.
    CHECK_MESSAGE(count_of(err, "msg=event ") == 0, err);
    CHECK(t::stored_totals(db, topic)["users"] == 10);
  }
}

namespace {

// A consumer of `users` caught up with the 10 events of `before` on a
// fresh one-partition topic, with --position-check-ms `check_ms`; then the
// topic recreated and refilled past its position with `after` while the
// consumer is stopped (for less than its group session: no rebalance
// follows, and librdkafka reads on from the same offsets in the new log).
struct refilled_under_consumer {
  std::string topic = t::fresh_topic("edge-live-refill", 1);
  t::temp_dir dir;
  std::string db = (dir / "c.db").string();
  std::string group = t::unique_name("edge-live");
  std::vector<t::generated_event> before = some_events(10, 8);
  std::vector<t::generated_event> after = some_events(40, 9);
  std::unique_ptr<t::process> consumer;

  std::unique_ptr<t::process> start(const std::string& check_ms) const {
    // A group session longer than the SIGSTOP across a recreation and
    // refill (seconds on a loaded host): an ended session would assign the
    // partition again, and the resume check would find the recreation.
    return t::start_consumer({"--projection", "users", "--topic", topic, "--db", db, "--group-prefix", group,
                              "--position-check-ms", check_ms, "--kafka-property", "session.timeout.ms=45000"});
  }
  void run(const std::string& check_ms, std::chrono::milliseconds wait_before) {
    const auto cfg = t::broker();
    t::produce_events(cfg, topic, before);
    consumer = start(check_ms);
    REQUIRE_MESSAGE(t::wait_caught_up(db, topic, {"users"}, 10, 60s), consumer->stderr_text());
    std::this_thread::sleep_for(wait_before);
    consumer->signal(SIGSTOP);
    t::recreate_topic(topic);
    t::produce_events(cfg, topic, after);
    consumer->signal(SIGCONT);
  }
  [[nodiscard]] std::string recreated_line() const {
    return "level=error msg=topic_recreated projection=users topic=" + topic +
           " partition=0 offset=9 applied_svix_id=" + before[9].svix_id + " found_svix_id=" + after[9].svix_id;
  }
};

}  // namespace

TEST_CASE("a topic recreated and refilled while the consumer waits is found before any of the new log is applied") {
  refilled_under_consumer r;
  // Past the check interval (and the idle check after the first batch):
  // the next batch is checked before it is applied.
  r.run("500", 1500ms);
  const auto st = r.consumer->wait(30s);
  const auto err = r.consumer->stderr_text();
  CHECK_MESSAGE(st == 5, err);  // not still running, applying the new log
  CHECK_MESSAGE(err.find(r.recreated_line() + " applied_after=0") != std::string::npos, err);
  CHECK_MESSAGE(count_of(err, "msg=assigned ") == 1, err);  // found while running, not on a new assignment
  // Nothing of the new log was applied, and the stored offset did not move.
  CHECK(t::stored_totals(r.db, r.topic)["users"] == 10);
  CHECK(t::query_int(r.db, "SELECT count(*) FROM applied_events WHERE \"offset\" >= 10") == 0);
}

TEST_CASE("a topic recreated between two position checks is found when the consumer stops, and its position moved "
          "back so that a restart finds it too") {
  refilled_under_consumer r;
  // Far from the next check, the new log's first batch is applied unchecked.
  const auto started = std::chrono::steady_clock::now();
  r.run("600000", 0ms);
  REQUIRE_MESSAGE(std::chrono::steady_clock::now() - started < 40s, "stopped too long: its group session may end");
  REQUIRE_MESSAGE(t::wait_caught_up(r.db, r.topic, {"users"}, 40, 30s), r.consumer->stderr_text());
  CHECK(t::query_int(r.db, "SELECT count(*) FROM applied_events WHERE \"offset\" >= 10") > 0);  // the mix it reports
  // A stop checks what was applied since the last check, whatever the interval.
  r.consumer->signal(SIGTERM);
  const auto st = r.consumer->wait(30s);
  const auto err = r.consumer->stderr_text();
  CHECK_MESSAGE(st == 5, err);
  CHECK_MESSAGE(err.find(r.recreated_line() + " applied_after=30") != std::string::npos, err);
  // Moved back to the record that no longer matches: a restart finds it on assignment.
  CHECK(t::stored_totals(r.db, r.topic)["users"] == 10);
  const auto again = r.start("600000");
  const auto st2 = again->wait(40s);
  const auto err2 = again->stderr_text();
  CHECK_MESSAGE(st2 == 5, err2);
  CHECK_MESSAGE(err2.find(r.recreated_line()) != std::string::npos, err2);
}

TEST_CASE("a consumer killed between a topic's recreation and its next position check is stopped on restart, "
          "before applying anything") {
  refilled_under_consumer r;
  r.run("600000", 0ms);
  REQUIRE_MESSAGE(t::wait_caught_up(r.db, r.topic, {"users"}, 40, 30s), r.consumer->stderr_text());
  // Killed: no stop's check. The record before the stored offset is the
  // new log's, and a resume comparing it alone passes; the record checked
  // last (the old log's offset 9), stored with the offset, does not.
  r.consumer->signal(SIGKILL);
  (void)r.consumer->wait(10s);
  CHECK(t::query_int(r.db, "SELECT checked_offset FROM kafka_offsets WHERE projection = 'users'") == 9);
  t::produce_events(t::broker(), r.topic, some_events(5, 11));
  // Another group: the killed member's session is not waited for (offsets
  // are the database's).
  const auto again = t::start_consumer({"--projection", "users", "--topic", r.topic, "--db", r.db, "--group-prefix",
                                        t::unique_name("edge-killed"), "--position-check-ms", "600000"});
  const auto st = again->wait(40s);
  const auto err = again->stderr_text();
  CHECK_MESSAGE(st == 5, err);
  CHECK_MESSAGE(err.find(r.recreated_line() + " applied_after=30") != std::string::npos, err);
  CHECK_MESSAGE(count_of(err, "msg=event ") == 0, err);
  CHECK(t::stored_totals(r.db, r.topic)["users"] == 10);
  // Moved back to the checked record itself: nothing stored besides.
  CHECK(t::query_int(r.db, "SELECT count(*) FROM kafka_offsets WHERE checked_offset IS NOT NULL") == 0);
}

namespace {

// A consumer of `users` resuming while the broker does not answer its
// watermark queries (NOT_LEADER_FOR_PARTITION: a leader moving), so that
// the resume check cannot compare. The real broker cannot be made to fail
// one request: a mock cluster holds `log` as partition 0 of `topic`, as
// the real one would, and the database the position a consumer stored.
struct resume_in_hiccup {
  kafka::mock_cluster mock{1};
  std::string topic;
  std::vector<t::generated_event> log;
  t::temp_dir dir;
  std::string db = (dir / "c.db").string();

  resume_in_hiccup(std::string name, std::vector<t::generated_event> events)
      : topic(std::move(name)), log(std::move(events)) {
    mock.create_topic(topic, 1);
    t::produce_events({mock.bootstrap_servers(), {}}, topic, log);
  }
  // The position stored in partition 0: the next offset, the svix-id of the
  // record before it and, when given, the record stored as checked.
  void store_position(std::int64_t next, const std::string& last_svix_id,
                      const std::optional<std::pair<std::int64_t, std::string>>& checked) const {
    { const clerk_sync::store::database create(db); }
    SQLite::Database raw(db, SQLite::OPEN_READWRITE);
    SQLite::Statement st(raw,
                         "INSERT INTO kafka_offsets(projection, topic, partition, next_offset, updated_at, "
                         "last_svix_id, checked_offset, checked_svix_id) VALUES ('users', ?, 0, ?, 0, ?, ?, ?)");
    st.bind(1, topic);
    st.bind(2, next);
    st.bind(3, last_svix_id);
    if (checked) {
      st.bind(4, checked->first);
      st.bind(5, checked->second);
    }
    st.exec();
  }
  // Starts the consumer with the next `failed_queries` watermark queries
  // failing (each is two ListOffsets requests).
  std::unique_ptr<t::process> start(int failed_queries, const std::string& check_ms) {
    mock.fail_next_requests(2 /* ListOffsets */, 2 * failed_queries, 6 /* NOT_LEADER_FOR_PARTITION */);
    return t::start_consumer_on(mock.bootstrap_servers(),
                                {"--projection", "users", "--topic", topic, "--db", db, "--group-prefix",
                                 t::unique_name("edge-hiccup"), "--position-check-ms", check_ms});
  }
  [[nodiscard]] std::string recreated_line(const std::string& applied_svix_id) const {
    return "level=error msg=topic_recreated projection=users topic=" + topic +
           " partition=0 offset=9 applied_svix_id=" + applied_svix_id + " found_svix_id=" + log[9].svix_id;
  }
};

// The stored position of partition 0, and whether a checked record is stored with it.
std::int64_t stored_next(const std::string& db) {
  return t::query_int(db, "SELECT next_offset FROM kafka_offsets WHERE projection = 'users'");
}
std::int64_t stored_checked(const std::string& db) {
  return t::query_int(db, "SELECT count(*) FROM kafka_offsets WHERE checked_offset IS NOT NULL");
}

}  // namespace

TEST_CASE("a resume that cannot compare leaves the stored checked record to the first position check, which finds a "
          "recreated topic before anything is applied") {
  resume_in_hiccup r("edge-hiccup-checked", some_events(45, 12));
  // As a consumer killed between a recreation and its next position check
  // leaves it (above): records 10..39 applied from the new log, the old
  // log's record 9 stored as the one its last check found.
  r.store_position(40, r.log[39].svix_id, {{9, "msg_of_the_replaced_log"}});
  auto c = r.start(1, "600000");
  const auto st = c->wait(30s);
  const auto err = c->stderr_text();
  REQUIRE_MESSAGE(st.has_value(), err);  // not still running, applying the new log
  CHECK_MESSAGE(*st == 5, err);
  const auto unchecked = line_with(err, "msg=resume_unchecked projection=users partition=0 offset=40 reason=");
  CHECK_MESSAGE(unchecked.find("watermarks of " + r.topic + "/0") != std::string::npos, err);
  CHECK_MESSAGE(unchecked.find(" checked_offset=9") != std::string::npos, err);
  CHECK_MESSAGE(err.find(r.recreated_line("msg_of_the_replaced_log") + " applied_after=30") != std::string::npos, err);
  CHECK_MESSAGE(count_of(err, "msg=event ") == 0, err);
  // Moved back to the checked record: a restart stops the same way.
  CHECK(stored_next(r.db) == 10);
  CHECK(stored_checked(r.db) == 0);
}

TEST_CASE("a resume that cannot compare leaves the record before the stored offset to the first position check, "
          "which finds a recreated topic before anything is applied") {
  resume_in_hiccup r("edge-hiccup-last", some_events(45, 13));
  // As a clean stop, or a position moved back to a record that no longer
  // matches, leaves it: no checked record, the record before the offset
  // from a log since replaced.
  r.store_position(10, "msg_of_the_replaced_log", std::nullopt);
  auto c = r.start(1, "600000");
  const auto st = c->wait(30s);
  const auto err = c->stderr_text();
  REQUIRE_MESSAGE(st.has_value(), err);
  CHECK_MESSAGE(*st == 5, err);
  CHECK_MESSAGE(line_with(err, "msg=resume_unchecked projection=users partition=0 offset=10 reason=")
                        .find(" checked_offset=9") != std::string::npos,
                err);
  CHECK_MESSAGE(err.find(r.recreated_line("msg_of_the_replaced_log") + " applied_after=0") != std::string::npos, err);
  CHECK_MESSAGE(count_of(err, "msg=event ") == 0, err);
  CHECK(stored_next(r.db) == 10);
}

// The resume check asks each partition's log range before resuming one
// record early. Asked one after another under one 5 s bound, a leader down
// took the whole bound, and the partitions after it resumed unchecked ("no
// time left"); asked at once, only its own partitions wait.
TEST_CASE("a resume with one partition's leader down still re-reads the other partition's record before applying") {
  kafka::mock_cluster mock(2);
  const std::string topic = "edge-leader-down";
  mock.create_topic(topic, 2, 2);
  mock.set_partition_leader(topic, 0, 1);
  mock.set_partition_leader(topic, 1, 2);
  const auto prefix = t::unique_name("edge-leader-down");
  mock.set_group_coordinator(prefix + ".users", 2);
  const auto log = some_events(20, 17);
  const auto landed = t::produce_events({mock.bootstrap_servers(), {}}, topic, log);
  // Each partition's position as a consumer that applied all of it stored it.
  std::map<std::int32_t, std::pair<std::int64_t, std::string>> next_and_last;
  for (std::size_t i = 0; i < log.size(); ++i)
    if (auto& n = next_and_last[landed[i].partition]; landed[i].offset + 1 > n.first)
      n = {landed[i].offset + 1, log[i].svix_id};
  REQUIRE(next_and_last.size() == 2);
  t::temp_dir dir;
  const auto db = (dir / "c.db").string();
  { const clerk_sync::store::database create(db); }
  {
    SQLite::Database raw(db, SQLite::OPEN_READWRITE);
    for (const auto& [partition, at] : next_and_last) {
      SQLite::Statement st(raw,
                           "INSERT INTO kafka_offsets(projection, topic, partition, next_offset, updated_at, "
                           "last_svix_id) VALUES ('users', ?, ?, ?, 0, ?)");
      st.bind(1, topic);
      st.bind(2, partition);
      st.bind(3, at.first);
      st.bind(4, at.second);
      st.exec();
    }
  }
  mock.set_broker_down(1);  // partition 0's leader
  // A round trip as across a network: partition 1's query must not be left
  // only what the query of partition 0 did not use up.
  mock.set_round_trip(2, 50ms);
  auto c = t::start_consumer_on(mock.bootstrap_servers(), {"--projection", "users", "--topic", topic, "--db", db,
                                                           "--group-prefix", prefix, "--position-check-ms", "600000"});
  const auto p1 = "msg=assigned projection=users partition=1 offset=" + std::to_string(next_and_last[1].first);
  const bool assigned = c->wait_for_log(p1, 30s);
  c->signal(SIGTERM);
  const auto st = c->wait(60s);
  const auto err = c->stderr_text();
  REQUIRE_MESSAGE(assigned, err);
  CHECK_MESSAGE(line_with(err, p1).find("reread=true") != std::string::npos, err);
  // Partition 0 is left to the first position check, with its reason.
  CHECK_MESSAGE(line_with(err, "msg=resume_unchecked projection=users partition=0").find("watermarks of " + topic + "/0") !=
                    std::string::npos,
                err);
  // Partition 1's record re-read, compared and dropped: nothing applied twice.
  CHECK_MESSAGE(count_of(err, "msg=event ") == 0, err);
  CHECK_MESSAGE(count_of(err, "msg=topic_recreated") == 0, err);
  REQUIRE_MESSAGE(st.has_value(), err);
  CHECK_MESSAGE(*st == 0, err);
}

TEST_CASE("a stored checked record that the first position check cannot read either stays stored with the batches "
          "applied meanwhile, until a check reads it") {
  resume_in_hiccup r("edge-hiccup-kept", some_events(45, 14));
  // The same log: nothing was recreated, the stored record is still there.
  r.store_position(40, r.log[39].svix_id, {{9, r.log[9].svix_id}});
  // The resume's watermark query fails, and so does the first position check's.
  auto c = r.start(2, "600000");
  REQUIRE_MESSAGE(t::wait_caught_up(r.db, r.topic, {"users"}, 45, 60s), c->stderr_text());
  CHECK_MESSAGE(c->wait_for_log("level=warn msg=position_unchecked projection=users partition=0 offset=9 ", 10s),
                c->stderr_text());
  // Applied unchecked, as a running check that cannot read does: the record
  // is stored again with the offset, for the next check or a restart.
  CHECK(t::query_int(r.db, "SELECT checked_offset FROM kafka_offsets WHERE projection = 'users'") == 9);
  CHECK(t::query_int(r.db, "SELECT checked_svix_id = '" + r.log[9].svix_id + "' FROM kafka_offsets") == 1);
  // The stop's check reads it, finds it the same and forgets it.
  c->signal(SIGTERM);
  const auto st = c->wait(30s);
  const auto err = c->stderr_text();
  CHECK_MESSAGE(st == 0, err);
  CHECK_MESSAGE(count_of(err, "msg=event ") == 5, err);
  CHECK_MESSAGE(count_of(err, "msg=topic_recreated") == 0, err);
  CHECK(stored_next(r.db) == 45);
  CHECK(stored_checked(r.db) == 0);
}

TEST_CASE("a consumer waiting for ctl swap-in's lock stops at once when asked") {
  const auto topic = t::fresh_topic("edge-swap-wait", 1);
  t::temp_dir dir;
  const auto db = (dir / "c.db").string();
  { clerk_sync::store::database made(db); }
  // What swap-in holds while it replaces the projection.
  const auto lock = clerk_sync::store::projection_lock_path(db, "users");
  const int held = ::open(lock.c_str(), O_RDONLY | O_CREAT | O_CLOEXEC, 0644);
  REQUIRE(held >= 0);
  REQUIRE(::flock(held, LOCK_EX | LOCK_NB) == 0);
  auto c = t::start_consumer({"--projection", "users", "--topic", topic, "--db", db, "--group-prefix",
                              t::unique_name("edge-swap")});
  REQUIRE_MESSAGE(c->wait_for_log("msg=swap_wait projection=users", 20s), c->stderr_text());
  c->signal(SIGTERM);
  const auto st = c->wait(5s);  // not when the swap lets go
  CHECK_MESSAGE(st == 0, c->stderr_text());
  ::close(held);
}

TEST_CASE("resuming re-reads the record before the stored offset and applies nothing twice, trimmed or not") {
  const auto cfg = t::broker();
  const auto topic = t::fresh_topic("edge-resume", 1);
  t::temp_dir dir;
  const auto db = (dir / "c.db").string();
  const auto group = t::unique_name("edge-resume");
  t::produce_events(cfg, topic, some_events(10, 8));
  const auto first = consume_until(topic, db, group, 10);
  CHECK_MESSAGE(count_of(first, "msg=event ") == 10, first);
  CHECK_MESSAGE(count_of(first, "reread=false") == 1, first);
  CHECK_MESSAGE(count_of(first, "msg=write_totals projection=users batches=") == 1, first);
  CHECK_MESSAGE(count_of(first, "msg=write_totals projection=users batches=0 ") == 0, first);
  // A restart re-reads record 9 to check it, and applies only what is new.
  t::produce_events(cfg, topic, some_events(10, 9));
  const auto second = consume_until(topic, db, group, 20);
  CHECK_MESSAGE(count_of(second, "msg=event ") == 10, second);
  CHECK_MESSAGE(count_of(second, "partition=0 offset=10 reread=true") == 1, second);
  CHECK_MESSAGE(count_of(second, "msg=resume_unchecked") == 0, second);
  // Its batch stored record 9 as the one checked last; the stop checked
  // record 19 and forgot it.
  CHECK(t::query_int(db, "SELECT count(*) FROM kafka_offsets WHERE checked_offset IS NOT NULL") == 0);
  // Records trimmed up to exactly the stored offset: nothing to compare, nothing lost.
  kafka::delete_records(cfg, topic, 0, 20, 30s);
  t::produce_events(cfg, topic, some_events(5, 10));
  const auto third = consume_until(topic, db, group, 25);
  CHECK_MESSAGE(count_of(third, "msg=event ") == 5, third);
  CHECK_MESSAGE(count_of(third, "level=warn msg=resume_unchecked projection=users partition=0 offset=20 reason=trimmed") ==
                    1,
                third);
}

TEST_CASE("a projection with no stored offset starts at the log's first record, even when that is not offset 0") {
  const auto cfg = t::broker();
  const auto topic = t::fresh_topic("edge-start", 1);
  t::temp_dir dir;
  const auto db = (dir / "c.db").string();
  t::produce_events(cfg, topic, some_events(10, 5));
  kafka::delete_records(cfg, topic, 0, 4, 30s);
  auto c = t::start_consumer(
      {"--projection", "users", "--topic", topic, "--db", db, "--group-prefix", t::unique_name("edge-start")});
  REQUIRE_MESSAGE(t::wait_caught_up(db, topic, {"users"}, 10, 60s), c->stderr_text());
  CHECK(t::query_int(db, "SELECT count(*) FROM kafka_offsets WHERE projection = 'users'") == 1);
  c->signal(SIGTERM);
  REQUIRE(c->wait(60s) == 0);
  // Not in silence: the four events it will never see are named by where the log starts.
  const auto err = c->stderr_text();
  CHECK_MESSAGE(count_of(err, "level=warn msg=start_incomplete projection=users partition=0 log_start=4 ") == 1, err);
}

TEST_CASE("batches that cannot be decompressed stop their partitions, apply nothing, and each error line names where it is") {
  // A broker of the test's own: its log file is edited under it, as a
  // failing disk or a bad copy would; the broker serves the batch as it is.
  t::own_broker b;
  kafka::client_config cfg;
  cfg.brokers = b.address();
  const auto topic = t::unique_name("edge-gzip");
  REQUIRE(kafka::create_topic(cfg, {.name = topic, .partitions = 2, .replication_factor = 1, .configs = {}}, 15s) ==
          kafka::create_outcome::created);
  auto gzip = cfg;
  gzip.properties = {{"compression.codec", "gzip"}};
  t::produce_events(gzip, topic, some_events(20, 9));
  // Both partitions: one stuck partition's lines must not hide another's.
  for (const auto* partition : {"-0", "-1"}) {
    const auto segment = b.dir() / "kafka" / "data" / (topic + partition) / "00000000000000000000.log";
    auto log = t::read_file(segment);
    // Record batch v2: 61 bytes of header, the attributes an int16 at 21-22
    // (big-endian; the codec in the low 3 bits, 1 = gzip), then the
    // compressed records, a gzip stream. Its magic bytes broken, no inflate
    // can start. The batch's CRC (bytes 17-20, over the rest from the
    // attributes on) is made anew, as a producer that compressed badly
    // would have written it: a changed byte alone fails that check first.
    REQUIRE(log.size() > 61 + 2);
    REQUIRE((log[22] & 7) == 1);
    REQUIRE((log[61] == '\x1f' && log[62] == '\x8b'));
    log[61] = '\0';
    std::size_t length = 0;
    for (std::size_t i = 8; i < 12; ++i) length = (length << 8) | static_cast<unsigned char>(log[i]);
    REQUIRE(12 + length <= log.size());
    const auto crc = crc32c(std::string_view(log).substr(21, 12 + length - 21));
    for (std::size_t i = 0; i < 4; ++i) log[17 + i] = static_cast<char>((crc >> (8 * (3 - i))) & 0xFFu);
    std::fstream out(segment, std::ios::binary | std::ios::in | std::ios::out);
    out.write(log.data(), static_cast<std::streamsize>(log.size()));
  }
  t::temp_dir dir;
  const auto db = (dir / "c.db").string();
  auto c = t::start_consumer_on(b.address(), {"--projection", "users", "--topic", topic, "--db", db, "--group-prefix",
                                              t::unique_name("edge-gzip")});
  const bool seen = c->wait_for_log(" partition=0 offset=0 error=_BAD_COMPRESSION ", 30s) &&
                    c->wait_for_log(" partition=1 offset=0 error=_BAD_COMPRESSION ", 30s);
  c->signal(SIGTERM);
  REQUIRE(c->wait(60s) == 0);
  const auto err = c->stderr_text();
  CHECK_MESSAGE(seen, err);
  CHECK_MESSAGE(count_of(err, " topic=" + topic + " partition=") >= 2, err);
  for (const auto* partition : {"0", "1"})
    CHECK_MESSAGE(line_with(err, " partition=" + std::string(partition) + " offset=0 error=_BAD_COMPRESSION ")
                          .find("level=error msg=kafka_error client=") != std::string::npos,
                  err);
  CHECK(t::stored_totals(db, topic)["users"] == 0);
  CHECK(t::query_int(db, "SELECT count(*) FROM users") == 0);
}

TEST_CASE("a record batch that fails its checksum stops the consumer before it: nothing past it is applied") {
  // A byte of a stored batch changed (a failing disk, a bad copy), where it
  // still reads as JSON: unchecked, it was applied as another user's
  // event. librdkafka checks each batch's CRC (check.crcs, which the
  // consumers turn on), says _BAD_MSG, and goes on with the next batch: its
  // events were applied and the offset stored past the bad one.
  t::own_broker b;
  kafka::client_config cfg;
  cfg.brokers = b.address();
  const auto topic = t::unique_name("edge-crc");
  REQUIRE(kafka::create_topic(cfg, {.name = topic, .partitions = 1, .replication_factor = 1, .configs = {}}, 15s) ==
          kafka::create_outcome::created);
  const auto events = some_events(9, 12);
  for (std::size_t i = 0; i < 9; i += 3)  // a producer each: one batch or more each
    t::produce_events(cfg, topic, {events.begin() + static_cast<std::ptrdiff_t>(i),
                                   events.begin() + static_cast<std::ptrdiff_t>(i + 3)});
  const auto segment = b.dir() / "kafka" / "data" / (topic + "-0") / "00000000000000000000.log";
  auto log = t::read_file(segment);
  // Record batch v2: its base offset (int64) and its length past those 12
  // bytes (int32), big-endian, then 49 more bytes of header.
  const auto be = [&log](std::size_t at, int bytes) {
    std::int64_t v = 0;
    for (int i = 0; i < bytes; ++i) v = (v << 8) | static_cast<unsigned char>(log[at + static_cast<std::size_t>(i)]);
    return v;
  };
  std::size_t at = 0;
  while (at + 61 <= log.size() && be(at, 8) != 3) at += 12 + static_cast<std::size_t>(be(at + 8, 4));
  REQUIRE(at + 61 <= log.size());  // the batch starting at offset 3
  const auto end = at + 12 + static_cast<std::size_t>(be(at + 8, 4));
  const auto id = log.find("user_", at + 61);
  REQUIRE(id != std::string::npos);
  REQUIRE(id + 6 < end);
  log[id + 5] = static_cast<char>(log[id + 5] ^ 1);  // another user's id, still JSON
  {
    std::fstream out(segment, std::ios::binary | std::ios::in | std::ios::out);
    out.write(log.data(), static_cast<std::streamsize>(log.size()));
  }
  t::temp_dir dir;
  const auto db = (dir / "c.db").string();
  auto c = t::start_consumer_on(b.address(), {"--projection", "users", "--topic", topic, "--db", db, "--group-prefix",
                                              t::unique_name("edge-crc")});
  const auto st = c->wait(60s);
  const auto err = c->stderr_text();
  REQUIRE_MESSAGE(st.has_value(), err);
  CHECK_MESSAGE(*st == 4, err);  // a Kafka failure: restarted, stopping there again
  CHECK_MESSAGE(line_with(err, "level=error msg=kafka_failed projection=users").find(topic + "/0 offset 3") !=
                    std::string::npos,
                err);
  CHECK(t::stored_totals(db, topic)["users"] == 3);
  // The position check, status and replay read records by header_at: the
  // bad batch fails its partition's record, not the whole reading. (This
  // reader is told of an offset out of range first, one librdkafka 2.0.2
  // read from the bad batch's bytes once it skipped it wrongly; each is
  // taken for its partition alone.)
  kafka::consumer reader(kafka::single_record_reader(cfg), "");
  const auto read = kafka::header_at(reader, topic, {{0, {1, 3}}}, "svix-id", 20s);
  CHECK(read.found.contains({0, 1}));
  CHECK_MESSAGE(read.why.empty(), read.why);
  CHECK(read.failed.contains({0, 3}));
}

TEST_CASE("an error of a whole topic names the topic, and no partition it did not happen at") {
  kafka::mock_cluster mock(1);
  mock.create_topic("acl-denied", 1);
  mock.set_topic_error("acl-denied", 29);  // TOPIC_AUTHORIZATION_FAILED
  t::temp_dir dir;
  auto c = t::start_consumer_on(mock.bootstrap_servers(), {"--projection", "users", "--topic", "acl-denied", "--db",
                                                           (dir / "c.db").string(), "--group-prefix",
                                                           t::unique_name("edge-acl")});
  const bool seen = c->wait_for_log("msg=kafka_error", 30s);
  c->signal(SIGTERM);
  REQUIRE(c->wait(30s) == 0);
  const auto line = line_with(c->stderr_text(), "msg=kafka_error");
  CHECK_MESSAGE(seen, c->stderr_text());
  CHECK_MESSAGE(line.find(" topic=acl-denied error=TOPIC_AUTHORIZATION_FAILED ") != std::string::npos, line);
  CHECK_MESSAGE(line.find("partition=") == std::string::npos, line);
}

TEST_CASE("a wrong security.protocol is an error line within 10 s, and every line of --log-format json parses") {
  const auto topic = t::fresh_topic("edge-ssl", 1);
  t::temp_dir dir;
  auto c = t::start_consumer({"--projection", "users", "--topic", topic, "--db", (dir / "c.db").string(),
                              "--group-prefix", t::unique_name("edge-ssl"), "--log-format", "json",
                              "--kafka-property", "security.protocol=ssl"});
  const bool seen = c->wait_for_log("\"level\":\"error\",\"msg\":\"kafka_", 10s);
  c->signal(SIGTERM);
  (void)c->wait(60s);
  const auto err = c->stderr_text();
  CHECK_MESSAGE(seen, err);
  const auto lines = lines_of(err);
  CHECK(lines.size() >= 2);
  for (const auto& line : lines) {
    rapidjson::Document d;
    d.Parse(line.c_str(), line.size());
    CHECK_MESSAGE(!d.HasParseError(), line);
    CHECK_MESSAGE((d.IsObject() && d.HasMember("msg") && d.HasMember("level")), line);
  }
  // librdkafka's own format never reaches stderr.
  CHECK_MESSAGE(err.find("%3|") == std::string::npos, err);
  CHECK_MESSAGE(err.find("%4|") == std::string::npos, err);
}

TEST_CASE("ledger rows past --ledger-retention are pruned by the consumer, and the rows stay") {
  const auto cfg = t::broker();
  const auto topic = t::fresh_topic("edge-prune", 2);
  t::temp_dir dir;
  const auto db = (dir / "c.db").string();
  const auto events = some_events(60, 6);
  t::produce_events(cfg, topic, events);
  auto c = t::start_consumer({"--projection", "users,sessions", "--topic", topic, "--db", db, "--group-prefix",
                              t::unique_name("edge-prune"), "--ledger-retention", "3s"});
  REQUIRE_MESSAGE(t::wait_caught_up(db, topic, {"users", "sessions"}, 60, 60s), c->stderr_text());
  const auto tables = t::dump_tables(db);
  CHECK(c->wait_for_log("msg=pruned", 60s));
  const auto deadline = std::chrono::steady_clock::now() + 60s;
  while (t::query_int(db, "SELECT count(*) FROM applied_events") > 0 && std::chrono::steady_clock::now() < deadline)
    std::this_thread::sleep_for(200ms);
  CHECK(t::query_int(db, "SELECT count(*) FROM applied_events") == 0);
  CHECK(t::dump_tables(db) == tables);
  c->signal(SIGTERM);
  CHECK(c->wait(60s) == 0);
}
