#pragma once
// Kafka refuses acks=all writes to a partition with fewer replicas in sync
// than the topic's min.insync.replicas (NOT_ENOUGH_REPLICAS); librdkafka
// retries them until the record times out, and its report then says only
// "Message timed out". The receiver's readiness probe hands this watch the
// partitions its metadata shows short of replicas, each second; one line
// when that starts, and one when it ends, say why those partitions'
// webhooks get 503. min.insync.replicas is read only while a partition is
// short of replicas, at most once a minute (every 5 s after a failure other
// than a refusal); while it cannot be read (credentials without
// DescribeConfigs on the topic, a cluster not answering), a warning says
// that, why, and which partitions are short, instead. One thread only:
// update() blocks up to 2 s while it asks.

#include <chrono>
#include <optional>
#include <string>
#include <vector>

#include "kafka/client.hpp"
#include "kafka/producer.hpp"

namespace clerk_sync::kafka {

class replica_watch {
 public:
  replica_watch(client_config cfg, std::string topic) : cfg_(std::move(cfg)), topic_(std::move(topic)) {}

  void update(const std::vector<producer::partition_sync>& short_of_sync);

 private:
  void read_min_insync();

  client_config cfg_;
  std::string topic_;
  std::optional<int> min_insync_;
  std::string unreadable_;  // why min.insync.replicas could not be read last time; "" once read
  bool denied_ = false;     // the last failure was a refusal of these credentials
  std::optional<std::chrono::steady_clock::time_point> read_at_;
  std::string logged_;  // what the last line said: "" (nothing wrong), else its state and partitions
};

}  // namespace clerk_sync::kafka
