// clerk-sync-ctl against the real broker and the real binaries: topic ensure,
// status with its --max-lag exit, replay of every projection while the live
// consumers keep running (then compare: identical), a replay stopped by a
// signal or killed, send through the real receiver, and dead letters.
#include <doctest/doctest.h>
#include <SQLiteCpp/SQLiteCpp.h>
#include <fcntl.h>
#include <signal.h>
#include <sys/file.h>
#include <unistd.h>

#include <librdkafka/rdkafka.h>

#include <array>
#include <atomic>
#include <fstream>
#include <memory>
#include <set>
#include <sstream>
#include <thread>

#include "consumer/harness.hpp"
#include "kafka/admin.hpp"
#include "kafka/consumer.hpp"
#include "kafka/producer.hpp"
#include "ops/events.hpp"
#include "ops/replay.hpp"
#include "receiver/harness.hpp"
#include "store/database.hpp"
#include "support/hang.hpp"
#include "support/own_broker.hpp"
#include "support/process.hpp"
#include "support/support.hpp"

using namespace clerk_sync;
using namespace std::chrono_literals;

namespace {

std::filesystem::path ctl() { return test::binary_path("app/ctl/clerk-sync-ctl"); }

std::map<std::string, std::string> kafka_env(const std::string& topic) {
  // Empty: as unset (a shell that sourced an environment file must not
  // change what the tests expect).
  return {{"KAFKA_BROKERS", test::broker().brokers}, {"CLERK_SYNC_TOPIC", topic}, {"CLERK_SYNC_DB", ""},
          {"CLERK_WEBHOOK_SECRET", ""}, {"CLERK_WEBHOOK_SECRET_FILE", ""}, {"CLERK_SYNC_BODY_LIMIT", ""},
          {"CLERK_SYNC_HEADER_LIMIT", ""}};
}

test::run_result ctl_run(const std::vector<std::string>& args, const std::string& topic,
                         std::chrono::milliseconds timeout = 60s) {
  return test::run(ctl(), args, kafka_env(topic), timeout);
}

// Polls `ctl status --max-lag 0` until it exits 0; the last result either way.
test::run_result wait_lag_zero(const std::string& db, const std::string& topic, const std::string& projections,
                               std::chrono::milliseconds timeout) {
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  test::run_result r;
  do {
    r = ctl_run({"status", "--db", db, "--projection", projections, "--max-lag", "0"}, topic);
    if (r.status == 0) return r;
    std::this_thread::sleep_for(300ms);
  } while (std::chrono::steady_clock::now() < deadline);
  return r;
}

std::int64_t high_watermark_sum(const std::string& topic) {
  kafka::consumer reader(test::broker(), "");
  std::int64_t sum = 0;
  for (const auto p : reader.partitions_of(topic, 10s)) sum += reader.watermarks(topic, p, 10s).second;
  return sum;
}

// Produces `committed` to partition 0 in a transaction that commits, then
// `aborted` in one that aborts once its records are in the log, as a
// transactional producer other than the receiver writes (an operator's test
// tool): the log ends with the abort's control record, which, as the
// aborted records and the commit's marker, no read_committed reader is given.
void produce_transactions(const std::string& topic, const std::vector<test::generated_event>& committed,
                          const std::vector<test::generated_event>& aborted) {
  std::array<char, 512> err{};
  rd_kafka_conf_t* conf = rd_kafka_conf_new();
  const auto tx_id = test::unique_name("ctl-replay-tx");
  REQUIRE(rd_kafka_conf_set(conf, "bootstrap.servers", test::broker().brokers.c_str(), err.data(), err.size()) ==
          RD_KAFKA_CONF_OK);
  REQUIRE(rd_kafka_conf_set(conf, "transactional.id", tx_id.c_str(), err.data(), err.size()) == RD_KAFKA_CONF_OK);
  // librdkafka's own lines (a coordinator still loading) are not the test's.
  REQUIRE(rd_kafka_conf_set(conf, "log_level", "3", err.data(), err.size()) == RD_KAFKA_CONF_OK);
  const std::unique_ptr<rd_kafka_t, decltype(&rd_kafka_destroy)> rk(
      rd_kafka_new(RD_KAFKA_PRODUCER, conf, err.data(), err.size()), &rd_kafka_destroy);
  REQUIRE_MESSAGE(rk, err.data());
  const auto failure = [](rd_kafka_error_t* e) {
    const std::string what = e ? rd_kafka_error_string(e) : "";
    if (e) rd_kafka_error_destroy(e);
    return what;
  };
  REQUIRE(failure(rd_kafka_init_transactions(rk.get(), 30'000)).empty());
  const auto send = [&](const std::vector<test::generated_event>& events) {
    REQUIRE(failure(rd_kafka_begin_transaction(rk.get())).empty());
    for (const auto& e : events) {
      rd_kafka_headers_t* h = rd_kafka_headers_new(2);
      rd_kafka_header_add(h, "svix-id", -1, e.svix_id.data(), static_cast<ssize_t>(e.svix_id.size()));
      rd_kafka_header_add(h, "clerk-event-type", -1, e.type.data(), static_cast<ssize_t>(e.type.size()));
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wold-style-cast"  // librdkafka's RD_KAFKA_V_* macros
      const auto r = rd_kafka_producev(rk.get(), RD_KAFKA_V_TOPIC(topic.c_str()), RD_KAFKA_V_PARTITION(0),
                                       RD_KAFKA_V_KEY(const_cast<char*>(e.key.data()), e.key.size()),
                                       RD_KAFKA_V_VALUE(const_cast<char*>(e.body.data()), e.body.size()),
                                       RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY), RD_KAFKA_V_HEADERS(h), RD_KAFKA_V_END);
#pragma GCC diagnostic pop
      if (r != RD_KAFKA_RESP_ERR_NO_ERROR) rd_kafka_headers_destroy(h);
      REQUIRE(r == RD_KAFKA_RESP_ERR_NO_ERROR);
    }
    // In the log before the transaction ends: an abort drops what is unsent.
    REQUIRE(rd_kafka_flush(rk.get(), 30'000) == RD_KAFKA_RESP_ERR_NO_ERROR);
  };
  send(committed);
  REQUIRE(failure(rd_kafka_commit_transaction(rk.get(), 30'000)).empty());
  send(aborted);
  REQUIRE(failure(rd_kafka_abort_transaction(rk.get(), 30'000)).empty());
}

}  // namespace

TEST_CASE("status flags a stored offset past the log's end (a recreated topic) and exits 1 without --max-lag") {
  const auto topic = test::fresh_topic("ctl-status-range", 1);
  test::temp_dir dir;
  const auto db = (dir / "range.db").string();
  { store::database created(db); }
  const auto store_offset = [&](std::int64_t next) {
    test::store_offset(db, {.topic = topic, .next_offset = next, .last_svix_id = "msg_x"});
  };
  store_offset(7);  // the topic, fresh, holds nothing: as if deleted and recreated
  auto r = ctl_run({"status", "--db", db, "--projection", "users"}, topic);
  INFO("stdout:\n" << r.out << "stderr:\n" << r.err);
  CHECK(r.status == 1);
  CHECK(r.out.find("stored 7, watermarks [0, 0), lag 0, OUT OF RANGE") != std::string::npos);
  CHECK(r.err.find("msg=offset_out_of_range projection=users partition=0 offset=7") != std::string::npos);
  store_offset(0);
  r = ctl_run({"status", "--db", db, "--projection", "users"}, topic);
  CHECK(r.status == 0);
  CHECK(r.out.find("OUT OF RANGE") == std::string::npos);
  // An offset of a partition the topic does not have (another cluster's
  // topic, or one recreated with fewer partitions) was left out unsaid.
  test::store_offset(db, {.topic = topic, .partition = 3, .next_offset = 2, .last_svix_id = "msg_y"});
  r = ctl_run({"status", "--db", db, "--projection", "users"}, topic);
  CHECK(r.status == 1);
  CHECK_MESSAGE(r.out.find("partition 3: stored, but " + topic + " has no such partition") != std::string::npos, r.out);
  CHECK(r.err.find("msg=partition_unknown projection=users topic=" + topic + " partition=3") != std::string::npos);
}

TEST_CASE("status flags a stored offset whose record before is another event: a recreated and refilled topic") {
  // The consumer's resume check (topic_recreated, exit 5) done by status:
  // the offset lies inside the log, so neither the lag nor OUT OF RANGE
  // would say that this projection has stopped.
  const auto topic = test::fresh_topic("ctl-status-recreated", 1);
  const auto events = test::generate_events({.users = 3, .events = 10, .seed = 31});
  test::produce_events(test::broker(), topic, events);
  const std::string applied = events[4].svix_id;  // one partition: the record at offset 4
  test::temp_dir dir;
  const auto db = (dir / "recreated.db").string();
  { store::database created(db); }
  const auto store_offset = [&](const std::string& last_id) {
    test::store_offset(db, {.topic = topic, .next_offset = 5, .last_svix_id = last_id});
  };
  store_offset(applied);
  auto r = ctl_run({"status", "--db", db, "--projection", "users"}, topic);
  CHECK(r.status == 0);
  CHECK_MESSAGE(r.err.find("resume_unchecked") == std::string::npos, r.err);  // read, and compared
  CHECK(r.out.find("stored 5, watermarks [0, 10), lag 5\n") != std::string::npos);
  store_offset("msg_applied_before_the_topic_was_recreated");
  r = ctl_run({"status", "--db", db, "--projection", "users"}, topic);
  CHECK(r.status == 1);
  CHECK(r.out.find("stored 5, watermarks [0, 10), lag 5, RECREATED") != std::string::npos);
  CHECK(r.err.find("msg=topic_recreated projection=users topic=" + topic + " partition=0 offset=4 "
                   "applied_svix_id=msg_applied_before_the_topic_was_recreated found_svix_id=" + applied) !=
        std::string::npos);

  // The record before the offset matches, but the one a consumer stored as
  // checked (killed between two position checks) does not: it stops too.
  store_offset(applied);
  const auto store_checked = [&](const std::string& id) {
    store::database d(db);
    store::exec(d, "UPDATE kafka_offsets SET checked_offset = 2, checked_svix_id = '" + id + "'");
  };
  store_checked(events[2].svix_id);
  r = ctl_run({"status", "--db", db, "--projection", "users"}, topic);
  CHECK_MESSAGE(r.status == 0, r.err);
  store_checked("msg_checked_before_the_topic_was_recreated");
  r = ctl_run({"status", "--db", db, "--projection", "users"}, topic);
  CHECK(r.status == 1);
  CHECK(r.out.find("stored 5, watermarks [0, 10), lag 5, RECREATED") != std::string::npos);
  CHECK(r.err.find("msg=topic_recreated projection=users topic=" + topic + " partition=0 offset=2 "
                   "applied_svix_id=msg_checked_before_the_topic_was_recreated found_svix_id=" + events[2].svix_id) !=
        std::string::npos);
}

TEST_CASE("status exits 1 past --max-dead-letters, which a consumer that dead-letters all it reads needs") {
  const auto topic = test::fresh_topic("ctl-status-dead", 1);
  test::temp_dir dir;
  const auto db = (dir / "dead.db").string();
  {
    store::database d(db);
    for (int i = 0; i < 2; ++i)
      store::exec(d, "INSERT INTO dead_letters(projection, topic, partition, \"offset\", svix_id, type, reason, "
                     "payload, created_at) VALUES ('balances', '" + topic + "', 0, " + std::to_string(i) +
                     ", 'msg_" + std::to_string(i) + "', 'user.updated', 'not JSON', x'00', 0)");
  }
  auto r = ctl_run({"status", "--db", db, "--max-dead-letters", "2"}, topic);
  CHECK_MESSAGE(r.status == 0, r.err);
  r = ctl_run({"status", "--db", db, "--max-dead-letters", "1"}, topic);
  CHECK(r.status == 1);
  CHECK_MESSAGE(r.err.find("msg=\"dead letters over threshold\" projection=balances dead_letters=2 "
                           "max_dead_letters=1") != std::string::npos, r.err);
  CHECK(r.err.find("projection=users dead_letters") == std::string::npos);
  r = ctl_run({"status", "--db", db}, topic);  // no threshold: dead letters alone never fail it
  CHECK(r.status == 0);
}

TEST_CASE("status reads a file from before migration 003, which stores no svix-id with its offsets") {
  // A backup, or a consumer stopped since an upgrade: status opens it
  // read-only, without migrating, and must still answer.
  const auto topic = test::fresh_topic("ctl-status-old", 1);
  test::produce_events(test::broker(), topic, test::generate_events({.users = 2, .events = 6, .seed = 41}));
  test::temp_dir dir;
  const auto db = (dir / "old.db").string();
  {
    SQLite::Database raw(db, SQLite::OPEN_READWRITE | SQLite::OPEN_CREATE);
    for (const char* f : {"schemas/sql/001_initial.sql", "schemas/sql/002_bounded_state.sql"})
      raw.exec(test::read_file(test::source_path(f)));
    raw.exec("PRAGMA user_version = 2");
    raw.exec("INSERT INTO kafka_offsets(projection, topic, partition, next_offset, updated_at) VALUES ('users', '" +
             topic + "', 0, 3, 0)");
  }
  const auto r = ctl_run({"status", "--db", db, "--projection", "users"}, topic);
  CHECK_MESSAGE(r.status == 0, r.err);
  const auto high = high_watermark_sum(topic);
  CHECK_MESSAGE(r.out.find("stored 3, watermarks [0, " + std::to_string(high) + "), lag " + std::to_string(high - 3) +
                           "\n") != std::string::npos,
                r.out);
}

TEST_CASE("status fails on a topic the file stores no offsets for while it stores them for another") {
  // A monitor given a stray --topic (an empty topic the consumers never
  // read) saw "stored none, lag 0" for every partition and exited 0 for ever.
  const auto topic = test::fresh_topic("ctl-status-stray", 2);
  const auto read = test::unique_name("ctl-status-read");  // the topic the consumers read; need not exist here
  test::temp_dir dir;
  const auto db = (dir / "stray.db").string();
  const auto store_offset = [&](const std::string& projection, const std::string& on, std::int64_t next) {
    test::store_offset(db, {.projection = projection, .topic = on, .next_offset = next, .last_svix_id = "msg_x"});
  };
  { store::database fresh(db); }
  // A fresh file (no consumer has run) is not an error: nothing is stored anywhere.
  auto r = ctl_run({"status", "--db", db, "--projection", "users,sessions", "--max-lag", "0"}, topic);
  CHECK_MESSAGE(r.status == 0, r.err);
  CHECK(r.err.find("topic_mismatch") == std::string::npos);

  store_offset("users", read, 3);
  store_offset("users", read + "-old", 9);
  r = ctl_run({"status", "--db", db, "--projection", "users,sessions", "--max-lag", "0"}, topic);
  CHECK(r.status == 1);
  CHECK_MESSAGE(r.err.find("level=error msg=topic_mismatch projection=users topic=" + topic + " stored_topics=" +
                           read + "," + read + "-old") != std::string::npos,
                r.err);
  CHECK_MESSAGE(r.out.find("  WRONG TOPIC: no offsets stored for " + topic + "; this file's users offsets are for " +
                           read + "," + read + "-old\n") != std::string::npos,
                r.out);
  // sessions stores nothing anywhere: as in a fresh file, no complaint.
  CHECK(r.err.find("topic_mismatch projection=sessions") == std::string::npos);
  // Without a threshold too: this is a wrong setting, not a lag.
  CHECK(ctl_run({"status", "--db", db, "--projection", "users"}, topic).status == 1);

  // A migration to the new topic: once a consumer commits there, the file
  // holds offsets for both, and status reads the new one as usual.
  store_offset("users", topic, 0);
  r = ctl_run({"status", "--db", db, "--projection", "users,sessions", "--max-lag", "0"}, topic);
  CHECK_MESSAGE(r.status == 0, r.err);
  CHECK(r.err.find("topic_mismatch") == std::string::npos);
  CHECK(r.out.find("WRONG TOPIC") == std::string::npos);
}

TEST_CASE("status warns about a topic's settings that lose events, as topic ensure does, without failing") {
  // As a broker's auto-creation or a hand-made topic would be: a week's
  // retention, Kafka's default message size.
  const auto topic = test::unique_name("ctl-status-settings");
  REQUIRE(kafka::create_topic(test::broker(), {topic, 1, 1, {{"retention.ms", "604800000"}}}, 15s) ==
          kafka::create_outcome::created);
  // Listed by the broker before status asks (a broker just started may
  // answer "does not exist" for a moment after the creation).
  {
    kafka::consumer reader(test::broker(), "");
    const auto until = std::chrono::steady_clock::now() + 15s;
    while (reader.partitions_of(topic, 2s).empty() && std::chrono::steady_clock::now() < until)
      std::this_thread::sleep_for(100ms);
  }
  test::temp_dir dir;
  const auto db = (dir / "settings.db").string();
  { store::database made(db); }
  auto r = ctl_run({"status", "--db", db, "--projection", "users"}, topic);
  CHECK(r.status == 0);
  CHECK_MESSAGE(r.err.find("level=warn msg=\"topic not replayable\" topic=" + topic) != std::string::npos, r.err);
  CHECK(r.err.find("msg=\"topic too small\"") != std::string::npos);
  // What topic ensure creates gets no warning.
  const auto good = test::unique_name("ctl-status-settings-ok");
  REQUIRE(ctl_run({"topic", "ensure", "--topic", good, "--partitions", "1"}, good).status == 0);
  r = ctl_run({"status", "--db", db, "--projection", "users"}, good);
  CHECK(r.status == 0);
  CHECK_MESSAGE(r.err.find("msg=\"topic not") == std::string::npos, r.err);
  CHECK(r.err.find("msg=\"topic too small\"") == std::string::npos);
  // Judged by the receiver's body limit from the environment, as run.
  auto env = kafka_env(good);
  env["CLERK_SYNC_BODY_LIMIT"] = std::to_string(3 * 1024 * 1024);
  r = test::run(ctl(), {"status", "--db", db, "--projection", "users"}, env, 60s);
  CHECK(r.status == 0);
  CHECK_MESSAGE(r.err.find("msg=\"topic too small\"") != std::string::npos, r.err);
}

TEST_CASE("topic ensure creates a replayable topic, and --strict fails on a compacted one") {
  const auto name = test::unique_name("ctl-topic");
  const auto created = ctl_run({"topic", "ensure", "--topic", name, "--partitions", "4"}, name);
  INFO(created.err);
  CHECK(created.status == 0);
  CHECK(created.err.find("topic created") != std::string::npos);
  const auto config = kafka::describe_topic(test::broker(), name, 10s);
  REQUIRE(config);
  CHECK(config->at("retention.ms") == "-1");
  CHECK(config->at("cleanup.policy") == "delete");
  CHECK(config->at("max.message.bytes") == "2097152");  // the receiver's 1 MiB bodies fit
  CHECK(config->at("unclean.leader.election.enable") == "false");  // the key the durability check reads
  kafka::consumer reader(test::broker(), "");
  CHECK(reader.partitions_of(name, 10s).size() == 4);

  const auto again = ctl_run({"topic", "ensure", "--topic", name, "--strict"}, name);
  CHECK(again.status == 0);
  CHECK(again.err.find("topic exists") != std::string::npos);

  // A receiver run with 3 MiB bodies (its variable in the environment file
  // the README sources for ctl): the 2 MiB topic is too small for it, and a
  // new one is made large enough. They judged by the default limit before.
  auto big_env = kafka_env(name);
  big_env["CLERK_SYNC_BODY_LIMIT"] = std::to_string(3 * 1024 * 1024);
  const auto small = test::run(ctl(), {"topic", "ensure", "--topic", name, "--strict"}, big_env, 60s);
  INFO(small.err);
  CHECK(small.status == 1);
  CHECK(small.err.find(R"(msg="topic too small")") != std::string::npos);
  const auto roomy = test::unique_name("ctl-topic-big");
  big_env["CLERK_SYNC_TOPIC"] = roomy;
  const auto made = test::run(ctl(), {"topic", "ensure", "--strict"}, big_env, 60s);
  INFO(made.err);
  CHECK(made.status == 0);
  const auto roomy_config = kafka::describe_topic(test::broker(), roomy, 10s);
  REQUIRE(roomy_config);
  CHECK(roomy_config->at("max.message.bytes") == std::to_string(3 * 1024 * 1024 + 16 * 1024 + 4096));

  // A topic someone made with compaction and a week of retention.
  const auto bad = test::unique_name("ctl-topic-compact");
  REQUIRE(kafka::create_topic(test::broker(), {bad, 1, 1, {{"cleanup.policy", "compact"}, {"retention.ms", "604800000"}}},
                              10s) == kafka::create_outcome::created);
  const auto lax = ctl_run({"topic", "ensure", "--topic", bad}, bad);
  CHECK(lax.status == 0);
  CHECK(lax.err.find("compact") != std::string::npos);
  const auto strict = ctl_run({"topic", "ensure", "--topic", bad, "--strict"}, bad);
  INFO(strict.err);
  CHECK(strict.status == 1);
  CHECK(strict.err.find("retention.ms=604800000") != std::string::npos);
  CHECK(strict.err.find("msg=\"topic too small\"") != std::string::npos);  // Kafka's default max.message.bytes

  // Creation settings on an existing topic are never applied, and a line says so.
  CHECK(again.err.find("not applied") == std::string::npos);
  const auto asked = ctl_run({"topic", "ensure", "--topic", bad, "--retention-ms", "-1", "--partitions", "12",
                             "--config", "cleanup.policy=compact"}, bad);
  INFO(asked.err);
  CHECK(asked.status == 0);
  CHECK(asked.err.find(R"(msg="topic settings not applied" topic=)" + bad +
                       R"x( differ="partitions 12 (the topic has 1); retention.ms -1 (the topic has 604800000)")x") !=
        std::string::npos);
  // What matches the topic already is not a difference (an idempotent provisioning run).
  const auto same = ctl_run({"topic", "ensure", "--topic", name, "--partitions", "4", "--retention-ms", "-1"}, name);
  CHECK(same.status == 0);
  CHECK(same.err.find("not applied") == std::string::npos);
  CHECK(kafka::describe_topic(test::broker(), bad, 10s)->at("retention.ms") == "604800000");

  // --strict never creates a topic it would then refuse.
  const auto unborn = test::unique_name("ctl-topic-strict");
  const auto refused = ctl_run({"topic", "ensure", "--topic", unborn, "--retention-ms", "86400000", "--strict"}, unborn);
  INFO(refused.err);
  CHECK(refused.status == 1);
  CHECK(refused.err.find(R"(msg="topic not created")") != std::string::npos);
  CHECK(refused.err.find("retention.ms=86400000") != std::string::npos);
  CHECK(refused.err.find("topic created") == std::string::npos);
  CHECK(ctl_run({"topic", "ensure", "--topic", unborn, "--strict"}, unborn).status == 0);  // then created clean

  // min.insync.replicas above the replication factor refuses every write
  // on a broker before Kafka 3.7 (from 3.7 it is read as the replication
  // factor), on a single broker as on a cluster: never a clean topic.
  const auto stuck = test::unique_name("ctl-topic-minisr");
  const auto never = ctl_run({"topic", "ensure", "--topic", stuck, "--partitions", "1", "--config",
                              "min.insync.replicas=2", "--strict"}, stuck);
  INFO(never.err);
  CHECK(never.status == 1);
  CHECK(never.err.find(R"(msg="topic not created")") != std::string::npos);
  CHECK(never.err.find("NOT_ENOUGH_REPLICAS") != std::string::npos);
  CHECK_FALSE(kafka::describe_topic(test::broker(), stuck, 10s));
}

TEST_CASE("topic ensure gives the topic every setting it judges, whatever the brokers' defaults") {
  // A cluster whose brokers keep 1 MiB a partition unless a topic says
  // otherwise: a topic made without retention.bytes deletes the oldest
  // events, and a report made from the settings asked for called it clean.
  // Likewise unclean election, which a plan without it would call durable
  // and the topic made then not (with --strict: exit 1 after creating it).
  test::own_broker broker("log.retention.bytes=1048576\nunclean.leader.election.enable=true");
  const auto name = test::unique_name("ctl-topic-defaults");
  auto env = kafka_env(name);
  env["KAFKA_BROKERS"] = broker.address();
  const auto created = test::run(ctl(), {"topic", "ensure", "--topic", name, "--partitions", "1", "--strict"}, env, 60s);
  INFO(created.err);
  CHECK(created.status == 0);
  CHECK(created.err.find("topic created") != std::string::npos);
  CHECK(created.err.find("retention.bytes") == std::string::npos);
  kafka::client_config cfg;
  cfg.brokers = broker.address();
  const auto config = kafka::describe_topic(cfg, name, 10s);
  REQUIRE(config);
  CHECK(config->at("retention.bytes") == "-1");
  CHECK(config->at("unclean.leader.election.enable") == "false");
  // A topic made elsewhere on these defaults is reported from its own settings.
  const auto other = test::unique_name("ctl-topic-defaults-other");
  REQUIRE(kafka::create_topic(cfg, {other, 1, 1, {{"retention.ms", "-1"}, {"max.message.bytes", "2097152"}}}, 10s) ==
          kafka::create_outcome::created);
  env["CLERK_SYNC_TOPIC"] = other;
  const auto existing = test::run(ctl(), {"topic", "ensure", "--topic", other, "--strict"}, env, 60s);
  INFO(existing.err);
  CHECK(existing.status == 1);
  CHECK(existing.err.find("retention.bytes=1048576") != std::string::npos);
}

TEST_CASE("replay rebuilds every projection identical to the live one while the consumers keep running") {
  const auto topic = test::fresh_topic("ctl-replay", 3);
  const test::temp_dir dir;
  const auto live = (dir / "live.db").string();
  // The consumer tests' generator: duplicates and out-of-order updates included.
  const auto events = test::generate_events({.users = 40, .events = 1200, .seed = 11});
  test::produce_events(test::broker(), topic, events);
  const auto total = high_watermark_sum(topic);
  REQUIRE(total == static_cast<std::int64_t>(events.size()));

  // A fresh database, as a consumer that has applied nothing yet leaves it:
  // status reports the whole topic as lag and exits 1.
  CHECK(ctl_run({"status", "--db", live}, topic).status == 2);  // no file: a wrong path, not an empty db
  { store::database created(live); }
  const auto before = ctl_run({"status", "--db", live, "--projection", "users", "--max-lag", "0"}, topic);
  INFO(before.out << before.err);
  CHECK(before.status == 1);
  CHECK(before.out.find(" " + std::to_string(total) + " ") != std::string::npos);

  auto consumer = test::start_consumer({"--projection", "users,referrals,balances,sessions", "--db", live, "--topic",
                                        topic, "--group-prefix", test::unique_name("ctl-live")});
  const auto caught_up = wait_lag_zero(live, topic, "all", 60s);
  INFO(caught_up.out << caught_up.err << consumer->stderr_text());
  REQUIRE(caught_up.status == 0);

  for (const auto* p : {"users", "referrals", "balances", "sessions"}) {
    const auto rebuilt = (dir / (std::string(p) + ".db")).string();
    const auto r = ctl_run({"replay", "--projection", p, "--db", rebuilt, "--batch", "200"}, topic, 120s);
    INFO(p << ": " << r.err);
    REQUIRE(r.status == 0);
    CHECK(r.err.find("replay caught up") != std::string::npos);
    CHECK(r.err.find("read=" + std::to_string(total)) != std::string::npos);
    const auto cmp = ctl_run({"compare", "--projection", p, live, rebuilt}, topic);
    INFO(cmp.out << cmp.err);
    CHECK(cmp.status == 0);
    CHECK(cmp.out.find(std::string(p) + ": identical") != std::string::npos);
    // The rebuilt file carries its offsets: a consumer would resume from there.
    CHECK(ctl_run({"status", "--db", rebuilt, "--projection", p, "--max-lag", "0"}, topic).status == 0);
    CHECK(consumer->running());
  }

  // The live side moves on; the rebuilt copy now differs and compare says so.
  // ctl's own generator: new user ids, so rows are added, not found stale.
  std::vector<test::generated_event> more;
  for (auto& e : ops::generate_events(60, 12)) more.push_back({e.user_id, ops::random_message_id(), e.type, e.body});
  test::produce_events(test::broker(), topic, more);
  REQUIRE(wait_lag_zero(live, topic, "users", 60s).status == 0);
  const auto diff = ctl_run({"compare", "--projection", "users", live, (dir / "users.db").string()}, topic);
  INFO(diff.out);
  CHECK(diff.status == 1);
  CHECK(diff.out.find("DIFFERENT") != std::string::npos);

  consumer->signal(SIGTERM);
  CHECK(consumer->wait(30s) == 0);
}

TEST_CASE("swap-in puts a rebuilt projection into the live file, refused while its consumer runs, and the consumer "
          "resumes from the rebuilt offsets") {
  const auto topic = test::fresh_topic("ctl-swap", 2);
  const test::temp_dir dir;
  const auto live = (dir / "live.db").string();
  const auto rebuilt = (dir / "rebuilt.db").string();
  auto events = test::generate_events({.users = 40, .events = 1000, .seed = 5});
  // One that cannot be mapped: a dead letter, in the live file and the rebuilt one.
  events.push_back({"user_x", "msg_swap_broken", "user.created",
                    R"({"type":"user.created","object":"event","timestamp":1716883200,"data":{"object":"user"}})"});
  test::produce_events(test::broker(), topic, events);
  const auto prefix = test::unique_name("ctl-swap");
  const std::vector<std::string> consumer_args{"--projection", "users,referrals", "--db", live, "--topic", topic,
                                               "--group-prefix", prefix};
  auto consumer = test::start_consumer(consumer_args);
  REQUIRE(wait_lag_zero(live, topic, "users,referrals", 60s).status == 0);
  REQUIRE(ctl_run({"replay", "--projection", "users", "--db", rebuilt}, topic, 120s).status == 0);
  // The live file moves on past the rebuilt one's offsets.
  std::vector<test::generated_event> mid;
  for (auto& e : ops::generate_events(20, 17)) mid.push_back({e.user_id, ops::random_message_id(), e.type, e.body});
  test::produce_events(test::broker(), topic, mid);
  REQUIRE(wait_lag_zero(live, topic, "users,referrals", 60s).status == 0);
  REQUIRE(test::stored_totals(live, topic)["users"] > test::stored_totals(rebuilt, topic)["users"]);
  const auto swap = [&](const std::string& projections) {
    return ctl_run({"swap-in", "--projection", projections, "--from", rebuilt, "--db", live}, topic);
  };

  // A running consumer of the projection: refused, naming it, nothing done.
  const auto referral_rows = test::query_int(live, "SELECT count(*) FROM referrals");
  const auto ledger = test::query_int(live, "SELECT count(*) FROM applied_events");
  {
    SQLite::Database c(live, SQLite::OPEN_READWRITE);
    c.setBusyTimeout(10'000);
    c.exec("DELETE FROM users WHERE rowid % 2 = 0");  // a live table gone wrong
  }
  const auto damaged_rows = test::query_int(live, "SELECT count(*) FROM users");
  auto r = swap("users");
  CHECK(r.status == 1);
  const auto lock = std::filesystem::weakly_canonical(live).string() + ".users.lock";
  CHECK_MESSAGE(r.err.find("a consumer of users is running on " + live + " (it holds " + lock + ")") !=
                    std::string::npos,
                r.err);
  // The same file by another name (a symlink): the same lock.
  const auto link = (dir / "link.db").string();
  std::filesystem::create_symlink(live, link);
  r = ctl_run({"swap-in", "--projection", "users", "--from", rebuilt, "--db", link}, topic);
  CHECK(r.status == 1);
  CHECK_MESSAGE(r.err.find("(it holds " + lock + ")") != std::string::npos, r.err);
  CHECK(test::query_int(live, "SELECT count(*) FROM users") == damaged_rows);
  consumer->signal(SIGTERM);
  REQUIRE(consumer->wait(30s) == 0);

  // A file that is not a replay of the projection: refused, nothing done.
  r = swap("users,referrals");
  CHECK(r.status == 1);
  CHECK(r.err.find("holds no stored offsets for referrals") != std::string::npos);
  CHECK(test::query_int(live, "SELECT count(*) FROM users") == damaged_rows);

  // Killed inside its transaction (hung at its first stored offset, after
  // the rows and the ledger): nothing of it stays.
  test::hang_writes(live, "kafka_offsets", "INSERT", "NEW.projection = 'users'");
  {
    test::process hung(ctl(), {"swap-in", "--projection", "users", "--from", rebuilt, "--db", live}, kafka_env(topic));
    REQUIRE_MESSAGE(test::wait_until_hung(hung, live, 30s), hung.stderr_text());
    hung.signal(SIGKILL);
    CHECK(hung.wait(10s) == 128 + SIGKILL);
  }
  test::unhang_writes(live);
  CHECK(test::query_int(live, "SELECT count(*) FROM users") == damaged_rows);
  CHECK(test::query_int(live, "SELECT count(*) FROM applied_events") == ledger);

  const auto live_totals_before_swap = test::stored_totals(live, topic)["users"];
  r = swap("users");
  INFO(r.err);
  REQUIRE(r.status == 0);
  CHECK(r.err.find("msg=\"swapped in\" projection=users rows=40 ") != std::string::npos);
  CHECK(r.err.find(" dead_letters=1 ") != std::string::npos);
  // The live offsets were `mid` past the rebuilt ones: said, with how many.
  const auto behind = live_totals_before_swap - test::stored_totals(rebuilt, topic)["users"];
  REQUIRE(behind > 0);
  CHECK(r.err.find(" rewound=" + std::to_string(behind) + " ") != std::string::npos);
  CHECK(r.err.find("level=warn msg=\"swapped in behind the live file\" projection=users records=" +
                   std::to_string(behind) + " ") != std::string::npos);
  const auto cmp = ctl_run({"compare", "--projection", "users", live, rebuilt}, topic);
  CHECK_MESSAGE(cmp.out.find("users: identical") != std::string::npos, cmp.out);
  // With the rebuilt file's offsets, ledger and dead letter: the live file's
  // own were past them, and a consumer resuming there would skip `mid`.
  CHECK(test::stored_totals(live, topic)["users"] == test::stored_totals(rebuilt, topic)["users"]);
  const std::string users_ledger = "SELECT count(*) FROM applied_events WHERE projection = 'users'";
  CHECK(test::query_int(live, users_ledger) == test::query_int(rebuilt, users_ledger));
  CHECK(test::query_int(live, "SELECT count(*) FROM dead_letters WHERE projection = 'users' AND svix_id = "
                              "'msg_swap_broken' AND resolved_at IS NULL") == 1);
  CHECK(test::query_int(live, "SELECT count(*) FROM referrals") == referral_rows);  // untouched

  // The consumer resumes from the swapped offsets: `mid` again and the new
  // events, each once.
  std::vector<test::generated_event> more;
  for (auto& e : ops::generate_events(30, 13)) more.push_back({e.user_id, ops::random_message_id(), e.type, e.body});
  test::produce_events(test::broker(), topic, more);
  consumer = test::start_consumer(consumer_args);
  REQUIRE(wait_lag_zero(live, topic, "users,referrals", 60s).status == 0);
  consumer->signal(SIGTERM);
  CHECK(consumer->wait(30s) == 0);
  auto all = events;
  all.insert(all.end(), mid.begin(), mid.end());
  all.insert(all.end(), more.begin(), more.end());
  const auto reference = (dir / "reference.db").string();
  (void)test::reference_tables(all, reference, {projection::kind::users, projection::kind::referrals});
  CHECK(ctl_run({"compare", "--projection", "users,referrals", live, reference}, topic).status == 0);
  const std::string ledger_sql = "SELECT count(*) FROM applied_events";
  CHECK(test::query_int(live, ledger_sql) == test::query_int(reference, ledger_sql));

  // Again, with the swap held for seconds inside its transaction while a
  // consumer starts: the consumer waits for the projection's lock, and
  // resumes from the rebuilt offsets, not from the live file's that were
  // ahead of them (it would skip `mid` and `more`, which the rebuilt rows
  // lack).
  test::hang_writes(live, "kafka_offsets", "INSERT", "NEW.projection = 'users'", 1'100);  // ~12 s
  test::process swapping(ctl(), {"swap-in", "--projection", "users", "--from", rebuilt, "--db", live},
                         kafka_env(topic));
  REQUIRE_MESSAGE(test::wait_until_hung(swapping, live, 30s), swapping.stderr_text());
  consumer = test::start_consumer(consumer_args);
  CHECK_MESSAGE(swapping.wait(120s) == 0, swapping.stderr_text());
  test::unhang_writes(live);
  REQUIRE(wait_lag_zero(live, topic, "users,referrals", 60s).status == 0);
  consumer->signal(SIGTERM);
  CHECK(consumer->wait(30s) == 0);
  CHECK_MESSAGE(consumer->stderr_text().find("msg=swap_wait projection=users") != std::string::npos,
                "the consumer did not meet the swap's lock: the race was not exercised");
  CHECK(ctl_run({"compare", "--projection", "users,referrals", live, reference}, topic).status == 0);
  CHECK(test::query_int(live, ledger_sql) == test::query_int(reference, ledger_sql));
}

TEST_CASE("swap-in checks the rebuilt offsets against the cluster's log: another log's replay is refused") {
  // A replay of another cluster (an operator without the environment file
  // reaching a development broker), or of the topic before it was
  // recreated: each offset inside the log, the record before it the one
  // the replay applied last, as the consumers will check on their start.
  const auto topic = test::fresh_topic("ctl-swap-log", 1);
  const auto events = test::generate_events({.users = 3, .events = 10, .seed = 37});
  test::produce_events(test::broker(), topic, events);
  test::temp_dir dir;
  const auto rebuilt_with = [&](const std::string& name, std::int64_t next, const std::string& last_id) {
    const auto path = (dir / name).string();
    { store::database created(path); }
    test::store_offset(path, {.topic = topic, .next_offset = next, .last_svix_id = last_id});
    test::mark_finished_replay(path);
    return path;
  };
  const auto live = (dir / "live.db").string();
  { store::database made(live); }
  const auto swap = [&](const std::string& from, std::vector<std::string> extra = {},
                        std::map<std::string, std::string> env = {}) {
    std::vector<std::string> args{"swap-in", "--projection", "users", "--from", from, "--db", live};
    args.insert(args.end(), extra.begin(), extra.end());
    auto e = kafka_env(topic);
    for (const auto& [k, v] : env) e[k] = v;
    return test::run(ctl(), args, e, 60s);
  };
  const auto offsets_in_live = [&] { return test::query_int(live, "SELECT count(*) FROM kafka_offsets"); };

  const auto other_log = swap(rebuilt_with("other.db", 5, "msg_of_another_log"));
  CHECK(other_log.status == 1);
  CHECK_MESSAGE(other_log.err.find("the record at offset 4 of " + topic + "/0 at " + test::broker().brokers + " is " +
                                   events[4].svix_id + ", not msg_of_another_log") != std::string::npos,
                other_log.err);
  CHECK(other_log.err.find("nothing was swapped in") != std::string::npos);
  CHECK(offsets_in_live() == 0);

  const auto past_end = swap(rebuilt_with("past.db", 50, "msg_x"));
  CHECK(past_end.status == 1);
  CHECK_MESSAGE(past_end.err.find("is outside the log [0, 10]") != std::string::npos, past_end.err);
  CHECK(offsets_in_live() == 0);

  // Kafka unreachable: refused, saying how to swap in without the check.
  const auto good = rebuilt_with("good.db", 5, events[4].svix_id);
  const auto unreachable = swap(good, {"--timeout-ms", "1500"}, {{"KAFKA_BROKERS", "127.0.0.1:1"}});
  CHECK(unreachable.status == 1);
  CHECK_MESSAGE(unreachable.err.find("--skip-log-check swaps in without this check") != std::string::npos,
                unreachable.err);
  CHECK(offsets_in_live() == 0);
  const auto skipped = swap(good, {"--skip-log-check"}, {{"KAFKA_BROKERS", "127.0.0.1:1"}});
  CHECK_MESSAGE(skipped.status == 0, skipped.err);
  CHECK(offsets_in_live() == 1);

  // The replay of this log: swapped in.
  CHECK(swap(rebuilt_with("again.db", 7, events[6].svix_id)).status == 0);
  CHECK(test::query_int(live, "SELECT next_offset FROM kafka_offsets") == 7);

  // A partition the topic does not have (a replay of another cluster's
  // topic of more partitions).
  const auto wide = rebuilt_with("wide.db", 7, events[6].svix_id);
  test::store_offset(wide, {.topic = topic, .partition = 3, .next_offset = 2, .last_svix_id = "msg_y"});
  const auto partitions = swap(wide);
  CHECK(partitions.status == 1);
  CHECK_MESSAGE(partitions.err.find("stores an offset of " + topic + "/3, a partition the topic at") !=
                    std::string::npos,
                partitions.err);

  // A replay of another topic than the consumers read: refused before Kafka
  // is asked, even with the check skipped.
  const auto other_topic = swap(rebuilt_with("again2.db", 7, events[6].svix_id), {"--skip-log-check"},
                                {{"CLERK_SYNC_TOPIC", topic + ".next"}});
  CHECK(other_topic.status == 1);
  CHECK_MESSAGE(other_topic.err.find("was replayed from " + topic + ", not from " + topic + ".next") !=
                    std::string::npos,
                other_topic.err);

  // The live file's offsets are not of this log either: this shell may
  // reach another cluster than the consumers, where the replay was made
  // too. Refused, unless the topic was recreated (--live-log-gone).
  {
    store::database d(live);
    store::exec(d, "UPDATE kafka_offsets SET last_svix_id = 'msg_of_the_log_gone'");
  }
  const auto live_other = swap(rebuilt_with("again3.db", 8, events[7].svix_id));
  CHECK(live_other.status == 1);
  CHECK_MESSAGE(live_other.err.find("which " + live + " applied: the consumers' offsets are not of this log") !=
                    std::string::npos,
                live_other.err);
  CHECK(test::query_int(live, "SELECT next_offset FROM kafka_offsets") == 7);
  const auto gone = swap(rebuilt_with("again4.db", 8, events[7].svix_id), {"--live-log-gone"});
  CHECK_MESSAGE(gone.status == 0, gone.err);
  CHECK(test::query_int(live, "SELECT next_offset FROM kafka_offsets") == 8);
  // A partition the topic lacks in the live file (another cluster's topic
  // of more partitions): refused as in the rebuilt file, where it was let by.
  test::store_offset(live, {.topic = topic, .partition = 3, .next_offset = 2, .last_svix_id = "msg_y"});
  const auto live_wide = swap(rebuilt_with("again5.db", 8, events[7].svix_id));
  CHECK(live_wide.status == 1);
  CHECK_MESSAGE(live_wide.err.find(live + " stores an offset of " + topic + "/3, a partition the topic at") !=
                    std::string::npos,
                live_wide.err);
  {
    store::database d(live);
    store::exec(d, "DELETE FROM kafka_offsets WHERE partition = 3");
  }

  // Records deleted: below the log's start, each file says what that means.
  kafka::delete_records(test::broker(), topic, 0, 9, 30s);
  const auto stale_replay = swap(rebuilt_with("trimmed.db", 5, events[4].svix_id), {"--live-log-gone"});
  CHECK(stale_replay.status == 1);
  CHECK_MESSAGE(stale_replay.err.find("is below the log's start 9 at " + test::broker().brokers +
                                      ": records were deleted since the replay; replay again") != std::string::npos,
                stale_replay.err);
  const auto unread = swap(rebuilt_with("after.db", 10, events[9].svix_id));
  CHECK(unread.status == 1);
  CHECK_MESSAGE(unread.err.find("records its consumers had not read were deleted (they stopped with exit 5); this "
                                "swap-in repairs that: --live-log-gone") != std::string::npos,
                unread.err);
  CHECK(swap(rebuilt_with("after2.db", 10, events[9].svix_id), {"--live-log-gone"}).status == 0);
  CHECK(test::query_int(live, "SELECT next_offset FROM kafka_offsets") == 10);
}

TEST_CASE("a second replay into the same file is refused while the first runs, and leaves the first's partial file") {
  const auto topic = test::fresh_topic("ctl-replay-twice", 1);
  test::produce_events(test::broker(), topic, test::generate_events({.users = 3, .events = 12, .seed = 13}));
  test::temp_dir dir;
  const auto rebuilt = (dir / "rebuilt.db").string();
  // The first replay, as far as the second can tell: it holds the lock and
  // is writing its partial file.
  { std::ofstream(rebuilt + ".partial") << "the first replay's pages"; }
  const int held = ::open((rebuilt + ".partial.lock").c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0600);
  REQUIRE(held >= 0);
  REQUIRE(::flock(held, LOCK_EX | LOCK_NB) == 0);
  auto r = ctl_run({"replay", "--projection", "users", "--db", rebuilt}, topic, 120s);
  CHECK(r.status == 1);
  CHECK_MESSAGE(r.err.find("another replay into " + rebuilt + ".partial is running") != std::string::npos, r.err);
  CHECK(test::read_file(rebuilt + ".partial") == "the first replay's pages");
  CHECK_FALSE(std::filesystem::exists(rebuilt));
  // Once the first has ended, a replay runs.
  ::close(held);
  r = ctl_run({"replay", "--projection", "users", "--db", rebuilt}, topic, 120s);
  CHECK_MESSAGE(r.status == 0, r.err);
  CHECK(std::filesystem::exists(rebuilt));
  CHECK_FALSE(std::filesystem::exists(rebuilt + ".partial"));
}

TEST_CASE("a replay stopped by SIGTERM, SIGINT or SIGHUP removes its partial file and sidecars, says so and exits 1") {
  const auto topic = test::fresh_topic("ctl-replay-signal", 1);
  test::produce_events(test::broker(), topic, test::generate_events({.users = 3, .events = 12, .seed = 17}));
  test::temp_dir dir;
  // The broker holds every fetch until 10 MB are there or 30 s pass: the
  // replay has opened its partial file and waits below its watermark.
  // Under nohup, SIGHUP is ignored as nohup promises; SIGTERM then stops it.
  const auto start = [&](const std::string& out, bool nohup) {
    std::vector<std::string> args{"replay", "--projection", "all", "--db", out, "--kafka-property",
                                  "fetch.min.bytes=10000000", "--kafka-property", "fetch.wait.max.ms=30000"};
    if (nohup) args.insert(args.begin(), ctl().string());
    auto p = std::make_unique<test::process>(nohup ? "/usr/bin/nohup" : ctl(), args, kafka_env(topic));
    REQUIRE_MESSAGE(p->wait_for_log("msg=\"replay progress\"", 20s), p->stderr_text());
    for (const auto* suffix : {"", "-wal", "-shm"}) REQUIRE(std::filesystem::exists(ops::partial_path(out) + suffix));
    return p;
  };
  struct run_case {
    int sig;
    bool nohup;
  };
  for (const auto [sig, nohup] : {run_case{SIGTERM, false}, run_case{SIGINT, false}, run_case{SIGHUP, false},
                                  run_case{SIGTERM, true}}) {
    CAPTURE(sig);
    CAPTURE(nohup);
    const auto out = (dir / ("out-" + std::to_string(sig) + (nohup ? "-nohup" : "") + ".db")).string();
    const auto partial = ops::partial_path(out);
    // An empty file at the target is allowed (replay fills it by renaming
    // over it); a stopped replay leaves it as it was.
    if (sig == SIGINT) std::ofstream{out};
    auto replay = start(out, nohup);
    if (nohup) {
      replay->signal(SIGHUP);
      std::this_thread::sleep_for(1s);
      REQUIRE_MESSAGE(replay->running(), replay->stderr_text());
    }

    const auto signalled = std::chrono::steady_clock::now();
    replay->signal(sig);
    const auto code = replay->wait(20s);
    const auto took = std::chrono::steady_clock::now() - signalled;
    const auto err = replay->stderr_text();
    INFO("exit status " << code.value_or(-1) << "; stderr:\n" << err);
    CHECK(code == 1);
    CHECK(took < 5s);  // at the next poll, not after the 30 s fetch
    const auto last = err.substr(err.rfind('\n', err.size() - 2) + 1);
    CHECK(last.starts_with("ts="));
    CHECK(last.find("msg=\"replay stopped\"") != std::string::npos);
    CHECK(last.find("signal=" + std::to_string(sig)) != std::string::npos);
    CHECK(last.find("outcome=\"partial file removed\"") != std::string::npos);
    CHECK(err.find("replay caught up") == std::string::npos);
    for (const auto* suffix : {"", "-wal", "-shm", "-journal"}) CHECK_FALSE(std::filesystem::exists(partial + suffix));
    CHECK(std::filesystem::exists(partial + ".lock"));  // kept by design: removing it races its next user
    if (sig == SIGINT) {
      CHECK(std::filesystem::exists(out));
      CHECK(std::filesystem::file_size(out) == 0);
    } else {
      CHECK_FALSE(std::filesystem::exists(out));
    }
  }
}

namespace {

// A replay held after its first record, with no timing involved: the first
// record is big and alone in its batch (uncompressed); the others, together,
// are far below fetch.min.bytes. Fetching one batch at a time
// (max.partition.fetch.bytes=1: the first always comes whole), the replay
// reads and commits the big one (--batch 1), then the broker holds its next
// fetch for 30 s.
constexpr std::size_t held_min_bytes = 32 * 1024;

// Makes an event holding a user `n` bytes longer (its image url); false for
// one without.
bool pad(test::generated_event& e, std::size_t n) {
  static const std::string url = R"("image_url":"https://img.example/)";
  const auto at = e.body.find(url);
  if (at == std::string::npos) return false;
  e.body.insert(at + url.size(), std::string(n, 'k'));
  return true;
}

// Generated events for a held replay, produced into `topic`: the first
// (a creation) big and alone in its batch, the rest together and small.
std::vector<test::generated_event> produce_big_first(const std::string& topic, std::uint64_t seed) {
  auto events = test::generate_events({.users = 3, .events = 12, .seed = seed});
  REQUIRE(events.front().type == "user.created");
  REQUIRE(pad(events.front(), 2 * held_min_bytes));
  std::size_t rest = 0;  // 256: more than a record's headers and framing
  for (std::size_t i = 1; i < events.size(); ++i) rest += events[i].key.size() + events[i].body.size() + 256;
  REQUIRE(rest < held_min_bytes / 2);
  test::produce_events(test::broker(), topic, {events.front()});
  test::produce_events(test::broker(), topic, {events.begin() + 1, events.end()});
  return events;
}

// A replay of `topic` into `out` that has committed its first record (a
// progress line saying read=1 comes after its commit) and waits.
std::unique_ptr<test::process> start_held_replay(const std::string& topic, const std::string& out, std::int64_t high) {
  auto replay = std::make_unique<test::process>(
      ctl(),
      std::vector<std::string>{"replay", "--projection", "all", "--db", out, "--batch", "1", "--kafka-property",
                               "fetch.min.bytes=" + std::to_string(held_min_bytes), "--kafka-property",
                               "fetch.wait.max.ms=30000", "--kafka-property", "max.partition.fetch.bytes=1"},
      kafka_env(topic));
  REQUIRE_MESSAGE(replay->wait_for_log("read=1 total=" + std::to_string(high) + " ", 20s), replay->stderr_text());
  return replay;
}

}  // namespace

TEST_CASE("a replay past a file size limit fails with a line and removes its partial file, not killed by SIGXFSZ") {
  const auto topic = test::fresh_topic("ctl-replay-fsize", 1);
  test::produce_events(test::broker(), topic, test::generate_events({.users = 3, .events = 12, .seed = 18}));
  test::temp_dir dir;
  const auto out = (dir / "out.db").string();
  const auto partial = ops::partial_path(out);
  // `ulimit -f` for the replay alone (prlimit execs it under the limit), with
  // SIGXFSZ at its default action: no file may grow past 8 KiB, a full disk
  // as the opening of the partial file meets it.
  std::vector<std::string> args{"--fsize=8192", ctl().string(), "replay", "--projection", "all", "--db", out};
  const auto r = test::run("/usr/bin/prlimit", args, kafka_env(topic));
  INFO("stderr:\n" << r.err);
  CHECK(r.status == 1);
  CHECK(r.err.find("error=\"cannot open database " + partial + ": disk I/O error\"") != std::string::npos);
  for (const auto* suffix : {"", "-wal", "-shm", "-journal"}) CHECK_FALSE(std::filesystem::exists(partial + suffix));
  CHECK_FALSE(std::filesystem::exists(out));
}

TEST_CASE("a replay killed by SIGKILL before its rename leaves no target, and the next replay removes its leftovers "
          "and rebuilds it all") {
  const auto topic = test::fresh_topic("ctl-replay-kill", 1);
  const auto events = produce_big_first(topic, 19);
  const auto high = high_watermark_sum(topic);
  REQUIRE(high == static_cast<std::int64_t>(events.size()));

  test::temp_dir dir;
  const auto out = (dir / "out.db").string();
  const auto partial = ops::partial_path(out);
  {
    const auto replay = start_held_replay(topic, out, high);
    replay->signal(SIGKILL);
    const auto code = replay->wait(20s);
    INFO("stderr:\n" << replay->stderr_text());
    CHECK(code == 128 + SIGKILL);
  }
  CHECK_FALSE(std::filesystem::exists(out));
  for (const auto* suffix : {"", "-wal", "-shm"}) CHECK(std::filesystem::exists(partial + suffix));
  // The kernel released the dead replay's lock.
  {
    const int fd = ::open((partial + ".lock").c_str(), O_RDWR | O_CLOEXEC);
    REQUIRE(fd >= 0);
    CHECK(::flock(fd, LOCK_EX | LOCK_NB) == 0);
    ::close(fd);
  }
  // Read from a copy: opening the leftover itself could fold its WAL away.
  const auto copy = (dir / "leftover.db").string();
  std::filesystem::copy_file(partial, copy);
  std::filesystem::copy_file(partial + "-wal", copy + "-wal");
  CHECK(test::query_int(copy, "SELECT count(*) FROM users") == 1);
  const auto killed_applied_at = test::query_int(copy, "SELECT max(applied_at) FROM applied_events");
  REQUIRE(killed_applied_at > 0);
  // Never swapped in, by its name or any other: it holds the projection as
  // of where the replay died, without a finished replay's mark.
  {
    const auto live = (dir / "live.db").string();
    { store::database made(live); }
    const auto before = test::dump_tables(live);
    const auto renamed = (dir / "renamed.db").string();  // a copy of the leftover under a finished name
    std::filesystem::copy_file(partial, renamed);
    std::filesystem::copy_file(partial + "-wal", renamed + "-wal");
    for (const auto& from : {partial, renamed}) {
      const auto swap = ctl_run({"swap-in", "--projection", "users", "--from", from, "--db", live}, topic, 30s);
      CHECK(swap.status == 1);
      CHECK_MESSAGE(swap.err.find("is not a finished replay's file") != std::string::npos, swap.err);
      CHECK(test::dump_tables(live) == before);
      CHECK(test::query_int(live, "SELECT count(*) FROM kafka_offsets") == 0);
    }
  }

  auto r = ctl_run({"replay", "--projection", "all", "--db", out}, topic, 120s);
  CHECK_MESSAGE(r.status == 0, r.err);
  CHECK(std::filesystem::exists(out));
  for (const auto* suffix : {"", "-wal", "-shm", "-journal"}) CHECK_FALSE(std::filesystem::exists(partial + suffix));
  // Rows, ledger and offsets as a replay never interrupted makes them, and
  // the rows as the topic's events make them.
  const auto fresh = (dir / "fresh.db").string();
  r = ctl_run({"replay", "--projection", "all", "--db", fresh}, topic, 120s);
  REQUIRE_MESSAGE(r.status == 0, r.err);
  const auto contents = [](const std::string& db) {
    SQLite::Database d(db, SQLite::OPEN_READONLY);
    std::string text = test::dump_tables(db);
    for (const char* sql : {"SELECT projection, svix_id, type, user_id, outcome, topic, partition, \"offset\" "
                            "FROM applied_events ORDER BY projection, svix_id",
                            "SELECT projection, topic, partition, next_offset, last_svix_id FROM kafka_offsets "
                            "ORDER BY projection, topic, partition",
                            "SELECT projection, svix_id, reason FROM dead_letters ORDER BY projection, svix_id"}) {
      SQLite::Statement st(d, sql);
      text += std::string(sql) + '\n';
      while (st.executeStep()) {
        for (int i = 0; i < st.getColumnCount(); ++i) text += st.getColumn(i).getString() + '|';
        text += '\n';
      }
    }
    return text;
  };
  CHECK(contents(out) == contents(fresh));
  CHECK(test::query_int(out, "SELECT sum(next_offset) FROM kafka_offsets WHERE projection = 'users'") == high);
  CHECK(test::dump_tables(out) == test::reference_tables(events, (dir / "oracle.db").string()));
  // A reused leftover would pass the checks above (its event is a duplicate
  // to the applier, its rows are the same): only its ledger's time tells.
  CHECK(test::query_int(out, "SELECT count(*) FROM applied_events WHERE applied_at <= " +
                                 std::to_string(killed_applied_at)) == 0);
}

TEST_CASE("a topic recreated during a replay fails it, read on before or after its refill, and nothing is moved "
          "into place") {
  const auto topic = test::fresh_topic("ctl-replay-recreated", 1);
  const auto before = produce_big_first(topic, 23);
  const auto high = high_watermark_sum(topic);
  test::temp_dir dir;
  const auto out = (dir / "out.db").string();
  const auto replay = start_held_replay(topic, out, high);
  std::string expected;
  SUBCASE("refilled before the replay reads on") {
    // Refilled with as many other events, the rest of them in one batch past
    // fetch.min.bytes, while the replay is stopped: it next fetches from the
    // refilled log, which librdkafka reads on without error.
    replay->signal(SIGSTOP);
    test::recreate_topic(topic);
    auto after = test::generate_events({.users = 3, .events = 12, .seed = 29});
    for (auto it = after.begin() + 1; it != after.end(); ++it) (void)pad(*it, 4 * 1024);
    test::produce_events(test::broker(), topic, {after.front()});
    test::produce_events(test::broker(), topic, {after.begin() + 1, after.end()});
    REQUIRE(high_watermark_sum(topic) >= high);  // past where the replay stops
    replay->signal(SIGCONT);
    expected = "the topic was recreated during the replay: partition 0's record at offset 0 was " +
               before.front().svix_id + " and is now " + after.front().svix_id + "; nothing was moved to " + out;
  }
  SUBCASE("read on before it is refilled") {
    // The held fetch ends with the topic deleted; the next meets the new,
    // empty log, which ends before the first record read.
    test::recreate_topic(topic);
    expected = "the topic was recreated during the replay: partition 0's record at offset 0 (" +
               before.front().svix_id + ") is past the log's end now; nothing was moved to " + out;
  }
  const auto code = replay->wait(90s);
  const auto err = replay->stderr_text();
  INFO("stderr:\n" << err);
  CHECK(code == 1);
  CHECK(err.find(expected) != std::string::npos);
  CHECK_FALSE(std::filesystem::exists(out));
  for (const auto* suffix : {"", "-wal", "-shm", "-journal"})
    CHECK_FALSE(std::filesystem::exists(ops::partial_path(out) + suffix));
}

TEST_CASE("records deleted under a running replay fail it with the offset it was reading, and nothing is moved "
          "into place") {
  // Segments of 96 KiB: the first (big) record and the small rest fit in
  // one, where the replay's fetch is held; the events produced below start
  // the next. The broker answers a held fetch whose offset is on an older
  // segment than the log's end at once.
  const auto topic = test::unique_name("ctl-replay-trimmed");
  REQUIRE(kafka::create_topic(test::broker(),
                              {topic, 1, 1, {{"retention.ms", "-1"}, {"segment.bytes", std::to_string(96 * 1024)}}},
                              15s) == kafka::create_outcome::created);
  (void)produce_big_first(topic, 31);
  const auto high = high_watermark_sum(topic);
  test::temp_dir dir;
  const auto out = (dir / "out.db").string();
  const auto replay = start_held_replay(topic, out, high);
  // Every record deleted, then more produced: the held fetch answers, and
  // offset 1 is no longer in the log.
  kafka::delete_records(test::broker(), topic, 0, high, 30s);
  auto more = test::generate_events({.users = 3, .events = 12, .seed = 37});
  for (auto& e : more) (void)pad(e, 4 * 1024);
  test::produce_events(test::broker(), topic, more);
  const auto code = replay->wait(90s);
  const auto err = replay->stderr_text();
  INFO("stderr:\n" << err);
  CHECK(code == 1);
  CHECK(err.find("offset 1 of " + topic + "/0 is outside the log [" + std::to_string(high) + ", ") !=
        std::string::npos);
  CHECK(err.find("records were deleted or the topic was recreated during the replay; nothing was moved to " + out) !=
        std::string::npos);
  CHECK_FALSE(std::filesystem::exists(out));
  for (const auto* suffix : {"", "-wal", "-shm", "-journal"})
    CHECK_FALSE(std::filesystem::exists(ops::partial_path(out) + suffix));
}

TEST_CASE("replay completes over a log that ends with control records: a transaction committed, then one aborted") {
  // The log: 3 committed events, the commit's marker, 2 aborted events, the
  // abort's marker. The high watermark taken at start is past both markers,
  // which no read_committed reader is given: the replay waited for them
  // until its stall timeout, then failed with "4 still to read".
  const auto topic = test::fresh_topic("ctl-replay-tx", 1);
  // user.created events of five different users.
  std::vector<test::generated_event> committed, aborted;
  std::set<std::string> users;
  for (const auto& e : test::generate_events({.users = 8, .events = 80, .seed = 23})) {
    if (e.type != "user.created" || !users.insert(e.key).second) continue;
    if (committed.size() < 3)
      committed.push_back(e);
    else if (aborted.size() < 2)
      aborted.push_back(e);
  }
  REQUIRE(aborted.size() == 2);
  produce_transactions(topic, committed, aborted);
  // The coordinator answers the abort before the marker is in the log:
  // until then a read_committed watermark query stops before the aborted
  // records.
  const auto deadline = std::chrono::steady_clock::now() + 30s;
  while (high_watermark_sum(topic) != 7 && std::chrono::steady_clock::now() < deadline)
    std::this_thread::sleep_for(100ms);
  REQUIRE(high_watermark_sum(topic) == 7);
  test::temp_dir dir;
  const auto rebuilt = (dir / "rebuilt.db").string();
  // Past the stall timeout, the code before failed with "4 still to read".
  const auto r = ctl_run({"replay", "--projection", "users", "--db", rebuilt, "--stall-timeout-ms", "5000"}, topic);
  INFO(r.err);
  CHECK(r.status == 0);
  CHECK(r.err.find("replay caught up") != std::string::npos);
  REQUIRE(std::filesystem::exists(rebuilt));
  // The committed events are applied, the aborted ones never.
  CHECK(test::query_int(rebuilt, "SELECT count(*) FROM users") == 3);
  for (const auto& e : aborted)
    CHECK(test::query_int(rebuilt, "SELECT count(*) FROM users WHERE id = '" + e.key + "'") == 0);
  // Nothing is left to apply: status says lag 0, not the 4 offsets of
  // markers and aborted records past the last applied one, which kept a
  // monitor's --max-lag 0 failing until the next event.
  const auto st = ctl_run({"status", "--db", rebuilt, "--projection", "users", "--max-lag", "0"}, topic);
  INFO(st.err);
  CHECK(st.status == 0);
  CHECK_MESSAGE(st.out.find("stored 3, watermarks [0, 7), lag 0 (then 4 offsets of transaction markers or aborted "
                            "records)") != std::string::npos,
                st.out);
  // A second projection that lags for real (the committed records 1 and 2
  // still to apply), read in a round of its own: that lag stays.
  test::store_offset(rebuilt,
                     {.projection = "referrals", .topic = topic, .next_offset = 1, .last_svix_id = committed.front().svix_id});
  const auto both = ctl_run({"status", "--db", rebuilt, "--projection", "users,referrals", "--max-lag", "0"}, topic);
  CHECK(both.status == 1);
  CHECK_MESSAGE(both.out.find("stored 3, watermarks [0, 7), lag 0 (then 4 offsets") != std::string::npos, both.out);
  CHECK_MESSAGE(both.out.find("stored 1, watermarks [0, 7), lag 6\n") != std::string::npos, both.out);
  // An event written since is lag again.
  test::produce_events(test::broker(), topic, {committed.front()});
  const auto behind = ctl_run({"status", "--db", rebuilt, "--projection", "users", "--max-lag", "0"}, topic);
  INFO(behind.err);
  CHECK(behind.status == 1);
  CHECK_MESSAGE(behind.out.find("stored 3, watermarks [0, 8), lag 5\n") != std::string::npos, behind.out);

  // A log of an aborted transaction alone gives the reader no record: its
  // position is stored at the log's start, whose record before there is
  // none to check, so the file swaps in (at its end, the record before
  // would be the abort's marker, which no check can read).
  const auto only_aborted = test::fresh_topic("ctl-replay-tx-aborted", 1);
  produce_transactions(only_aborted, {}, aborted);
  const auto until = std::chrono::steady_clock::now() + 30s;
  while (high_watermark_sum(only_aborted) != 3 && std::chrono::steady_clock::now() < until)
    std::this_thread::sleep_for(100ms);
  REQUIRE(high_watermark_sum(only_aborted) == 3);
  const auto from_aborted = (dir / "aborted.db").string();
  const auto ra = ctl_run({"replay", "--projection", "users", "--db", from_aborted, "--stall-timeout-ms", "5000"},
                          only_aborted);
  REQUIRE_MESSAGE(ra.status == 0, ra.err);
  CHECK(test::query_int(from_aborted, "SELECT next_offset FROM kafka_offsets WHERE projection = 'users'") == 0);
  const auto live = (dir / "live.db").string();
  { store::database created(live); }
  const auto sw = ctl_run({"swap-in", "--projection", "users", "--from", from_aborted, "--db", live}, only_aborted);
  CHECK_MESSAGE(sw.status == 0, sw.err);
}

TEST_CASE("replay finishes while webhooks keep arriving, a partition's log ending in control records") {
  // Partition 0 ends with a transaction's markers, which the reader passes
  // without being given them; events arrive all along on both partitions.
  // The replay counted a partition passed only when a poll came back empty,
  // which steady traffic never lets happen: it read on, past its targets,
  // and never finished nor said it stalled.
  const auto topic = test::fresh_topic("ctl-replay-busy", 2);
  const auto all = test::generate_events({.users = 40, .events = 400, .seed = 29});
  // Where each user's events land: one event of each, produced first.
  std::vector<test::generated_event> firsts;
  std::set<std::string> keys;
  for (const auto& e : all)
    if (keys.insert(e.key).second) firsts.push_back(e);
  const auto landed = test::produce_events(test::broker(), topic, firsts);
  std::set<std::string> on_partition_1;
  for (std::size_t i = 0; i < firsts.size(); ++i)
    if (landed[i].partition == 1) on_partition_1.insert(firsts[i].key);
  std::vector<test::generated_event> events;  // the traffic: partition 1's users
  for (const auto& e : all)
    if (on_partition_1.contains(e.key)) events.push_back(e);
  REQUIRE(events.size() > 50);
  std::vector<test::generated_event> committed;
  for (const auto& e : all)
    if (e.type == "user.created" && committed.size() < 3) committed.push_back(e);
  produce_transactions(topic, committed, {});  // to partition 0, after its users' first events
  const auto watermarks = static_cast<std::int64_t>(firsts.size()) + 4;
  const auto deadline = std::chrono::steady_clock::now() + 30s;
  while (high_watermark_sum(topic) != watermarks && std::chrono::steady_clock::now() < deadline)
    std::this_thread::sleep_for(100ms);
  REQUIRE(high_watermark_sum(topic) == watermarks);

  // An event every 20 ms for at most 40 s, all to partition 1: partition 0's
  // log still ends with the commit's marker when the replay starts.
  std::atomic<bool> stop{false}, traffic_over{false};
  std::atomic<int> produced{0}, failed{0};
  std::thread traffic([&] {
    kafka::producer prod(test::broker(), {.message_timeout = 30s, .linger = 1ms});
    const auto until = std::chrono::steady_clock::now() + 40s;
    for (std::size_t i = 0; !stop && std::chrono::steady_clock::now() < until; ++i) {
      const auto& e = events[i % events.size()];
      const kafka::outgoing_record rec{topic, e.key, e.body, {{"svix-id", e.svix_id}, {"clerk-event-type", e.type}}};
      if (prod.produce(rec, [&](const kafka::delivery_report& r) { (r.ok ? produced : failed)++; }) !=
          kafka::enqueue_status::queued)
        ++failed;
      std::this_thread::sleep_for(20ms);
    }
    traffic_over = true;
    (void)prod.flush(10s);
  });
  while (produced < 20 && failed == 0 && std::chrono::steady_clock::now() < deadline) std::this_thread::sleep_for(20ms);

  test::temp_dir dir;
  const auto rebuilt = (dir / "rebuilt.db").string();
  // Partition 1's log end before the replay starts: the replay's target
  // there is at least this.
  kafka::consumer watcher(test::broker(), "");
  const auto p1_end_before = watcher.watermarks(topic, 1, 10s).second;
  const auto r = ctl_run({"replay", "--projection", "users", "--db", rebuilt, "--stall-timeout-ms", "30000"}, topic);
  // It ended while events still arrived, not once the traffic stopped.
  const bool ended_amid_traffic = !traffic_over;
  stop = true;
  traffic.join();
  INFO(r.err);
  CHECK(failed == 0);
  CHECK(ended_amid_traffic);
  CHECK(r.status == 0);
  CHECK(r.err.find("replay caught up") != std::string::npos);
  REQUIRE(std::filesystem::exists(rebuilt));
  for (const auto& e : committed)
    CHECK(test::query_int(rebuilt, "SELECT count(*) FROM users WHERE id = '" + e.key + "'") == 1);
  // The busy partition was read up to its target, not left short.
  CHECK(test::query_int(rebuilt, "SELECT next_offset FROM kafka_offsets WHERE projection = 'users' AND partition = 1") >=
        p1_end_before);
}

TEST_CASE("replay refuses a log that no longer starts at offset 0 unless --allow-incomplete, never leaving a partial file") {
  const auto topic = test::fresh_topic("ctl-replay-cut", 1);
  test::produce_events(test::broker(), topic, test::generate_events({.users = 5, .events = 30, .seed = 11}));
  const auto high = high_watermark_sum(topic);
  REQUIRE(high > 6);
  kafka::delete_records(test::broker(), topic, 0, 5, 30s);
  test::temp_dir dir;
  const auto rebuilt = (dir / "rebuilt.db").string();

  // status says it of a projection that stores no offset yet: its consumer
  // would start at 5.
  const auto fresh = (dir / "fresh.db").string();
  { store::database created(fresh); }
  auto r = ctl_run({"status", "--db", fresh, "--projection", "users"}, topic);
  CHECK_MESSAGE(r.out.find("stored none, watermarks [5, " + std::to_string(high) + "), lag " +
                           std::to_string(high - 5) + ", TRIMMED: ") != std::string::npos,
                r.out);
  CHECK_MESSAGE(r.err.find("level=warn msg=start_incomplete projection=users partition=0 log_start=5 ") !=
                    std::string::npos,
                r.err);
  test::store_offset(fresh, {.topic = topic, .next_offset = 5, .last_svix_id = "msg_x"});
  r = ctl_run({"status", "--db", fresh, "--projection", "users"}, topic);
  CHECK(r.out.find("TRIMMED") == std::string::npos);  // a position the consumer reached, or replay stored

  r = ctl_run({"replay", "--projection", "all", "--db", rebuilt}, topic, 120s);
  CHECK(r.status == 1);
  CHECK_MESSAGE(r.err.find("partition 0 starts at offset 5") != std::string::npos, r.err);
  CHECK(r.err.find("--allow-incomplete") != std::string::npos);
  CHECK_FALSE(std::filesystem::exists(rebuilt));
  CHECK_FALSE(std::filesystem::exists(rebuilt + ".partial"));

  r = ctl_run({"replay", "--projection", "all", "--db", rebuilt, "--allow-incomplete"}, topic, 120s);
  CHECK_MESSAGE(r.status == 0, r.err);
  CHECK(r.err.find("replay incomplete") != std::string::npos);
  CHECK(std::filesystem::exists(rebuilt));
  CHECK_FALSE(std::filesystem::exists(rebuilt + ".partial"));
  CHECK(test::query_int(rebuilt, "SELECT sum(next_offset) FROM kafka_offsets WHERE projection = 'users'") == high);
  CHECK(test::query_int(rebuilt, "PRAGMA application_id") == store::incomplete_replay_id);
}

TEST_CASE("replay stores the position of a partition it found empty, so a log trimmed past it since is not a silent "
          "later start") {
  const auto topic = test::fresh_topic("ctl-replay-empty-part", 2);
  // One user: every event in one partition, the other empty.
  const auto one = test::generate_events({.users = 1, .events = 10, .seed = 21});
  const auto landed = test::produce_events(test::broker(), topic, one);
  const auto full = landed.front().partition;
  const auto empty = 1 - full;
  test::temp_dir dir;
  const auto rebuilt = (dir / "rebuilt.db").string();
  auto r = ctl_run({"replay", "--projection", "users", "--db", rebuilt}, topic, 120s);
  REQUIRE_MESSAGE(r.status == 0, r.err);
  CHECK(test::query_int(rebuilt, "SELECT next_offset FROM kafka_offsets WHERE projection = 'users' AND partition = " +
                                     std::to_string(empty)) == 0);

  // Events reach the empty partition after the replay, and its first are
  // deleted before the swap: the consumer would start past them.
  std::vector<test::generated_event> more;
  for (auto& e : ops::generate_events(40, 31)) more.push_back({e.user_id, ops::random_message_id(), e.type, e.body});
  int in_empty = 0;
  for (const auto& report : test::produce_events(test::broker(), topic, more))
    if (report.partition == empty) ++in_empty;
  REQUIRE(in_empty >= 3);
  kafka::delete_records(test::broker(), topic, empty, 2, 30s);
  const auto live = (dir / "live.db").string();
  { store::database created(live); }
  r = ctl_run({"swap-in", "--projection", "users", "--from", rebuilt, "--db", live}, topic);
  CHECK(r.status == 1);
  CHECK_MESSAGE(r.err.find("the offset 0 of users of " + topic + "/" + std::to_string(empty) + " in " + rebuilt +
                           " is below the log's start 2") != std::string::npos,
                r.err);
  CHECK(test::query_int(live, "SELECT count(*) FROM users") == 0);
}

TEST_CASE("replay refuses a compacted topic unless --allow-incomplete, and swap-in takes such a file only with "
          "--accept-incomplete") {
  // Compaction removes records from inside the log; its start stays at 0.
  const auto topic = test::unique_name("ctl-replay-compact");
  REQUIRE(kafka::create_topic(test::broker(), {topic, 1, 1, {{"cleanup.policy", "compact"}, {"retention.ms", "-1"}}},
                              10s) == kafka::create_outcome::created);
  test::produce_events(test::broker(), topic, test::generate_events({.users = 5, .events = 30, .seed = 12}));
  test::temp_dir dir;
  const auto rebuilt = (dir / "rebuilt.db").string();
  auto r = ctl_run({"replay", "--projection", "all", "--db", rebuilt}, topic, 120s);
  CHECK(r.status == 1);
  CHECK_MESSAGE(r.err.find("has cleanup.policy=compact: compaction removes events") != std::string::npos, r.err);
  CHECK(r.err.find("--allow-incomplete") != std::string::npos);
  CHECK_FALSE(std::filesystem::exists(rebuilt));
  CHECK_FALSE(std::filesystem::exists(rebuilt + ".partial"));

  r = ctl_run({"replay", "--projection", "all", "--db", rebuilt, "--allow-incomplete"}, topic, 120s);
  REQUIRE_MESSAGE(r.status == 0, r.err);
  CHECK(r.err.find("msg=\"replay incomplete\" why=\"topic " + topic + " has cleanup.policy=compact") !=
        std::string::npos);
  CHECK(r.err.find("msg=\"replay caught up\"") != std::string::npos);
  CHECK(r.err.find(" incomplete=true ") != std::string::npos);
  CHECK(test::query_int(rebuilt, "PRAGMA application_id") == store::incomplete_replay_id);

  // Whoever swaps it in is told: the live rows of the missing events would go.
  const auto live = (dir / "live.db").string();
  { store::database created(live); }
  const std::vector<std::string> swap{"swap-in", "--projection", "users", "--from", rebuilt, "--db", live};
  r = ctl_run(swap, topic);
  CHECK(r.status == 1);
  CHECK_MESSAGE(r.err.find("finished with events missing") != std::string::npos, r.err);
  CHECK(r.err.find("--accept-incomplete") != std::string::npos);
  CHECK(test::query_int(live, "SELECT count(*) FROM users") == 0);
  auto accepted = swap;
  accepted.push_back("--accept-incomplete");
  r = ctl_run(accepted, topic);
  CHECK_MESSAGE(r.status == 0, r.err);
  CHECK(r.err.find("level=warn msg=\"incomplete replay swapped in\" projections=users ") != std::string::npos);
  CHECK(test::query_int(live, "SELECT count(*) FROM users") == test::query_int(rebuilt, "SELECT count(*) FROM users"));
  CHECK(test::query_int(live, "SELECT count(*) FROM users") > 0);
  CHECK(test::query_int(live, "PRAGMA application_id") == 0);  // a live file carries no replay's mark
}

TEST_CASE("replay reads from the offset it checked: a log trimmed after the check is an error, not a later start") {
  // What replay does between its check of the log's start and its first
  // fetch, with the trim in between (the window cannot be entered from
  // outside the process): its reader is assigned its tracker's assignment.
  const auto topic = test::fresh_topic("ctl-replay-race", 1);
  test::produce_events(test::broker(), topic, test::generate_events({.users = 3, .events = 10, .seed = 5}));
  kafka::consumer reader(test::broker(), "");
  const auto [low, high] = reader.watermarks(topic, 0, 10s);
  REQUIRE(low == 0);
  REQUIRE(high > 5);
  ops::replay_tracker tracker;
  tracker.add_partition(0, low, high);
  kafka::delete_records(test::broker(), topic, 0, 5, 30s);
  reader.assign(tracker.assignment(topic));
  std::optional<std::string> error;
  for (const auto until = std::chrono::steady_clock::now() + 20s; !error && std::chrono::steady_clock::now() < until;) {
    try {
      const auto m = reader.poll(200ms);
      REQUIRE_FALSE(m);  // offsets 0-4 are gone: nothing may be read from 5 on as if it came first
    } catch (const kafka::offset_out_of_range& e) {
      error = e.what();
    }
  }
  REQUIRE(error);
  CHECK(error->find("is outside the log [5, ") != std::string::npos);
}

TEST_CASE("dead letters are listed and a re-drive of a still-broken event exits 1") {
  const auto topic = test::fresh_topic("ctl-dead", 1);
  const test::temp_dir dir;
  const auto db = (dir / "live.db").string();
  // A user.created without data.id cannot be mapped: it must become a dead letter.
  test::produce_events(test::broker(), topic,
                       {{"user_x", "msg_broken1", "user.created",
                         R"({"type":"user.created","object":"event","timestamp":1716883200,"data":{"object":"user"}})"}});
  auto consumer = test::start_consumer({"--projection", "users", "--db", db, "--topic", topic, "--group-prefix",
                                        test::unique_name("ctl-dead")});
  REQUIRE(wait_lag_zero(db, topic, "users", 60s).status == 0);
  const auto list = ctl_run({"dead-letters", "list", "--db", db}, topic);
  INFO(list.out << list.err);
  CHECK(list.status == 0);
  CHECK(list.out.find("msg_broken1") != std::string::npos);
  CHECK(list.out.find("users") != std::string::npos);
  const auto retry = ctl_run({"dead-letters", "retry", "--db", db, "--all"}, topic);
  INFO(retry.err);
  CHECK(retry.status == 1);
  CHECK(retry.err.find("still fails") != std::string::npos);
  CHECK(ctl_run({"dead-letters", "list", "--db", db}, topic).out.find("msg_broken1") != std::string::npos);
  consumer->signal(SIGTERM);
  CHECK(consumer->wait(30s) == 0);
}

TEST_CASE("dead-letters --projection takes a comma list or all and acts on each projection") {
  const auto topic = test::fresh_topic("ctl-dead-multi", 1);
  const test::temp_dir dir;
  const auto db = (dir / "live.db").string();
  // Not JSON: a dead letter in every projection; delivered twice, still one each.
  const test::generated_event broken{"user_y", "msg_broken2", "user.created", "{not json"};
  test::produce_events(test::broker(), topic, {broken, broken});
  auto consumer = test::start_consumer({"--projection", "users,sessions,balances", "--db", db, "--topic", topic,
                                        "--group-prefix", test::unique_name("ctl-dead-multi")});
  REQUIRE(wait_lag_zero(db, topic, "users,sessions,balances", 60s).status == 0);
  consumer->signal(SIGTERM);
  CHECK(consumer->wait(30s) == 0);
  CHECK(test::query_int(db, "SELECT count(*) FROM dead_letters") == 3);

  const auto count_lines = [](const std::string& text, const std::string& word) {
    std::size_t n = 0;
    for (auto at = text.find(word); at != std::string::npos; at = text.find(word, at + 1)) ++n;
    return n;
  };
  auto list = ctl_run({"dead-letters", "list", "--db", db, "--projection", "users,sessions"}, topic);
  CHECK(list.status == 0);
  CHECK_MESSAGE(count_lines(list.out, "msg_broken2") == 2, list.out);
  CHECK(list.out.find(" balances ") == std::string::npos);
  list = ctl_run({"dead-letters", "list", "--db", db, "--projection", "all"}, topic);
  CHECK_MESSAGE(count_lines(list.out, "msg_broken2") == 3, list.out);
  const auto retry = ctl_run({"dead-letters", "retry", "--db", db, "--all", "--projection", "sessions,balances"}, topic);
  CHECK(retry.status == 1);
  CHECK_MESSAGE(count_lines(retry.err, "still fails") == 2, retry.err);
}

TEST_CASE("send delivers generated events through the real receiver into Kafka") {
  const auto topic = test::fresh_topic("ctl-send", 3);
  const auto port = test::free_port();
  const std::string secret = "whsec_" + std::string("Y2xlcmstc3luYy1jdGwtdGVzdC1rZXktMDE=");  // test-only key
  auto env = kafka_env(topic);
  env["CLERK_WEBHOOK_SECRET"] = secret;
  env["CLERK_SYNC_LISTEN"] = "127.0.0.1:" + std::to_string(port);
  env["NOTIFY_SOCKET"] = "";
  test::process receiver(test::binary_path("app/receiver/clerk-sync-receiver"), {}, env);
  // Ready once /readyz-level start-up logging appears; send retries meanwhile anyway.
  const auto r = test::run(ctl(), {"send", "--generate", "40", "--seed", "5", "--retry-schedule", "200ms,500ms,1s,2s",
                                   "--url", "http://127.0.0.1:" + std::to_string(port) + "/webhooks/clerk"},
                           env, 120s);
  INFO(r.err << receiver.stderr_text());
  CHECK(r.status == 0);
  CHECK(r.err.find("sent=40") != std::string::npos);
  CHECK(r.err.find("failed=0") != std::string::npos);
  CHECK(high_watermark_sum(topic) == 40);
  // A wrong secret is refused (401) and send reports failure after its retries.
  auto wrong = env;
  wrong["CLERK_WEBHOOK_SECRET"] = "whsec_" + std::string("d3Jvbmcta2V5LWZvci10aGUtdGVzdA==");
  const auto bad = test::run(ctl(), {"send", "--generate", "1", "--retry-schedule", "10ms", "--url",
                                     "http://127.0.0.1:" + std::to_string(port) + "/webhooks/clerk"},
                             wrong, 60s);
  CHECK(bad.status == 1);
  CHECK(bad.err.find("status=401") != std::string::npos);
  CHECK(high_watermark_sum(topic) == 40);
  receiver.signal(SIGTERM);
  CHECK(receiver.wait(30s) == 0);
}

TEST_CASE("send with a wrong secret stops after three events' 401s, and says what a 401 means") {
  const auto topic = test::fresh_topic("ctl-send-401", 1);
  test::receiver receiver(test::broker().brokers, topic, test::random_secret());
  auto env = kafka_env(topic);
  env["CLERK_WEBHOOK_SECRET"] = test::random_secret();  // not the receiver's
  // Each event is retried like Svix (a short schedule here), then the run
  // stops after three instead of going through all twenty.
  const auto r = test::run(ctl(), {"send", "--generate", "20", "--retry-schedule", "10ms,10ms", "--url",
                                   "http://127.0.0.1:" + std::to_string(receiver.port()) + "/webhooks/clerk"},
                           env, 20s);
  INFO(r.err);
  CHECK(r.status == 1);
  CHECK(r.err.find("meaning=\"the receiver refused the signature: CLERK_WEBHOOK_SECRET differs from the receiver's") !=
        std::string::npos);
  CHECK(r.err.find("level=error msg=\"send stopped\" sent=3 total=20 ok=0 failed=3 ignored=0 status=401") !=
        std::string::npos);

  // Every 401 it answered, counting the lines its rate limit held back.
  receiver.proc().signal(SIGTERM);
  REQUIRE(receiver.proc().wait(30s) == 0);
  std::istringstream lines(receiver.proc().stderr_text());
  std::size_t refused = 0;
  for (std::string l; std::getline(lines, l);) {
    if (l.find(" status=401") == std::string::npos) continue;
    const auto at = l.find(" repeated=");
    refused += 1 + (at == std::string::npos ? 0 : std::stoull(l.substr(at + 10)));
  }
  CHECK(refused == 3 * 3);  // three events, three attempts each
  CHECK(high_watermark_sum(topic) == 0);
}

TEST_CASE("send counts an event of a type the receiver does not publish as ignored, says nothing was published, exits 1") {
  const auto topic = test::fresh_topic("ctl-send-ignored", 1);
  const auto secret = test::random_secret();
  test::receiver receiver(test::broker().brokers, topic, secret);
  REQUIRE(receiver.wait_ready(30s));
  auto env = kafka_env(topic);
  env["CLERK_WEBHOOK_SECRET"] = secret;
  test::temp_dir dir;
  const auto good = dir / "good.json";
  std::ofstream(good) << R"({"type":"user.created","object":"event","data":{"id":"user_ok"}})";
  // An operator's test event with a typo'd type, and one of a family the
  // receiver leaves alone: both answered 200 {"status":"ignored"}.
  const auto typo = dir / "typo.json";
  std::ofstream(typo) << R"({"type":"user_created","object":"event","data":{"id":"user_typo"}})";
  const auto org = dir / "org.json";
  std::ofstream(org) << R"({"type":"organization.created","object":"event","data":{"id":"org_1"}})";
  const auto r = test::run(ctl(), {"send", good.string(), typo.string(), org.string(), "--retry-schedule", "10ms",
                                   "--url", "http://127.0.0.1:" + std::to_string(receiver.port()) + "/webhooks/clerk"},
                           env, 60s);
  INFO(r.err);
  CHECK(r.status == 1);
  CHECK(r.err.find("ok=1 failed=0 ignored=2") != std::string::npos);
  for (const auto* type : {"type=user_created", "type=organization.created"}) {
    const auto at = r.err.find(type);
    REQUIRE(at != std::string::npos);
    const auto before = r.err.rfind('\n', at);
    const auto from = before == std::string::npos ? 0 : before + 1;
    const auto line = r.err.substr(from, r.err.find('\n', at) - from);
    CHECK(line.find("msg=\"send ignored\"") != std::string::npos);
    CHECK(line.find("nothing was published") != std::string::npos);
  }
  CHECK(high_watermark_sum(topic) == 1);  // the good one only
}
