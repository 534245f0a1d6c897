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
  const test::capture_stderr cap;
  kafka::replica_watch watch(cfg, topic);
  watch.update({});
  CHECK(cap.text().empty());
  // Not readable yet (the topic does not exist): a warning, asked again in 5 s.
  const auto asked = std::chrono::steady_clock::now();
  watch.update({short_of{0, 1, 1}});
  watch.update({short_of{0, 1, 1}});
  CHECK(test::count_of(cap.text(), "msg=min_insync_unknown") == 1);
  CHECK(test::line_with(cap.text(), "msg=min_insync_unknown").find("asked again in 5 s") != std::string::npos);
  REQUIRE(kafka::create_topic(cfg, {topic, 2, 1, {{"min.insync.replicas", "1"}}}, 15s) ==
          kafka::create_outcome::created);
  for (int i = 0; i < 150 && !kafka::describe_topic(cfg, topic, 2s); ++i) std::this_thread::sleep_for(100ms);
  std::this_thread::sleep_until(asked + 5100ms);
  // Read now, and partition 0 (short of replicas) is not below it: said
  // once, and not as "in sync".
  watch.update({short_of{0, 1, 1}});
  watch.update({short_of{0, 1, 1}});
  CHECK_MESSAGE(test::count_of(cap.text(), "msg=min_insync_read") == 1, cap.text());
  CHECK(test::line_with(cap.text(), "msg=min_insync_read").find("level=warn") != std::string::npos);
  CHECK(test::line_with(cap.text(), "msg=min_insync_read").find("in_sync=1 min_insync_replicas=1") != std::string::npos);
  CHECK(test::count_of(cap.text(), "msg=replicas_in_sync") == 0);
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
  // Short again but not below the minimum (known now): said, and so is its
  // end, which nothing else would report.
  watch.update({short_of{1, 3, 2}});
  CHECK_MESSAGE(test::count_of(cap.text(), "msg=min_insync_read") == 2, cap.text());
  CHECK(test::line_with(cap.text(), "partitions=1 in_sync=2 min_insync_replicas=1").find("msg=min_insync_read") !=
        std::string::npos);
  // One more replica lost, still not below: a step nearer, said again.
  watch.update({short_of{1, 3, 1}});
  watch.update({short_of{1, 3, 1}});
  CHECK_MESSAGE(test::count_of(cap.text(), "msg=min_insync_read") == 3, cap.text());
  CHECK(test::line_with(cap.text(), "partitions=1 in_sync=1 min_insync_replicas=1").find("msg=min_insync_read") !=
        std::string::npos);
  watch.update({});
  CHECK_MESSAGE(test::count_of(cap.text(), "msg=replicas_in_sync") == 2, cap.text());
}

// librdkafka's mock cluster answers no DescribeConfigs: the request times
// out, as one does while the cluster has no controller. A refusal of the
// credentials is tests/e2e/credentials_test.cpp's.
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
  CHECK(line.find("Timed out") != std::string::npos);
  // Not a refusal: no advice about ACLs.
  CHECK(line.find("could not be read: asked again in 5 s") != std::string::npos);
  CHECK(line.find("DescribeConfigs") == std::string::npos);
  CHECK(test::count_of(cap.text(), "not_enough_replicas") == 0);
  watch.update({});
  CHECK(test::count_of(cap.text(), "msg=replicas_in_sync") == 1);
}
