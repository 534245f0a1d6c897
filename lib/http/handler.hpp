#pragma once
// The receiver's request classification, with no socket: a request (method,
// target, headers, raw body) plus the secrets, clock and readiness in; a
// decision out: answer now, or publish this record and answer from its
// delivery report. Pure and thread-safe; the status codes follow the
// design's table.

#include <chrono>
#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "kafka/client.hpp"
#include "verify/svix.hpp"

namespace clerk_sync::http {

struct handler_config {
  std::string path = "/webhooks/clerk";
  std::vector<verify::key> keys;
  std::chrono::seconds tolerance = verify::default_tolerance;
};

// What /readyz reports: Kafka answers and the events topic exists; or why
// not (authentication_failed: the brokers refused the credentials;
// tls_failed: the TLS handshake with them failed; topic_unauthorized: the
// credentials may not describe the topic; publish_failing: the cluster
// answers, but publishes fail one after another, publish_health.hpp).
enum class readiness {
  kafka_unreachable,
  topic_missing,
  authentication_failed,
  tls_failed,
  topic_unauthorized,
  publish_failing,
  ready
};

// The name /readyz and the receiver's lines give a readiness.
[[nodiscard]] const char* name(readiness r);

struct request_view {
  std::string_view method;
  std::string_view target;
  std::string_view body;
  // Case-insensitive header lookup; nullopt when absent.
  std::function<std::optional<std::string_view>(std::string_view)> header;
};

struct response {
  int status = 200;
  std::string body;                        // small JSON
  std::optional<int> retry_after_s;        // 503 only
  std::string_view allow;                  // 405 only
};

// What to publish: the raw body is the value; these are the key and headers.
struct publish_request {
  std::string key;  // the Clerk user id
  std::string type;
  std::string svix_id;
  std::string svix_timestamp;
};

// The answer to a verified event of a type no consumer reads (neither user.*
// nor session.*): 200, so that Clerk does not retry it, and nothing
// published. `clerk-sync-ctl send` tells it apart from a delivery by it.
inline constexpr std::string_view ignored_body = R"({"status":"ignored"})";

struct decision {
  // A word of the log vocabulary: published (after the report), ignored,
  // rejected, not_found, method_not_allowed, probe.
  std::string_view msg;
  // Why, for the log: "bad_signature", "not_json", "timestamp_too_old", ...
  std::string_view outcome;
  response answer;                         // when !publish
  std::optional<publish_request> publish;  // set: publish first, then answer
  // For the log line, when known.
  std::string svix_id;
  std::string type;
  std::string user;
  // The signature checked out: a delivery from Clerk, which gets its own
  // log line whatever its answer (unverified requests share rate-limited ones).
  bool verified = false;
};

// The part of classify() that the header alone decides, before a body is
// read: probes, 404 and 405, then the signature headers
// (verify::check_headers: present, a timestamp within tolerance, a `v1,`
// entry of a signature's length). `req.body` is not looked at. `decided`
// is empty when only the body can decide (a POST to the webhook path whose
// headers could sign it); `headers` are the signature headers it picked,
// for classify_body().
struct header_check {
  std::optional<decision> decided;
  bool by_signature = false;       // decided by the signature headers, not by the route
  verify::signed_headers headers;  // views into the request's fields
};
[[nodiscard]] header_check classify_header(const request_view& req, const handler_config& cfg,
                                           std::chrono::system_clock::time_point now, readiness kafka);

// The rest, once classify_header() decided nothing: the signature over the
// body (verify::verify_signature; the timestamp was judged with the header,
// up to the read timeout before), then its envelope. The headers are
// looked up once per request (Beast's lookups cost about 700 instructions
// each).
[[nodiscard]] decision classify_body(const request_view& req, const verify::signed_headers& headers,
                                     const handler_config& cfg);

// classify_header(), then classify_body() when it decided nothing.
[[nodiscard]] decision classify(const request_view& req, const handler_config& cfg,
                                std::chrono::system_clock::time_point now, readiness kafka);

// Answers once the publish step is over.
[[nodiscard]] response published(std::int32_t partition, std::int64_t offset);
[[nodiscard]] response unavailable(std::string_view why, int retry_after_s = 5);

// The Kafka record headers the design names, received_at in ms since epoch.
[[nodiscard]] std::vector<kafka::header> record_headers(const publish_request& p, std::int64_t received_at_ms);

// 413 / 431 answers, for limits the parser enforces before classify().
[[nodiscard]] response too_large();
[[nodiscard]] response headers_too_large();
// 413 for a record Kafka refuses as too large (retrying cannot help).
[[nodiscard]] response too_large_for_kafka();
// 503 when the bodies in flight use the whole memory budget.
[[nodiscard]] response over_memory_budget();
// 400 for a request the HTTP parser cannot read.
[[nodiscard]] response bad_request();
// 400 for svix-id, svix-timestamp or svix-signature given twice.
[[nodiscard]] response repeated_signature_header();

}  // namespace clerk_sync::http
