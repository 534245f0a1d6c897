#pragma once
// `ctl topic ensure`: create the events topic with settings that keep every
// record (replay needs the whole log), or check an existing one. The check
// is pure (replay_warnings); ensure_topic does the admin round-trips and
// throws kafka::fatal_error / kafka::config_error like lib/kafka/admin.

#include <chrono>
#include <map>
#include <string>
#include <vector>

#include "kafka/client.hpp"

namespace clerk_sync::ops {

struct topic_settings {
  std::string name = "clerk.events";
  int partitions = 6;
  int replication_factor = 1;
  std::string retention_ms = "-1";  // infinite: replay must see every event
  // Extra topic configs (min.insync.replicas=2 on a real cluster, ...).
  std::vector<std::pair<std::string, std::string>> configs;
};

// Why a topic with this effective configuration cannot be replayed in full;
// empty when it can. Deletion by age or size, and compaction (it keeps only
// the newest record per user and drops session events), each give a line.
[[nodiscard]] std::vector<std::string> replay_warnings(const std::map<std::string, std::string>& config);

struct topic_report {
  bool created = false;               // false: it existed already
  std::vector<std::string> warnings;  // replay_warnings of the existing topic
};

[[nodiscard]] topic_report ensure_topic(const kafka::client_config& cfg, const topic_settings& settings,
                                        std::chrono::milliseconds timeout);

}  // namespace clerk_sync::ops
