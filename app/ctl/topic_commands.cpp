// `topic ensure`: the events topic with replay-safe settings.
#include <algorithm>
#include <memory>

#include "commands.hpp"
#include "config/options.hpp"
#include "http/options.hpp"
#include "log/log.hpp"
#include "ops/topic.hpp"

namespace clerk_sync::ctl {
namespace {

struct topic_args {
  kafka::client_config kafka;
  ops::topic_settings settings;
  http::receiver_options limits;  // --body-limit and --header-limit only
  std::vector<std::string> configs;
  bool strict = false;
  int timeout_ms = 15'000;
  std::vector<std::string> given;  // the creation settings given on the command line
};

int topic_ensure(const topic_args& a) {
  auto settings = a.settings;
  http::validate_record_limits(a.limits);
  settings.largest_record = http::max_message_bytes(a.limits);
  for (const auto& c : a.configs) {
    const auto eq = c.find('=');
    if (eq == std::string::npos || eq == 0) throw config::usage_error("--config: expected key=value, got " + c);
    const auto key = c.substr(0, eq);
    // One of two values would win without a word (a --config over
    // --retention-ms -1 makes a topic a replay cannot read whole).
    for (const auto& [k, v] : settings.configs)
      if (k == key) throw config::usage_error("--config: " + key + " given twice: give it once");
    if (key == "retention.ms" && std::find(a.given.begin(), a.given.end(), "--retention-ms") != a.given.end())
      throw config::usage_error("--config: retention.ms given beside --retention-ms: give one");
    settings.configs.emplace_back(key, c.substr(eq + 1));
  }
  const auto report = ops::ensure_topic(a.kafka, settings, std::chrono::milliseconds(a.timeout_ms), a.strict);
  if (report.refused) {
    log_topic_warnings(settings.name, report);
    log::error("topic not created", {{"topic", settings.name},
                                     {"outcome", "--strict: the settings asked for give a topic with the warnings above"}});
    return exit_failed;
  }
  if (report.created)
    log::info("topic created", {{"topic", settings.name}, {"partitions", settings.partitions},
                                {"replication_factor", report.replication_factor},
                                {"min_insync_replicas", report.min_insync_replicas}, {"brokers", report.brokers}});
  else
    log::info("topic exists", {{"topic", settings.name},
                               {"partitions", report.partitions},
                               {"replayable", report.warnings.empty()},
                               {"replication_factor", report.replication_factor},
                               {"min_insync_replicas", report.min_insync_replicas},
                               {"brokers", report.brokers}});
  // Settings apply when creating only: say so when some asked for differ
  // from the existing topic's.
  if (!report.created) {
    std::string differ;
    const auto note = [&](const std::string& what, const std::string& asked, const std::string& has) {
      if (asked != has) differ += (differ.empty() ? "" : "; ") + what + " " + asked + " (the topic has " + has + ")";
    };
    const auto config_of = [&](const std::string& key) {
      const auto it = report.config.find(key);
      return it == report.config.end() ? std::string("its default") : it->second;
    };
    for (const auto& g : a.given) {
      if (g == "--partitions") note("partitions", std::to_string(settings.partitions), std::to_string(report.partitions));
      if (g == "--replication-factor")
        note("replication factor", std::to_string(settings.replication_factor), std::to_string(report.replication_factor));
      if (g == "--retention-ms") note("retention.ms", settings.retention_ms, config_of("retention.ms"));
      if (g == "--config")
        for (const auto& [k, v] : settings.configs) note(k, v, config_of(k));
    }
    if (!differ.empty())
      log::warn("topic settings not applied",
                {{"topic", settings.name},
                 {"differ", differ},
                 {"outcome", "the topic exists, and these apply when creating only: change it with kafka-configs.sh "
                             "--alter (configs), kafka-topics.sh --alter (partitions) or "
                             "kafka-reassign-partitions.sh (replication factor)"}});
  }
  const bool clean = log_topic_warnings(settings.name, report);
  return a.strict && !clean ? exit_failed : exit_ok;
}

}  // namespace

bool log_topic_warnings(const std::string& topic, const ops::topic_report& report) {
  for (const auto& w : report.warnings) log::warn("topic not replayable", {{"topic", topic}, {"why", w}});
  for (const auto& w : report.durability_warnings) log::warn("topic not durable", {{"topic", topic}, {"why", w}});
  for (const auto& w : report.size_warnings) log::warn("topic too small", {{"topic", topic}, {"why", w}});
  return report.all_warnings().empty();
}

void add_topic_commands(CLI::App& app, runner& run) {
  auto* topic = app.add_subcommand("topic", "Manage the events topic");
  topic->require_subcommand(1);
  auto* ensure = topic->add_subcommand(
      "ensure",
      "Create the events topic (retention.ms=-1, cleanup.policy=delete) or check an existing one; "
      "warns when retention or compaction would make a replay incomplete, when acks=all could "
      "leave an acknowledged event on one broker or unclean election could drop it, or when the "
      "receiver's largest record would not fit");
  auto a = std::make_shared<topic_args>();
  config::add_kafka_options(*ensure, a->kafka);
  ensure->add_option("--topic", a->settings.name, "Events topic")
      ->check(config::topic_name())
      ->envname("CLERK_SYNC_TOPIC")
      ->capture_default_str();
  auto* partitions = ensure->add_option("--partitions", a->settings.partitions, "Partitions when creating")
      ->check(CLI::Range(1, 10'000))
      ->capture_default_str();
  auto* replication = ensure->add_option("--replication-factor", a->settings.replication_factor,
                     "Replication factor when creating (default: 3 with min.insync.replicas=2 on three "
                     "brokers or more, 1 on one; required where the cluster lists two, which may be three with one down)")
      ->check(CLI::Range(1, 100));
  auto* retention = ensure->add_option("--retention-ms", a->settings.retention_ms, "retention.ms when creating (-1: keep forever)")
      ->capture_default_str();
  auto* configs = ensure->add_option("--config", a->configs, "Extra topic config when creating, key=value (repeatable)")
      ->type_name("KEY=VALUE");
  http::add_record_limit_options(*ensure, a->limits);
  ensure->add_flag("--strict", a->strict,
                   "Exit 1 when the topic is not replayable in full or not durable (a missing one is then not "
                   "created)");
  ensure->add_option("--timeout-ms", a->timeout_ms, "Admin request timeout")
      ->check(CLI::Range(100, 600'000))
      ->capture_default_str();
  ensure->callback([a, &run, partitions, replication, retention, configs] {
    for (const auto* o : {partitions, replication, retention, configs})
      if (o->count() > 0) a->given.push_back(o->get_name());
    run = [a] { return topic_ensure(*a); };
  });
}

}  // namespace clerk_sync::ctl
