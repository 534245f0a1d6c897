// lib/ops without Kafka: the replay stopping rule, lag, topic checks, URL and
// retry-schedule parsing, generated events (applied by the real applier),
// and the row-for-row compare on real database files.
#include "ops/compare.hpp"
#include "ops/events.hpp"
#include "ops/replay.hpp"
#include "ops/sender.hpp"
#include "ops/status.hpp"
#include "ops/topic.hpp"

#include <doctest/doctest.h>

#include <array>
#include <fstream>
#include <set>

#include "kafka/admin.hpp"
#include "kafka/mock_cluster.hpp"
#include "projection/applier.hpp"
#include "store/database.hpp"
#include "support/support.hpp"

using namespace clerk_sync;

namespace {

std::vector<projection::envelope> as_messages(const std::vector<ops::generated_event>& events,
                                             std::int64_t first_offset = 0) {
  std::vector<projection::envelope> out;
  std::int64_t offset = first_offset;
  for (const auto& e : events)
    out.push_back({"clerk.events", 0, offset++, ops::random_message_id(), e.type, e.body});
  return out;
}

void fill(const std::string& path, const std::vector<projection::envelope>& messages) {
  store::database db(path);
  projection::applier ap(db, {std::begin(projection::all_kinds), std::end(projection::all_kinds)});
  for (const auto& r : ap.apply(messages)) CHECK_MESSAGE(r.result != projection::outcome::dead_letter, r.detail);
}

}  // namespace

TEST_CASE("replay tracker counts a partition read once its position passes records it is never given") {
  ops::replay_tracker t;
  t.add_partition(0, 0, 7);  // 3 committed, their commit marker, 2 aborted, the abort marker
  t.add_partition(1, 0, 2);
  for (std::int64_t o = 0; o < 3; ++o) CHECK(t.accept(0, o));
  CHECK(t.lag() == 6);
  t.passed(0, 7);  // the reader moved past the markers and the aborted records
  CHECK(t.lag() == 2);
  t.passed(0, 2);  // a position never moves the count back
  CHECK(t.lag() == 2);
  t.passed(1, 9);  // records written after the start count up to the target only
  CHECK(t.done());
  t.passed(5, 3);  // unknown partition
  CHECK(t.lag() == 0);
}

TEST_CASE("replay tracker counts a partition read once a record past its target arrives") {
  // Live events keep arriving after withheld records at the target's end:
  // the reader never goes quiet, and its position need not be asked.
  ops::replay_tracker t;
  t.add_partition(0, 0, 7);  // 3 committed, their commit marker, 2 aborted, the abort marker
  for (std::int64_t o = 0; o < 3; ++o) CHECK(t.accept(0, o));
  CHECK(t.lag() == 4);
  CHECK_FALSE(t.accept(0, 7));  // written after the start
  CHECK(t.done());
}

TEST_CASE("replay tracker stops at the high watermarks taken at start") {
  ops::replay_tracker t;
  t.add_partition(0, 0, 3);
  t.add_partition(1, 5, 7);  // records before 5 were deleted
  t.add_partition(2, 0, 0);  // empty partition
  CHECK(t.total() == 5);
  CHECK(t.lag() == 5);
  CHECK_FALSE(t.done());
  // Read from the offsets checked, the empty partition not at all.
  CHECK(t.assignment("t") == std::vector<kafka::topic_partition>{{"t", 0, 0}, {"t", 1, 5}});
  CHECK(t.accept(0, 0));
  CHECK(t.accept(0, 2));  // a gap (offset 1 never delivered) still counts as read up to 2
  CHECK(t.lag() == 2);
  CHECK_FALSE(t.accept(0, 3));  // written after the start: not part of this replay
  CHECK_FALSE(t.accept(9, 0));  // unknown partition
  CHECK(t.accept(1, 5));
  CHECK_FALSE(t.done());
  CHECK(t.accept(1, 6));
  CHECK(t.done());
  CHECK(t.lag() == 0);
}

TEST_CASE("lag counts from the stored offset, or from the low watermark when none is stored") {
  CHECK(ops::lag_of(std::nullopt, 0, 10) == 10);
  CHECK(ops::lag_of(std::nullopt, 4, 10) == 6);
  CHECK(ops::lag_of(7, 0, 10) == 3);
  CHECK(ops::lag_of(10, 0, 10) == 0);
  CHECK(ops::lag_of(2, 5, 10) == 5);   // stored offset already deleted
  CHECK(ops::lag_of(12, 0, 10) == 0);  // never negative
}

TEST_CASE("a stored offset outside the log is flagged: below its first record or past its end") {
  CHECK_FALSE(ops::outside_log(std::nullopt, 5, 10));  // nothing stored: the consumer starts at the log's start
  CHECK_FALSE(ops::outside_log(5, 5, 10));              // trimmed up to it exactly: resumes there
  CHECK_FALSE(ops::outside_log(10, 5, 10));             // caught up
  CHECK(ops::outside_log(4, 5, 10));                    // its record was deleted
  CHECK(ops::outside_log(11, 5, 10));                   // the topic is shorter: recreated
  CHECK(ops::outside_log(1, 0, 0));                     // recreated and still empty
}

TEST_CASE("topic check warns on finite retention and on compaction") {
  CHECK(ops::replay_warnings({{"retention.ms", "-1"}, {"cleanup.policy", "delete"}, {"retention.bytes", "-1"}}).empty());
  CHECK(ops::replay_warnings({}).size() == 1);  // Kafka's default: 7 days
  // The receiver's largest record (1 MiB body, key, headers) must fit.
  const auto largest = ops::default_largest_record();
  CHECK(ops::size_warnings({{"max.message.bytes", "2097152"}}, largest).empty());
  CHECK(ops::size_warnings({{"max.message.bytes", "1048588"}}, largest).size() == 1);  // Kafka's default
  CHECK(ops::size_warnings({}, largest).size() == 1);
  // A receiver run with 3 MiB bodies needs more than the 2 MiB topic's.
  CHECK(ops::size_warnings({{"max.message.bytes", "2097152"}}, 3 * 1024 * 1024 + 20480).size() == 1);
  const auto w = ops::replay_warnings({{"retention.ms", "-1"}, {"cleanup.policy", "compact,delete"}});
  REQUIRE(w.size() == 1);
  CHECK(w[0].find("compact") != std::string::npos);
  CHECK(ops::replay_warnings({{"retention.ms", "86400000"}, {"cleanup.policy", "delete"}}).size() == 1);
  CHECK(ops::replay_warnings({{"retention.ms", "-1"}, {"retention.bytes", "1073741824"}}).size() == 1);
}

TEST_CASE("the cluster's size counts the brokers down that partitions name as replicas") {
  // Two of three brokers down (controllers apart): the metadata lists the
  // live one only, while partitions still name the others. Counted as one,
  // topic ensure planned one copy, created it and judged it clean.
  rd_kafka_metadata_broker_t live{};
  live.id = 1;
  std::array<std::int32_t, 3> replicas{1, 2, 3};
  std::array<std::int32_t, 1> in_sync{1};
  rd_kafka_metadata_partition_t partition{};
  partition.leader = 1;
  partition.replica_cnt = 3;
  partition.replicas = replicas.data();
  partition.isr_cnt = 1;
  partition.isrs = in_sync.data();
  std::string internal = "__consumer_offsets";
  rd_kafka_metadata_topic_t topic{};
  topic.topic = internal.data();
  topic.partition_cnt = 1;
  topic.partitions = &partition;
  rd_kafka_metadata_t md{};
  md.broker_cnt = 1;
  md.brokers = &live;
  md.topic_cnt = 1;
  md.topics = &topic;
  const auto missing = kafka::layout_of(md, "clerk.events");
  CHECK(missing.brokers == std::vector<std::int32_t>{1});
  CHECK(missing.partitions.empty());
  CHECK(missing.known_brokers == 3);
  // The plan is three copies (topic ensure then creates nothing while two
  // are down, and says so), and a topic of one copy is judged as such.
  CHECK(ops::with_defaults({}, missing.known_brokers).replication_factor == 3);
  CHECK(ops::durability_warnings(missing.known_brokers, 1, 1, false).size() == 1);
  const auto of_internal = kafka::layout_of(md, internal);
  REQUIRE(of_internal.partitions.size() == 1);
  CHECK(of_internal.partitions.front().replicas == std::vector<std::int32_t>{1, 2, 3});
  CHECK(of_internal.partitions.front().isr == std::vector<std::int32_t>{1});
}

TEST_CASE("topic defaults: room for the receiver's largest record, at least the 2 MiB default") {
  ops::topic_settings s;
  CHECK(ops::with_defaults(s, 1).max_message_bytes == "2097152");
  s.largest_record = 3 * 1024 * 1024 + 16 * 1024 + 4096;
  CHECK(ops::with_defaults(s, 1).max_message_bytes == std::to_string(s.largest_record));
}

TEST_CASE("topic defaults: three copies and two in sync on three brokers, one copy on one, none on two") {
  const auto on3 = ops::with_defaults({}, 3);
  CHECK(on3.replication_factor == 3);
  CHECK(on3.configs == std::vector<std::pair<std::string, std::string>>{{"min.insync.replicas", "2"}});
  CHECK(ops::with_defaults({}, 5).replication_factor == 3);
  const auto on1 = ops::with_defaults({}, 1);
  CHECK(on1.replication_factor == 1);
  // Said explicitly: a broker default of min.insync.replicas=2 (common on
  // clusters) would refuse every write to a topic with one copy, while the
  // report, made from these settings, said it was clean.
  CHECK(on1.configs == std::vector<std::pair<std::string, std::string>>{{"min.insync.replicas", "1"}});
  // Two listed may be three with one down: no default.
  CHECK_THROWS_AS((void)ops::with_defaults({}, 2), clerk_sync::kafka::fatal_error);
  // The operator's choices stand.
  ops::topic_settings mine;
  mine.replication_factor = 2;
  CHECK(ops::with_defaults(mine, 3).replication_factor == 2);
  CHECK(ops::with_defaults(mine, 3).configs.empty());
  mine.replication_factor = 4;
  mine.configs = {{"min.insync.replicas", "3"}};
  CHECK(ops::with_defaults(mine, 5).configs == mine.configs);
}

TEST_CASE("topic ensure on a cluster listing two brokers creates nothing without --replication-factor") {
  // Three brokers with one down list two: the default for two would create
  // a topic with one copy, for good.
  clerk_sync::kafka::mock_cluster mock(2);
  ops::topic_settings s;
  s.name = "events";
  CHECK_THROWS_WITH_AS((void)ops::ensure_topic({mock.bootstrap_servers(), {}}, s, std::chrono::seconds(5)),
                       doctest::Contains("--replication-factor"), clerk_sync::kafka::fatal_error);
}

TEST_CASE("topic ensure and the topic check on a topic the credentials may not describe say so, and create nothing") {
  // Kafka leaves such a topic out of a listing of all topics (the mock
  // lists it with the error): taken for a missing one, ensure tried to
  // create it and said "authorization failed" of the creation, or "give
  // --replication-factor".
  clerk_sync::kafka::mock_cluster mock(1);
  mock.create_topic("acl-denied", 1);
  mock.set_topic_error("acl-denied", 29);  // TOPIC_AUTHORIZATION_FAILED
  ops::topic_settings s;
  s.name = "acl-denied";
  const clerk_sync::kafka::client_config cfg{mock.bootstrap_servers(), {}};
  CHECK_THROWS_WITH_AS((void)ops::ensure_topic(cfg, s, std::chrono::seconds(5)),
                       doctest::Contains("may not describe topic acl-denied"),
                       clerk_sync::kafka::authorization_error);
  CHECK_THROWS_WITH_AS((void)ops::check_topic(cfg, "acl-denied", std::chrono::seconds(5), 0),
                       doctest::Contains("may not describe topic acl-denied"),
                       clerk_sync::kafka::authorization_error);
}

TEST_CASE("topic durability warns when acks=all can fall back to one copy, or can never succeed") {
  CHECK(ops::durability_warnings(3, 3, 2).empty());
  CHECK(ops::durability_warnings(5, 3, 3).empty());
  CHECK(ops::durability_warnings(1, 1, 1).empty());  // a development broker: no second copy to have
  const auto one_copy = ops::durability_warnings(3, 1, 1);
  REQUIRE(one_copy.size() == 1);
  CHECK(one_copy[0].find("replication factor 1") != std::string::npos);
  const auto lone_leader = ops::durability_warnings(3, 3, 1);
  REQUIRE(lone_leader.size() == 1);
  CHECK(lone_leader[0].find("min.insync.replicas=1") != std::string::npos);
  CHECK(ops::durability_warnings(2, 2, 1).size() == 1);
  const auto never = ops::durability_warnings(3, 2, 3);
  REQUIRE(never.size() == 1);
  CHECK(never[0].find("NOT_ENOUGH_REPLICAS") != std::string::npos);
  // A development broker too: a topic made with min.insync.replicas=2 and
  // one copy refuses every write on a broker before Kafka 3.7 (from 3.7 the
  // broker reads it as 1).
  const auto never_here = ops::durability_warnings(1, 1, 2);
  REQUIRE(never_here.size() == 1);
  CHECK(never_here[0].find("NOT_ENOUGH_REPLICAS") != std::string::npos);
  // Unclean election lets a replica out of sync lead and cut the log.
  CHECK(ops::durability_warnings(3, 3, 2, false).empty());
  const auto unclean = ops::durability_warnings(3, 3, 2, true);
  REQUIRE(unclean.size() == 1);
  CHECK(unclean[0].find("unclean.leader.election.enable=true") != std::string::npos);
  CHECK(ops::durability_warnings(1, 1, 1, true).empty());  // one copy: no other replica to elect
}

TEST_CASE("http urls and retry schedules parse strictly") {
  const auto u = ops::parse_http_url("http://127.0.0.1:8080/webhooks/clerk");
  REQUIRE(u);
  CHECK(u->host == "127.0.0.1");
  CHECK(u->port == "8080");
  CHECK(u->target == "/webhooks/clerk");
  const auto v6 = ops::parse_http_url("http://[::1]:9000");
  REQUIRE(v6);
  CHECK(v6->host == "::1");
  CHECK(v6->target == "/");
  CHECK_FALSE(ops::parse_http_url("https://example.com/"));
  CHECK_FALSE(ops::parse_http_url("http://host:99999/"));
  CHECK_FALSE(ops::parse_http_url("http://:80/"));

  const auto s = ops::parse_schedule("500ms, 5s,5m,2h");
  REQUIRE(s);
  CHECK(*s == std::vector<std::chrono::milliseconds>{std::chrono::milliseconds(500), std::chrono::seconds(5),
                                                     std::chrono::minutes(5), std::chrono::hours(2)});
  CHECK(ops::parse_schedule("")->empty());
  CHECK_FALSE(ops::parse_schedule("5x"));
  CHECK_FALSE(ops::parse_schedule("5"));
  CHECK_FALSE(ops::parse_schedule("-1s"));
  // A step of more than a day: a count this large overflowed into a retry at once.
  CHECK(ops::parse_schedule("24h") == std::vector<std::chrono::milliseconds>{std::chrono::hours(24)});
  CHECK_FALSE(ops::parse_schedule("25h"));
  CHECK_FALSE(ops::parse_schedule("9223372036854775807h"));
}

TEST_CASE("a url with user-info is refused, and printed with its user-info hidden") {
  const auto password = ops::random_message_id();  // generated: no real secret in a test
  // Once read as host "user@127.0.0.1": sent, with the name in the Host header.
  CHECK_FALSE(ops::parse_http_url("http://" + password + "@127.0.0.1:8080/webhooks/clerk"));
  CHECK_FALSE(ops::parse_http_url("http://ops:" + password + "@127.0.0.1:8080/webhooks/clerk"));
  CHECK(ops::redact_url("http://ops:" + password + "@host:8080/webhooks/clerk") ==
        "http://***@host:8080/webhooks/clerk");
  // A password with a '/' typed unencoded, which ends the authority early.
  CHECK(ops::redact_url("http://ops:" + password + "/x@host/webhooks") == "http://***@host/webhooks");
  CHECK(ops::redact_url("ops:" + password + "@host/webhooks") == "***@host/webhooks");
  CHECK(ops::redact_url("https://host:8443/webhooks/clerk") == "https://host:8443/webhooks/clerk");
}

TEST_CASE("generated events are deterministic and all map cleanly through the real applier") {
  const auto a = ops::generate_events(300, 7);
  const auto b = ops::generate_events(300, 7);
  REQUIRE(a.size() == 300);
  CHECK(a.front().body == b.front().body);
  CHECK(a.back().body == b.back().body);
  CHECK(ops::generate_events(300, 8).back().body != a.back().body);
  std::set<std::string> types, created;
  for (const auto& e : a) {
    types.insert(e.type);
    if (e.type == "user.created") created.insert(e.user_id);
    else CHECK_MESSAGE(created.contains(e.user_id), "event before user.created: " << e.type);
  }
  CHECK(types.contains("user.updated"));
  CHECK(types.contains("session.created"));
  CHECK(types.contains("session.ended"));

  test::temp_dir dir;
  fill((dir / "g.db").string(), as_messages(a));
  store::database db((dir / "g.db").string());
  for (const auto& s : projection::status(db)) {
    INFO(projection::name(s.projection));
    CHECK(s.rows > 0);
    CHECK(s.pending_dead_letters == 0);
  }
}

TEST_CASE("compare finds identical tables equal, and names the first differing rows") {
  test::temp_dir dir;
  const auto events = ops::generate_events(120, 3);
  const auto messages = as_messages(events);
  const auto a = (dir / "a.db").string(), b = (dir / "b.db").string(), c = (dir / "c.db").string();
  fill(a, messages);
  fill(b, messages);
  for (const auto k : projection::all_kinds) {
    const auto r = ops::compare_projection(a, b, k);
    INFO(r.table);
    CHECK(r.equal());
    CHECK(r.rows_a == r.rows_b);
  }
  CHECK(ops::compare_projection(a, b, projection::kind::users).rows_a > 0);

  // C misses the last ten events: some rows differ or are missing.
  fill(c, std::vector<projection::envelope>(messages.begin(), messages.end() - 10));
  std::int64_t total = 0;
  for (const auto k : projection::all_kinds) {
    const auto r = ops::compare_projection(a, c, k, 2);
    total += r.differences;
    CHECK(r.first.size() <= 2);
    if (!r.equal()) {
      REQUIRE_FALSE(r.first.empty());
      const bool named = r.first[0].starts_with("differs") || r.first[0].starts_with("only in");
      CHECK(named);
    }
  }
  CHECK(total > 0);

  CHECK_THROWS_AS((void)ops::compare_projection(a, (dir / "missing.db").string(), projection::kind::users),
                  ops::compare_error);
}

TEST_CASE("a replay whose final rename fails is a replay_error that says so, not an unexpected error") {
  // Its directory moved away once everything was read: the rename finds
  // no partial file. It threw std::filesystem::filesystem_error, which ctl
  // reported as unexpected_error.
  kafka::mock_cluster mock(2);
  (void)test::make_two_leader_topic(mock, "events");
  test::temp_dir dir;
  const auto folder = dir / "rebuild";
  std::filesystem::create_directory(folder);
  ops::replay_options opts;
  opts.topic = "events";
  opts.projections = {projection::kind::users};
  opts.db_path = (folder / "x.db").string();
  opts.progress_interval = std::chrono::milliseconds(0);
  bool moved = false;
  const auto move_when_read = [&](const ops::replay_progress& p) {
    if (p.lag != 0 || moved) return;
    std::filesystem::rename(folder, dir / "moved");
    moved = true;
  };
  const auto said = "could not rename " + opts.db_path + ".partial to " + opts.db_path;
  CHECK_THROWS_WITH_AS((void)ops::replay({mock.bootstrap_servers(), {}}, opts, move_when_read),
                       doctest::Contains(said.c_str()), ops::replay_error);
  CHECK(moved);
}

TEST_CASE("a replay's final check that the topic was not recreated is tried again when a read of it fails") {
  // Everything read and applied, the one read left fails (here broker 2,
  // partition 1's leader, refuses ListOffsets, as while it restarts): the
  // finished file was thrown away at the first failure.
  kafka::mock_cluster mock(2);
  (void)test::make_two_leader_topic(mock, "events");
  test::temp_dir dir;
  ops::replay_options opts;
  opts.topic = "events";
  opts.projections = {projection::kind::users};
  opts.db_path = (dir / "x.db").string();
  opts.progress_interval = std::chrono::milliseconds(0);
  int failures = 0;
  bool injected = false;
  const auto fail_check_when_read = [&](const ops::replay_progress& p) {
    if (p.lag != 0 || injected) return;
    mock.fail_next_requests_to(2, 2 /* ListOffsets */, failures, 29 /* TOPIC_AUTHORIZATION_FAILED */);
    injected = true;
  };
  test::capture_stderr log;
  SUBCASE("a failure that passes: the replay finishes") {
    failures = 2;
    CHECK_NOTHROW((void)ops::replay({mock.bootstrap_servers(), {}}, opts, fail_check_when_read));
    CHECK(std::filesystem::exists(opts.db_path));
    CHECK(test::count_of(log.text(), "level=warn msg=\"replay check failed\" attempt=") >= 1);
    CHECK(log.text().find("msg=\"replay check failed\" attempt=1 error=\"partition 1's record at offset 0: ") !=
          std::string::npos);
  }
  SUBCASE("one that lasts the stall timeout: the replay fails, saying to run it again") {
    failures = 1000;
    opts.stall_timeout = std::chrono::seconds(4);  // also the bound of the reads before: not too tight
    std::string what;
    try {
      (void)ops::replay({mock.bootstrap_servers(), {}}, opts, fail_check_when_read);
    } catch (const ops::replay_error& e) {
      what = e.what();
    }
    CAPTURE(what);
    CHECK(what.find("could not check that the topic was not recreated during the replay (partition 1's record "
                    "at offset 0: ") != std::string::npos);
    CHECK(what.find("run the replay again") != std::string::npos);
    CHECK(test::count_of(log.text(), "msg=\"replay check failed\"") >= 2);
    CHECK_FALSE(std::filesystem::exists(opts.db_path));
  }
  CHECK(injected);
}

TEST_CASE("replay refuses a database file that already holds data") {
  test::temp_dir dir;
  const auto path = (dir / "x.db").string();
  CHECK_NOTHROW(ops::require_fresh_database(path));  // absent
  { std::ofstream(path).flush(); }
  CHECK_NOTHROW(ops::require_fresh_database(path));  // empty file
  { store::database db(path); }
  CHECK_THROWS_AS(ops::require_fresh_database(path), ops::replay_error);
}
