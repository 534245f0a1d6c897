#pragma once
// librdkafka's in-process mock cluster, for fault injection in tests only
// (request errors, broker down, round-trip delays). Clients connect to
// bootstrap_servers() like to any cluster. Not a stand-in for the real
// broker: it cannot create topics on request and keeps 5 MiB per partition.

#include <chrono>
#include <cstdint>
#include <memory>
#include <string>

namespace clerk_sync::kafka {

class mock_cluster {
 public:
  explicit mock_cluster(int brokers = 1);
  ~mock_cluster();
  mock_cluster(const mock_cluster&) = delete;
  mock_cluster& operator=(const mock_cluster&) = delete;

  [[nodiscard]] std::string bootstrap_servers() const;

  void create_topic(const std::string& topic, int partitions, int replication = 1);

  // The next `count` Produce requests fail with the Kafka error `code`
  // (a rd_kafka_resp_err_t value, e.g. 7 = REQUEST_TIMED_OUT).
  void fail_next_produce_requests(int count, int code) { fail_next_requests(0 /* Produce */, count, code); }
  // The same for any request type (Kafka API key, e.g. 2 = ListOffsets).
  void fail_next_requests(int api_key, int count, int code);
  // The same for the requests sent to one broker only: the partitions it
  // leads fail, the others' requests go to other brokers.
  void fail_next_requests_to(std::int32_t broker, int api_key, int count, int code);

  // Broker ids start at 1.
  void set_partition_leader(const std::string& topic, std::int32_t partition, std::int32_t broker);
  // The coordinator of consumer group `group` (so that a test can put
  // another broker down without the group losing its coordinator).
  void set_group_coordinator(const std::string& group, std::int32_t broker);
  void set_broker_down(std::int32_t broker);
  void set_broker_up(std::int32_t broker);
  void set_round_trip(std::int32_t broker, std::chrono::milliseconds rtt);

  // The next Produce request to `broker` is handled at once (its records
  // appended) and answered only after `delay`; produce_requests_delayed()
  // says how many such delays wait for their request (0 once it came).
  // Metadata answers carry the Kafka error `code` for this topic (e.g. 29 =
  // TOPIC_AUTHORIZATION_FAILED).
  void set_topic_error(const std::string& topic, int code);

  void delay_next_produce_answer(std::int32_t broker, std::chrono::milliseconds delay);
  [[nodiscard]] std::size_t produce_requests_delayed(std::int32_t broker) const;

 private:
  struct impl;
  std::unique_ptr<impl> impl_;
};

}  // namespace clerk_sync::kafka
