#include "ops/topic.hpp"

#include <algorithm>
#include <cctype>
#include <charconv>
#include <thread>

#include "http/options.hpp"
#include "kafka/admin.hpp"

namespace clerk_sync::ops {
namespace {

constexpr auto min_isr_key = "min.insync.replicas";

std::string value_of(const std::map<std::string, std::string>& config, const std::string& key) {
  const auto it = config.find(key);
  return it == config.end() ? std::string() : it->second;
}

std::string lowercase(std::string s) {
  for (auto& c : s) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return s;
}

// Kafka's default (1) when missing or unreadable.
int min_isr_of(const std::map<std::string, std::string>& config) {
  const auto text = value_of(config, min_isr_key);
  int v = 1;
  const auto [ptr, ec] = std::from_chars(text.data(), text.data() + text.size(), v);
  return ec == std::errc() && ptr == text.data() + text.size() ? v : 1;
}

// A topic created a moment ago is not yet known to every broker, and any of
// them may answer: ask again, every 500 ms within the timeout, until an
// answer knows it.
template <class Ask, class Knows>
auto ask_until_known(Ask ask, Knows knows, std::chrono::milliseconds timeout) {
  auto answer = ask();
  for (const auto until = std::chrono::steady_clock::now() + timeout;
       !knows(answer) && std::chrono::steady_clock::now() < until;) {
    std::this_thread::sleep_for(std::chrono::milliseconds(500));
    answer = ask();
  }
  return answer;
}

}  // namespace

std::size_t default_largest_record() { return http::max_message_bytes(http::receiver_options{}); }

topic_settings with_defaults(topic_settings settings, int brokers) {
  std::size_t room = 0;
  (void)std::from_chars(settings.max_message_bytes.data(),
                        settings.max_message_bytes.data() + settings.max_message_bytes.size(), room);
  if (room < settings.largest_record) settings.max_message_bytes = std::to_string(settings.largest_record);
  // A cluster lists only its live brokers: two are most often three with
  // one down, and one copy would be for good. Asked for, not guessed.
  if (settings.replication_factor <= 0 && brokers == 2)
    throw kafka::fatal_error("topic " + settings.name +
                             " not created: the cluster lists 2 brokers (a third may be down); give "
                             "--replication-factor (3 once all three are back, 2 for a cluster of two)");
  if (settings.replication_factor <= 0) settings.replication_factor = brokers >= 3 ? 3 : 1;
  const bool has_min_isr = std::any_of(settings.configs.begin(), settings.configs.end(),
                                       [](const auto& kv) { return kv.first == min_isr_key; });
  if (settings.replication_factor >= 3 && !has_min_isr) settings.configs.emplace_back(min_isr_key, "2");
  if (settings.replication_factor == 1 && !has_min_isr) settings.configs.emplace_back(min_isr_key, "1");
  return settings;
}

std::optional<std::string> compaction(const std::map<std::string, std::string>& config) {
  const auto policy = config.contains("cleanup.policy") ? value_of(config, "cleanup.policy") : "delete";
  if (policy.find("compact") == std::string::npos) return std::nullopt;
  return policy;
}

std::vector<std::string> replay_warnings(const std::map<std::string, std::string>& config) {
  std::vector<std::string> out;
  // Kafka's defaults (7 days, delete) apply when a key is missing.
  const auto retention = config.contains("retention.ms") ? value_of(config, "retention.ms") : "604800000";
  if (retention != "-1")
    out.push_back("retention.ms=" + retention + ": older events are deleted, a replay would miss them (want -1)");
  const auto bytes = value_of(config, "retention.bytes");
  if (!bytes.empty() && bytes != "-1")
    out.push_back("retention.bytes=" + bytes + ": events beyond that size are deleted, a replay would miss them");
  if (const auto policy = compaction(config))
    out.push_back("cleanup.policy=" + *policy +
                  ": compaction keeps only the newest event per user and drops session events (want delete)");
  return out;
}

std::vector<std::string> size_warnings(const std::map<std::string, std::string>& config,
                                       std::size_t largest_record) {
  // Kafka's default when the key is missing.
  const auto text = config.contains("max.message.bytes") ? value_of(config, "max.message.bytes") : "1048588";
  std::int64_t have = 0;
  (void)std::from_chars(text.data(), text.data() + text.size(), have);
  const auto want = static_cast<std::int64_t>(largest_record);
  if (have >= want) return {};
  return {"max.message.bytes=" + text + ": a webhook body near the receiver's body limit would be refused (413); "
          "want " + std::to_string(want) + " or more (the limit with key and headers)"};
}

std::vector<std::string> durability_warnings(int brokers, int replication_factor, int min_insync_replicas,
                                             bool unclean_leader_election) {
  std::vector<std::string> out;
  // A replica out of sync made leader truncates the others to its own log:
  // events acknowledged to Svix, which will not send them again, are gone.
  if (unclean_leader_election && replication_factor >= 2)
    out.push_back("unclean.leader.election.enable=true: a replica out of sync may become leader and drop events "
                  "already acknowledged (want false)");
  const auto rf = std::to_string(replication_factor);
  const auto isr = std::to_string(min_insync_replicas);
  // A single broker has no second copy to give; a write that can never be
  // acknowledged (below) fails there as anywhere.
  if (brokers >= 2) {
    if (replication_factor < 2)
      out.push_back("replication factor " + rf + " on " + std::to_string(brokers) +
                    " brokers: every event has one copy, losing its broker loses acknowledged events (want 3)");
    else if (min_insync_replicas < 2)
      out.push_back("min.insync.replicas=" + isr + " with replication factor " + rf +
                    ": acks=all is satisfied by the leader alone once the others fall behind, and a leader "
                    "lost then loses acknowledged events (want 2)");
  }
  // Kafka 3.7 and later cap it at the replica count (KAFKA-15583): writes
  // pass, but only while every replica is in sync.
  if (min_insync_replicas > replication_factor)
    out.push_back("min.insync.replicas=" + isr + " above replication factor " + rf +
                  ": a broker before Kafka 3.7 refuses every acks=all write (NOT_ENOUGH_REPLICAS); from 3.7 it "
                  "reads " + rf + ", so every write waits for all copies and one replica out of sync refuses "
                  "them all (want at most " + rf + ")");
  return out;
}

namespace {

// The report on a topic from its effective configuration and layout.
topic_report report_of(const std::map<std::string, std::string>& config, int brokers, int partitions,
                       int replication_factor, std::size_t largest_record) {
  topic_report report;
  report.config = config;
  report.brokers = brokers;
  report.partitions = partitions;
  report.replication_factor = replication_factor;
  report.min_insync_replicas = min_isr_of(config);
  report.warnings = replay_warnings(config);
  report.size_warnings = size_warnings(config, largest_record);
  report.durability_warnings = durability_warnings(brokers, replication_factor, report.min_insync_replicas,
                                                   lowercase(value_of(config, "unclean.leader.election.enable")) ==
                                                       "true");
  return report;
}

// An existing topic's report. `before` is a layout already asked for (empty
// partitions: asked again until a broker lists them).
topic_report describe_existing(const kafka::client_config& cfg, const std::string& name, int brokers,
                               const kafka::cluster_layout& before, std::chrono::milliseconds timeout,
                               std::size_t largest_record) {
  const auto config = ask_until_known([&] { return kafka::describe_topic(cfg, name, timeout); },
                                      [](const auto& c) { return c.has_value(); }, timeout);
  if (!config) throw kafka::fatal_error("topic " + name + " exists but cannot be described");
  // Created by someone else a moment ago, or listed by none of the brokers
  // asked first: without its layout there is no durability to judge.
  const auto layout = before.partitions.empty()
                          ? ask_until_known([&] { return kafka::describe_cluster(cfg, name, timeout); },
                                            [](const auto& l) { return !l.partitions.empty(); }, timeout)
                          : before;
  if (layout.partitions.empty()) throw kafka::fatal_error("topic " + name + " exists but no broker lists its partitions");
  int rf = 0;
  for (const auto& p : layout.partitions)
    rf = rf == 0 ? static_cast<int>(p.replicas.size()) : std::min(rf, static_cast<int>(p.replicas.size()));
  return report_of(*config, brokers, static_cast<int>(layout.partitions.size()), rf, largest_record);
}

}  // namespace

std::vector<std::string> topic_report::all_warnings() const {
  std::vector<std::string> out = warnings;
  out.insert(out.end(), size_warnings.begin(), size_warnings.end());
  out.insert(out.end(), durability_warnings.begin(), durability_warnings.end());
  return out;
}

topic_report check_topic(const kafka::client_config& cfg, const std::string& name, std::chrono::milliseconds timeout,
                         std::size_t largest_record) {
  const auto layout = kafka::describe_cluster(cfg, name, timeout);
  if (layout.partitions.empty()) throw kafka::fatal_error("topic " + name + " does not exist or has no partitions (or these credentials may not describe it)");
  return describe_existing(cfg, name, layout.known_brokers, layout, timeout, largest_record);
}

topic_report ensure_topic(const kafka::client_config& cfg, const topic_settings& requested,
                          std::chrono::milliseconds timeout, bool clean_only) {
  const auto before = kafka::describe_cluster(cfg, requested.name, timeout);
  // Those down included: the plan and the judgement are for the cluster,
  // not for what of it answers now.
  const int brokers = before.known_brokers;
  if (before.partitions.empty()) {
    const auto settings = with_defaults(requested, brokers);
    const auto live = static_cast<int>(before.brokers.size());
    if (requested.replication_factor <= 0 && settings.replication_factor > live)
      throw kafka::fatal_error("topic " + requested.name + " not created: the plan for the cluster's " +
                               std::to_string(brokers) + " brokers is " + std::to_string(settings.replication_factor) +
                               " copies, and " + std::to_string(live) + " are listed (the others down, or removed "
                               "while partitions still name them); give --replication-factor, or run it again "
                               "once they are back");
    // Extra configs override our defaults, as an operator would expect. Each
    // setting the report judges is given, so that a broker's own default
    // (log.retention.bytes, say) cannot make the topic differ from the plan.
    std::map<std::string, std::string> configs = {{"retention.ms", settings.retention_ms},
                                                  {"retention.bytes", "-1"},
                                                  {"cleanup.policy", "delete"},
                                                  {"max.message.bytes", settings.max_message_bytes},
                                                  {"unclean.leader.election.enable", "false"}};
    for (const auto& [k, v] : settings.configs) configs[k] = v;
    auto plan = report_of(configs, brokers, settings.partitions, settings.replication_factor, settings.largest_record);
    if (clean_only && !plan.all_warnings().empty()) {
      plan.refused = true;
      return plan;
    }
    kafka::topic_spec spec{settings.name, settings.partitions, settings.replication_factor,
                           {configs.begin(), configs.end()}};
    // Created here or a moment ago by someone else: the report is the
    // topic's own configuration either way, broker defaults included (a
    // replication factor of 2 leaves min.insync.replicas to them).
    const bool created = kafka::create_topic(cfg, spec, timeout) == kafka::create_outcome::created;
    try {
      auto report = describe_existing(cfg, settings.name, brokers, {}, timeout, settings.largest_record);
      report.created = created;
      return report;
    } catch (const kafka::fatal_error& e) {
      if (!created) throw;
      throw kafka::fatal_error("topic " + settings.name + " was created, but its settings could not be read back (" +
                               e.what() + "): run topic ensure again to check them");
    }
  }
  return describe_existing(cfg, requested.name, brokers, before, timeout, requested.largest_record);
}

}  // namespace clerk_sync::ops
