#include "kafka/replica_watch.hpp"

#include <doctest/doctest.h>

#include <string>
#include <thread>

#include "kafka/admin.hpp"
#include "kafka/mock_cluster.hpp"
#include "support/support.hpp"

using namespace std::chrono_literals;
namespace kafka = clerk_sync::kafka;
namespace test = clerk_sync::test;
using short_of = kafka::producer::partition_sync;

// The receiver's readiness probe hands the watch what each metadata
// round-trip shows; these cases hand it the same, to reach the states a
// one-broker test cluster cannot be put in (a partition short of replicas).
TEST_CASE("replica watch: not_enough_replicas once per change, from the topic's min.insync.replicas, and its end") {
  const auto cfg = test::broker();
  const auto topic = test::unique_name("replicas");
  REQUIRE(kafka::create_topic(cfg, {topic, 2, 1, {{"min.insync.replicas", "1"}}}, 15s) ==
          kafka::create_outcome::created);
  // A topic just created may not be described at once (a case the watch
  // meets as "not read yet", tried again 5 s later).
  for (int i = 0; i < 150 && !kafka::describe_topic(cfg, topic, 2s); ++i) std::this_thread::sleep_for(100ms);
  const test::capture_stderr cap;
  kafka::replica_watch watch(cfg, topic);
  watch.update({});
  watch.update({short_of{0, 1, 1}});  // short of nothing Kafka asks: no line
  CHECK_MESSAGE(cap.text().empty(), cap.text());
  watch.update({short_of{0, 1, 0}});
  watch.update({short_of{0, 1, 0}});
  const auto once = cap.text();
  CHECK(test::count_of(once, "msg=not_enough_replicas") == 1);
  CHECK(test::line_with(once, "not_enough_replicas").find("level=error") != std::string::npos);
  CHECK(test::line_with(once, "not_enough_replicas").find("partitions=0 in_sync=0 min_insync_replicas=1") !=
        std::string::npos);
  watch.update({short_of{0, 1, 0}, short_of{1, 1, 0}});
  CHECK(test::count_of(cap.text(), "msg=not_enough_replicas") == 2);
  CHECK(test::line_with(cap.text(), "partitions=0,1").find("msg=not_enough_replicas") != std::string::npos);
  watch.update({});
  watch.update({});
  CHECK(test::count_of(cap.text(), "msg=replicas_in_sync") == 1);
  CHECK(test::count_of(cap.text(), "min_insync_unknown") == 0);
}

// librdkafka's mock cluster answers no DescribeConfigs, as a broker does
// for credentials without that right on the topic.
TEST_CASE("replica watch: a min.insync.replicas it cannot read is a warning naming the partitions short of replicas") {
  kafka::mock_cluster mock(1);
  mock.create_topic("t", 2);
  kafka::client_config cfg;
  cfg.brokers = mock.bootstrap_servers();
  const test::capture_stderr cap;
  kafka::replica_watch watch(cfg, "t");
  watch.update({short_of{1, 3, 1}});
  watch.update({short_of{1, 3, 1}});
  const auto line = test::line_with(cap.text(), "msg=min_insync_unknown");
  CHECK(test::count_of(cap.text(), "msg=min_insync_unknown") == 1);
  CHECK(line.find("level=warn") != std::string::npos);
  CHECK(line.find("partitions=1 in_sync=1") != std::string::npos);
  CHECK(line.find("reason=\"\"") == std::string::npos);
  CHECK(line.find("reason=") != std::string::npos);
  CHECK(line.find("DescribeConfigs") != std::string::npos);
  CHECK(test::count_of(cap.text(), "not_enough_replicas") == 0);
  watch.update({});
  CHECK(test::count_of(cap.text(), "msg=replicas_in_sync") == 1);
  MESSAGE(line);
}
