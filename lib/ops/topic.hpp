#pragma once
// `ctl topic ensure`: create the events topic with settings that keep every
// record (replay needs the whole log) and, on a cluster, every acknowledged
// record through a broker loss; or check an existing one. The checks and the
// defaults are pure (replay_warnings, durability_warnings, with_defaults);
// ensure_topic does the admin round-trips and throws kafka::fatal_error /
// kafka::config_error like lib/kafka/admin.

#include <chrono>
#include <cstddef>
#include <map>
#include <string>
#include <vector>

#include "kafka/client.hpp"

namespace clerk_sync::ops {

// The receiver's largest record with its default limits.
[[nodiscard]] std::size_t default_largest_record();

struct topic_settings {
  std::string name = "clerk.events";
  int partitions = 6;
  int replication_factor = 0;  // 0: with_defaults picks it from the cluster's size
  std::string retention_ms = "-1";  // infinite: replay must see every event
  // Room for the receiver's largest record (a body at its 1 MiB default limit,
  // with key and headers) and then some; Kafka's default is about 1 MiB.
  // with_defaults() raises it to `largest_record` when that is larger.
  std::string max_message_bytes = "2097152";
  // The receiver's largest record (http::max_message_bytes of the limits it
  // runs with): the size the topic is created for and judged by.
  std::size_t largest_record = default_largest_record();
  // Extra topic configs (min.insync.replicas=2 on a real cluster, ...).
  std::vector<std::pair<std::string, std::string>> configs;
};

// The settings to create with on a cluster of `brokers`: replication factor
// 3 on three brokers or more, 1 on one, and none guessed on two (three
// with one down list two: throws kafka::fatal_error); with 3 copies or more,
// min.insync.replicas=2 unless the operator gave one, so that acks=all
// means two copies and one broker may be lost; with one copy,
// min.insync.replicas=1 unless given, the only value a write can meet
// (a broker default of 2 would refuse every write to the topic on a
// broker before Kafka 3.7, which does not cap it at the replica count);
// max.message.bytes at least the largest record.
[[nodiscard]] topic_settings with_defaults(topic_settings settings, int brokers);

// Why a topic with this effective configuration cannot be replayed in full;
// empty when it can. Deletion by age or size, and compaction (it keeps only
// the newest record per user and drops session events), each give a line.
[[nodiscard]] std::vector<std::string> replay_warnings(const std::map<std::string, std::string>& config);

// The topic's cleanup.policy when it compacts the log (Kafka's default,
// delete, when the key is missing); nullopt else.
[[nodiscard]] std::optional<std::string> compaction(const std::map<std::string, std::string>& config);

// Why acks=all on this topic may leave an acknowledged record on a single
// broker (replication factor or min.insync.replicas below 2), may lose it
// to a replica out of sync made leader (unclean.leader.election.enable), or
// can never succeed (min.insync.replicas above the replication factor);
// empty when none. A single broker has no second copy to give: no warning
// there for the first two, but the last fails on one broker too.
[[nodiscard]] std::vector<std::string> durability_warnings(int brokers, int replication_factor,
                                                           int min_insync_replicas,
                                                           bool unclean_leader_election = false);

// Why the receiver's largest record (`largest_record` bytes) would not fit
// (max.message.bytes below it): such a body gets 413.
[[nodiscard]] std::vector<std::string> size_warnings(const std::map<std::string, std::string>& config,
                                                     std::size_t largest_record);

struct topic_report {
  bool created = false;  // false: it existed already, or was refused (below)
  // Not created: the settings asked for would give a topic with warnings,
  // and the caller asked for a clean one only (the report is the plan's).
  bool refused = false;
  int brokers = 0;
  int partitions = 0;
  int replication_factor = 0;   // of the topic as it now is (the smallest over its partitions)
  int min_insync_replicas = 0;  // idem
  std::vector<std::string> warnings;             // replay_warnings
  std::vector<std::string> size_warnings;        // size_warnings
  std::vector<std::string> durability_warnings;  // durability_warnings
  std::map<std::string, std::string> config;     // the effective (or, when created, requested) topic configs
  // Every warning above, in that order: empty for a clean topic.
  [[nodiscard]] std::vector<std::string> all_warnings() const;
};

// An existing topic's report (created false), without changing anything:
// for `ctl status`. Throws kafka::fatal_error when it does not exist.
[[nodiscard]] topic_report check_topic(const kafka::client_config& cfg, const std::string& name,
                                       std::chrono::milliseconds timeout,
                                       std::size_t largest_record = default_largest_record());

// Creates the topic when missing (only when its report would be clean, if
// `clean_only`), else describes it as it is: an existing topic is never
// altered.
[[nodiscard]] topic_report ensure_topic(const kafka::client_config& cfg, const topic_settings& settings,
                                        std::chrono::milliseconds timeout, bool clean_only = false);

}  // namespace clerk_sync::ops
