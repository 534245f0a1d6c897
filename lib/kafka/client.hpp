#pragma once
// Plain configuration shared by every Kafka client of clerk-sync, and the
// vocabulary types of records. No librdkafka type appears here.

#include <cstdint>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace clerk_sync::kafka {

struct client_config {
  std::string brokers = "127.0.0.1:9092";
  // Any librdkafka property (SASL/TLS for a managed cluster), applied last so
  // that an operator can override our defaults.
  std::vector<std::pair<std::string, std::string>> properties;
};

struct header {
  std::string key;
  std::string value;
};

// Next offset to read; these two sentinels match librdkafka's logical offsets.
inline constexpr std::int64_t offset_beginning = -2;
inline constexpr std::int64_t offset_end = -1;

struct topic_partition {
  std::string topic;
  std::int32_t partition = 0;
  std::int64_t offset = offset_beginning;
  friend bool operator==(const topic_partition&, const topic_partition&) = default;
};

// Why the brokers turn a client's connections away for a reason its retries
// will not fix: they refused its login (SASL), or the TLS handshake with
// them failed (a certificate that does not verify). `reason` is
// librdkafka's, naming the broker.
struct refusal {
  enum class kind { authentication, tls };
  kind what = kind::authentication;
  std::string reason;
};

// A bad property or value: reject at start-up (exit 2).
struct config_error : std::runtime_error {
  using std::runtime_error::runtime_error;
};

// Whether a client's destroy was left running, past its bound (the
// kafka_destroy_stuck line): the process must then end without running its
// static destructors and exit handlers under that thread (std::_Exit, as
// config::run_main does).
[[nodiscard]] bool destroy_left_running();

// Anything else the client cannot recover from (fatal producer error, a
// consumer that lost its group for good): exit non-zero so systemd restarts.
struct fatal_error : std::runtime_error {
  using std::runtime_error::runtime_error;
};

// The brokers refused the request to these credentials (an ACL): asking
// again will not help until an operator changes the ACLs.
struct authorization_error : fatal_error {
  using fatal_error::fatal_error;
};

// A consumer's start offset that the partition's log no longer holds (topic
// deleted and recreated, records deleted): continuing would skip or re-read
// events, so it is never reset silently. log_start/log_end are the log's
// range when known (-1 when the query failed).
struct offset_out_of_range : fatal_error {
  offset_out_of_range(std::string topic_, std::int32_t partition_, std::int64_t offset_, std::int64_t log_start_,
                      std::int64_t log_end_)
      : fatal_error("offset " + std::to_string(offset_) + " of " + topic_ + "/" + std::to_string(partition_) +
                    " is outside the log [" + std::to_string(log_start_) + ", " + std::to_string(log_end_) + ")"),
        topic(std::move(topic_)),
        partition(partition_),
        offset(offset_),
        log_start(log_start_),
        log_end(log_end_) {}
  std::string topic;
  std::int32_t partition;
  std::int64_t offset;
  std::int64_t log_start;
  std::int64_t log_end;
};

// A record batch librdkafka could not read (its CRC wrong, its format
// unknown, its records cut) at `offset`: it would read on from the next
// batch, so a consumer stops there rather than apply what follows.
struct unreadable_batch : fatal_error {
  unreadable_batch(std::string topic_, std::int32_t partition_, std::int64_t offset_, const std::string& reason)
      : fatal_error("the record batch at " + topic_ + "/" + std::to_string(partition_) + " offset " +
                    std::to_string(offset_) + " cannot be read, and the records after it are not applied: " + reason),
        topic(std::move(topic_)),
        partition(partition_),
        offset(offset_) {}
  std::string topic;
  std::int32_t partition;
  std::int64_t offset;
};

// Returns the value of the first header named `key`, if any.
[[nodiscard]] std::optional<std::string_view> find_header(const std::vector<header>& headers,
                                                          std::string_view key);

}  // namespace clerk_sync::kafka
