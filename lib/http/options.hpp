#pragma once
// clerk-sync-receiver's configuration: flags, each with an environment
// variable behind it, parsed once into a plain struct. Secrets come only
// from CLERK_WEBHOOK_SECRET or the file named by CLERK_WEBHOOK_SECRET_FILE
// (--secret-file), never from a flag value. Errors are config::usage_error
// (one line, exit 2) and never contain a secret.

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "config/options.hpp"
#include "kafka/client.hpp"
#include "verify/svix.hpp"

namespace clerk_sync::http {

struct receiver_options {
  std::string listen = "127.0.0.1:8080";           // --listen, CLERK_SYNC_LISTEN
  std::string path = "/webhooks/clerk";             // --path, CLERK_SYNC_PATH
  std::string topic = "clerk.events";               // --topic, CLERK_SYNC_TOPIC
  std::string secret_file;                          // --secret-file, CLERK_WEBHOOK_SECRET_FILE
  std::int64_t tolerance_s = 300;                   // --tolerance (seconds), CLERK_SYNC_TOLERANCE
  std::size_t body_limit = 1024 * 1024;             // --body-limit (bytes), CLERK_SYNC_BODY_LIMIT
  std::size_t header_limit = 16 * 1024;             // --header-limit (bytes), CLERK_SYNC_HEADER_LIMIT
  std::int64_t publish_deadline_ms = 10'000;        // --publish-deadline-ms, CLERK_SYNC_PUBLISH_DEADLINE_MS
  std::int64_t read_timeout_ms = 10'000;            // --read-timeout-ms, CLERK_SYNC_READ_TIMEOUT_MS
  std::int64_t idle_timeout_ms = 60'000;            // --idle-timeout-ms, CLERK_SYNC_IDLE_TIMEOUT_MS
  std::int64_t shutdown_grace_ms = 15'000;          // --shutdown-grace-ms, CLERK_SYNC_SHUTDOWN_GRACE_MS
  std::int64_t unready_deadline_s = 60;             // --unready-deadline-s, CLERK_SYNC_UNREADY_DEADLINE_S
  std::size_t max_connections = 4096;               // --max-connections, CLERK_SYNC_MAX_CONNECTIONS
  std::size_t body_memory_budget = 64 * 1024 * 1024;  // --body-memory-budget (bytes), CLERK_SYNC_BODY_MEMORY_BUDGET
  kafka::client_config kafka;                       // --brokers/KAFKA_BROKERS, --kafka-property, ...
  config::log_options log;                          // --log-format, --log-level
};

// Registers every flag above on `app`.
void add_receiver_options(CLI::App& app, receiver_options& opts);

// --body-limit and --header-limit alone, with their environment variables,
// and their checks (part of validate(); throws usage_error): ctl's topic
// ensure and status read them too, to judge the topic by the largest record
// (max_message_bytes) the receiver, run with the same environment, sends.
void add_record_limit_options(CLI::App& app, receiver_options& opts);
void validate_record_limits(const receiver_options& opts);

using config::listen_address;
using config::parse_listen;

// File descriptors kept back from connections: Kafka's sockets (a few per
// broker), the readiness probe, the logs, the event loop.
inline constexpr std::size_t fd_reserve = 256;

// The connection cap that leaves `fd_reserve` of `nofile` descriptors free:
// min(requested, nofile - fd_reserve), 0 when nothing is left.
[[nodiscard]] std::size_t connection_cap(std::size_t requested, std::uint64_t nofile);

// The producer's settings, derived so that they agree with the HTTP side:
// Kafka's verdict must come at least `decision_margin` before the publish
// deadline (librdkafka scans message timeouts once a second), and a body at
// the limit, with its key and headers, must fit in one record.
inline constexpr std::chrono::milliseconds decision_margin{1500};
[[nodiscard]] std::chrono::milliseconds message_timeout(const receiver_options& opts);
[[nodiscard]] std::size_t max_message_bytes(const receiver_options& opts);

// Range checks after parsing (positive durations, deadline below Svix's
// 15 s and long enough for the decision margin, no Kafka property that the
// options above derive, ...); throws usage_error.
void validate(const receiver_options& opts);

}  // namespace clerk_sync::http
