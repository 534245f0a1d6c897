#include "ops/topic.hpp"

#include "kafka/admin.hpp"

namespace clerk_sync::ops {
namespace {

std::string value_of(const std::map<std::string, std::string>& config, const std::string& key) {
  const auto it = config.find(key);
  return it == config.end() ? std::string() : it->second;
}

}  // namespace

std::vector<std::string> replay_warnings(const std::map<std::string, std::string>& config) {
  std::vector<std::string> out;
  // Kafka's defaults (7 days, delete) apply when a key is missing.
  const auto retention = config.contains("retention.ms") ? value_of(config, "retention.ms") : "604800000";
  if (retention != "-1")
    out.push_back("retention.ms=" + retention + ": older events are deleted, a replay would miss them (want -1)");
  const auto bytes = value_of(config, "retention.bytes");
  if (!bytes.empty() && bytes != "-1")
    out.push_back("retention.bytes=" + bytes + ": events beyond that size are deleted, a replay would miss them");
  const auto policy = config.contains("cleanup.policy") ? value_of(config, "cleanup.policy") : "delete";
  if (policy.find("compact") != std::string::npos)
    out.push_back("cleanup.policy=" + policy +
                  ": compaction keeps only the newest event per user and drops session events (want delete)");
  return out;
}

topic_report ensure_topic(const kafka::client_config& cfg, const topic_settings& settings,
                          std::chrono::milliseconds timeout) {
  // Extra configs override our defaults, as an operator would expect.
  std::map<std::string, std::string> configs = {{"retention.ms", settings.retention_ms}, {"cleanup.policy", "delete"}};
  for (const auto& [k, v] : settings.configs) configs[k] = v;
  kafka::topic_spec spec{settings.name, settings.partitions, settings.replication_factor,
                         {configs.begin(), configs.end()}};
  topic_report report;
  report.created = kafka::create_topic(cfg, spec, timeout) == kafka::create_outcome::created;
  if (report.created) {
    report.warnings = replay_warnings(configs);
  } else {
    const auto config = kafka::describe_topic(cfg, settings.name, timeout);
    if (!config) throw kafka::fatal_error("topic " + settings.name + " exists but cannot be described");
    report.warnings = replay_warnings(*config);
  }
  return report;
}

}  // namespace clerk_sync::ops
