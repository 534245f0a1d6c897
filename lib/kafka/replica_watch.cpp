#include "kafka/replica_watch.hpp"

#include <algorithm>
#include <charconv>
#include <exception>

#include "kafka/admin.hpp"
#include "log/log.hpp"

namespace clerk_sync::kafka {

using namespace std::chrono_literals;

void replica_watch::update(const std::vector<producer::partition_sync>& short_of_sync) {
  if (!short_of_sync.empty()) read_min_insync();
  // Until min.insync.replicas is known, any partition short of replicas
  // may be one whose writes Kafka refuses.
  std::string partitions;  // those whose writes Kafka refuses, or may
  std::string above;       // short of replicas, but not below the minimum read
  int fewest = 0;
  int fewest_above = 0;
  for (const auto& p : short_of_sync) {
    if (min_insync_ && p.in_sync >= *min_insync_) {
      fewest_above = above.empty() ? p.in_sync : std::min(fewest_above, p.in_sync);
      above += (above.empty() ? "" : ",") + std::to_string(p.partition);
      continue;
    }
    fewest = partitions.empty() ? p.in_sync : std::min(fewest, p.in_sync);
    partitions += (partitions.empty() ? "" : ",") + std::to_string(p.partition);
  }
  // Each state its own: "" only when no partition is short of replicas, so
  // that the line saying they are back in sync follows every other; the
  // replicas in sync are part of it, one fewer being one step nearer 503s.
  const char* kind = min_insync_ ? "below:" : denied_ ? "denied:" : "unknown:";
  const auto state = !partitions.empty() ? kind + partitions
                     : !above.empty()    ? "above:" + above + "/" + std::to_string(fewest_above)
                                         : std::string();
  if (state == logged_) return;
  if (!partitions.empty() && min_insync_) {
    log::error("not_enough_replicas",
               {{"topic", topic_}, {"partitions", partitions}, {"in_sync", fewest},
                {"min_insync_replicas", *min_insync_},
                {"outcome", "Kafka refuses acks=all writes to these partitions until enough replicas are in "
                            "sync: their webhooks are answered 503"}});
  } else if (!partitions.empty()) {
    const std::string outcome =
        std::string("these partitions are short of replicas, and whether Kafka refuses their writes (their webhooks "
                    "then get 503) depends on the topic's min.insync.replicas, ") +
        (denied_ ? "which these credentials may not read: allow them DescribeConfigs on the topic"
                 : "which could not be read: asked again in 5 s");
    log::warn("min_insync_unknown", {{"topic", topic_},
                                     {"partitions", partitions},
                                     {"in_sync", fewest},
                                     {"reason", unreadable_},
                                     {"outcome", outcome}});
  } else if (!above.empty()) {
    // Short of replicas, but none below the minimum read: taken, for now.
    // A warning: a broker down for days said nothing to journalctl -p
    // warning, and one more loss refuses every write of these partitions.
    log::warn("min_insync_read", {{"topic", topic_},
                                  {"partitions", above},
                                  {"in_sync", fewest_above},
                                  {"min_insync_replicas", *min_insync_},
                                  {"outcome", "short of replicas (a broker down or behind): Kafka takes their writes "
                                              "while min_insync_replicas are in sync, and refuses them, their "
                                              "webhooks answered 503, with fewer"}});
  } else {
    log::info("replicas_in_sync", {{"topic", topic_}});
  }
  logged_ = state;
}

void replica_watch::read_min_insync() {
  const auto now = std::chrono::steady_clock::now();
  // A value read, or a refusal (until the ACLs change), stands for a
  // minute; any other failure is asked again in 5 s.
  if (read_at_ && now - *read_at_ < (min_insync_ || denied_ ? 60s : 5s)) return;
  read_at_ = now;
  denied_ = false;
  try {
    const auto config = describe_topic(cfg_, topic_, 2s);
    if (!config) {
      unreadable_ = "topic " + topic_ + " not found when describing its configuration";
      return;
    }
    const auto it = config->find("min.insync.replicas");
    int value = 0;
    if (it == config->end() ||
        std::from_chars(it->second.data(), it->second.data() + it->second.size(), value).ec != std::errc()) {
      unreadable_ = "topic " + topic_ + " has no readable min.insync.replicas";
      return;
    }
    min_insync_ = value;
    unreadable_.clear();
  } catch (const authorization_error& e) {
    unreadable_ = e.what();
    denied_ = true;
  } catch (const std::exception& e) {
    // A value read before stands until one is read again.
    unreadable_ = e.what();
  }
}

}  // namespace clerk_sync::kafka
