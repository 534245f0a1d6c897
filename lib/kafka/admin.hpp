#pragma once
// Topic administration through librdkafka's admin API. Blocking calls, each
// with its own short-lived client; for start-up, tests and clerk-sync-ctl,
// never for a request path. Errors throw fatal_error with Kafka's reason.

#include <chrono>
#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include <librdkafka/rdkafka.h>

#include "kafka/client.hpp"

namespace clerk_sync::kafka {

struct topic_spec {
  std::string name;
  int partitions = 3;
  int replication_factor = 1;
  std::vector<std::pair<std::string, std::string>> configs;  // e.g. retention.ms=-1
};

enum class create_outcome { created, already_exists };

[[nodiscard]] create_outcome create_topic(const client_config& cfg, const topic_spec& spec,
                                          std::chrono::milliseconds timeout);

// The topic's effective configuration (name -> value); nullopt if it does
// not exist. Throws authorization_error when the credentials may not
// describe it, fatal_error for any other failure.
[[nodiscard]] std::optional<std::map<std::string, std::string>> describe_topic(const client_config& cfg,
                                                                                const std::string& topic,
                                                                                std::chrono::milliseconds timeout);
namespace detail {
// The same through a client of the caller's (a consumer: the admin API
// takes any handle), so that its properties meet no client of another kind.
[[nodiscard]] std::optional<std::map<std::string, std::string>> describe_topic(rd_kafka_t* rk,
                                                                                const std::string& topic,
                                                                                std::chrono::milliseconds timeout);
}  // namespace detail

struct partition_layout {
  std::int32_t id = 0;
  std::int32_t leader = -1;  // broker id; -1 while there is none
  std::vector<std::int32_t> replicas;
  std::vector<std::int32_t> isr;  // in-sync replicas
};

struct cluster_layout {
  std::vector<std::int32_t> brokers;         // ids of the brokers the cluster lists
  std::vector<partition_layout> partitions;  // of the topic asked for; empty when it does not exist
  // The cluster's size as far as its metadata tells: the brokers listed,
  // which are the live ones only, and every other broker some partition of
  // any topic names as a replica (one down). Two of three down leave one
  // listed, and a topic planned for one broker would keep one copy for good.
  int known_brokers = 0;
};

// The layout of `topic` in a metadata answer of every topic.
[[nodiscard]] cluster_layout layout_of(const rd_kafka_metadata_t& md, const std::string& topic);

// The brokers and where `topic`'s partitions live: one metadata round-trip
// for every topic, and one for `topic` alone when that lacks it (to tell a
// topic these credentials may not describe, authorization_error, from a
// missing one), both within `timeout`.
[[nodiscard]] cluster_layout describe_cluster(const client_config& cfg, const std::string& topic,
                                              std::chrono::milliseconds timeout);

// Deletes the records of topic/partition below `before_offset` (the log then
// starts there). For operators and tests of what a consumer does when its
// stored offset is gone.
void delete_records(const client_config& cfg, const std::string& topic, std::int32_t partition,
                    std::int64_t before_offset, std::chrono::milliseconds timeout);

// Deletes a topic; deleting one that does not exist is not an error.
void delete_topic(const client_config& cfg, const std::string& topic, std::chrono::milliseconds timeout);

}  // namespace clerk_sync::kafka
