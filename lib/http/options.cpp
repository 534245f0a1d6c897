#include "http/options.hpp"

#include <algorithm>

#include "kafka/producer.hpp"

namespace clerk_sync::http {

void add_receiver_options(CLI::App& app, receiver_options& o) {
  app.add_option("--listen", o.listen, "Address to listen on, host:port ([::1]:port for IPv6)")
      ->envname("CLERK_SYNC_LISTEN")
      ->capture_default_str();
  app.add_option("--path", o.path, "Path of the webhook endpoint")->envname("CLERK_SYNC_PATH")->capture_default_str();
  app.add_option("--topic", o.topic, "Kafka topic for the events")
      ->check(config::topic_name())
      ->envname("CLERK_SYNC_TOPIC")
      ->capture_default_str();
  app.add_option("--secret-file", o.secret_file,
                 "File of webhook secrets, one whsec_... per line (else CLERK_WEBHOOK_SECRET, spaces or commas)")
      ->envname("CLERK_WEBHOOK_SECRET_FILE");
  app.add_option("--tolerance", o.tolerance_s, "Accepted svix-timestamp skew, seconds, either direction")
      ->envname("CLERK_SYNC_TOLERANCE")
      ->capture_default_str();
  add_record_limit_options(app, o);
  app.add_option("--publish-deadline-ms", o.publish_deadline_ms,
                 "Longest wait for Kafka's acknowledgement before answering 503 (below Svix's 15 s)")
      ->envname("CLERK_SYNC_PUBLISH_DEADLINE_MS")
      ->capture_default_str();
  app.add_option("--read-timeout-ms", o.read_timeout_ms, "Longest time to read one request or write one answer")
      ->envname("CLERK_SYNC_READ_TIMEOUT_MS")
      ->capture_default_str();
  app.add_option("--idle-timeout-ms", o.idle_timeout_ms, "Idle keep-alive connections are closed after this")
      ->envname("CLERK_SYNC_IDLE_TIMEOUT_MS")
      ->capture_default_str();
  app.add_option("--shutdown-grace-ms", o.shutdown_grace_ms, "On SIGTERM, longest wait for in-flight requests")
      ->envname("CLERK_SYNC_SHUTDOWN_GRACE_MS")
      ->capture_default_str();
  app.add_option("--unready-deadline-s", o.unready_deadline_s,
                 "Seconds without Kafka or the topic (every webhook 503) before an error line (not_ready)")
      ->envname("CLERK_SYNC_UNREADY_DEADLINE_S")
      ->check(CLI::Range(1, 86'400))
      ->capture_default_str();
  app.add_option("--max-connections", o.max_connections, "Open connections above this are refused")
      ->envname("CLERK_SYNC_MAX_CONNECTIONS")
      ->capture_default_str();
  app.add_option("--body-memory-budget", o.body_memory_budget,
                 "Bytes of request bodies buffered across all connections (503 with Retry-After above)")
      ->envname("CLERK_SYNC_BODY_MEMORY_BUDGET")
      ->capture_default_str();
  config::add_kafka_options(app, o.kafka);
  config::add_log_options(app, o.log);
}

void add_record_limit_options(CLI::App& app, receiver_options& o) {
  app.add_option("--body-limit", o.body_limit, "Largest accepted body, bytes (413 above)")
      ->envname("CLERK_SYNC_BODY_LIMIT")
      ->capture_default_str();
  app.add_option("--header-limit", o.header_limit, "Largest accepted request header block, bytes (431 above)")
      ->envname("CLERK_SYNC_HEADER_LIMIT")
      ->capture_default_str();
}

void validate_record_limits(const receiver_options& o) {
  if (o.body_limit == 0) throw config::usage_error("--body-limit must be positive");
  if (o.header_limit < 1024) throw config::usage_error("--header-limit must be at least 1024");
  // Beast throws on a field value of 65,534 bytes or more, from inside a
  // read: a header block within 64 KiB cannot hold one.
  if (o.header_limit > 65536) throw config::usage_error("--header-limit must be at most 65536");
}

std::size_t connection_cap(std::size_t requested, std::uint64_t nofile) {
  if (nofile <= fd_reserve) return 0;
  return static_cast<std::size_t>(std::min<std::uint64_t>(requested, nofile - fd_reserve));
}

std::chrono::milliseconds message_timeout(const receiver_options& o) {
  return std::chrono::milliseconds(o.publish_deadline_ms) - decision_margin;
}

std::size_t max_message_bytes(const receiver_options& o) {
  // The key (a user id) and the record headers (svix-id, svix-timestamp,
  // the event type, received-at) come from the header block and the body.
  return o.body_limit + o.header_limit + 4096;
}

void validate(const receiver_options& o) {
  // /healthz and /readyz answer first: such a --path answered every delivery 405.
  config::check_route_path(o.path, {"/healthz", "/readyz"});
  if (o.topic.empty()) throw config::usage_error("--topic must not be empty");
  if (o.tolerance_s <= 0) throw config::usage_error("--tolerance must be positive");
  // The window in which a captured delivery can be sent again and verify:
  // a typo of a few zeros would turn that defence off without a word.
  if (o.tolerance_s > 3600)
    throw config::usage_error("--tolerance must be at most 3600 s: a captured delivery verifies for that long (Svix's "
                              "libraries allow 300)");
  validate_record_limits(o);
  if (o.publish_deadline_ms < 2500 || o.publish_deadline_ms > 14'000)
    throw config::usage_error(
        "--publish-deadline-ms must be 2500..14000 (Svix gives up after 15 s; Kafka's verdict needs 1.5 s before it)");
  // Large and chunked bodies share half of it (lib/http/server.hpp, small_body()).
  if (o.body_memory_budget / 2 < o.body_limit)
    throw config::usage_error("--body-memory-budget must be at least twice --body-limit");
  for (const auto& [key, value] : o.kafka.properties)
    if (key == "message.timeout.ms" || key == "delivery.timeout.ms" || key == "message.max.bytes")
      throw config::usage_error("kafka property '" + key +
                                "' is derived from --publish-deadline-ms and --body-limit; set those instead");
  // What the producer fixes, under any alias (delivery.timeout.ms): before
  // any line, so that the refusal is start-up's one line and exit 2.
  kafka::producer_options fixed;
  fixed.message_timeout = message_timeout(o);
  fixed.max_message_bytes = max_message_bytes(o);
  kafka::producer::check_properties(o.kafka, fixed);
  if (o.read_timeout_ms <= 0 || o.idle_timeout_ms <= 0 || o.shutdown_grace_ms <= 0)
    throw config::usage_error("timeouts must be positive");
  if (o.max_connections == 0) throw config::usage_error("--max-connections must be positive");
  (void)parse_listen(o.listen);
}

}  // namespace clerk_sync::http
