#pragma once
// Internal to lib/kafka: RAII owners of librdkafka handles and the shared
// configuration step. Not for use outside this folder.

#include <librdkafka/rdkafka.h>

#include <chrono>
#include <initializer_list>
#include <memory>
#include <optional>
#include <span>
#include <utility>
#include <string>
#include <string_view>

#include "kafka/client.hpp"

namespace clerk_sync::kafka::detail {

struct conf_deleter {
  void operator()(rd_kafka_conf_t* c) const { rd_kafka_conf_destroy(c); }
};
// Destroys the handle, then forgets what was noted about it (see
// refusal_of).
struct handle_deleter {
  void operator()(rd_kafka_t* rk) const;
};
struct topic_partition_list_deleter {
  void operator()(rd_kafka_topic_partition_list_t* l) const { rd_kafka_topic_partition_list_destroy(l); }
};
struct message_deleter {
  void operator()(rd_kafka_message_t* m) const { rd_kafka_message_destroy(m); }
};

using conf_ptr = std::unique_ptr<rd_kafka_conf_t, conf_deleter>;
using handle_ptr = std::unique_ptr<rd_kafka_t, handle_deleter>;
using tp_list_ptr = std::unique_ptr<rd_kafka_topic_partition_list_t, topic_partition_list_deleter>;
using message_ptr = std::unique_ptr<rd_kafka_message_t, message_deleter>;

// Sets one property; throws config_error naming the key (never the value,
// which may be a password).
void set(rd_kafka_conf_t* conf, std::string_view key, std::string_view value);

// A property's value as librdkafka spells it back (acks=all reads -1). A key
// it cannot read is a config_error: a check that read nothing would pass.
[[nodiscard]] std::string get(rd_kafka_conf_t* conf, const std::string& key);

using property_list = std::initializer_list<std::pair<std::string_view, std::string_view>>;
using fixed_list = std::span<const std::pair<std::string_view, std::string_view>>;

// Throws config_error for an operator's property that would change one of
// `fixed` or every_client_fixed() (under its own name or an alias, e.g.
// request.required.acks for acks; the same value however spelled, acks=-1
// for all, passes): the fixed value would win anyway, and the operator would
// not know. make_conf makes the same check; this one is for a start-up that
// validates its settings before it does anything else.
void refuse_overrides(const client_config& cfg, fixed_list fixed);

// What every client of the project fixes (allow.auto.create.topics=false).
[[nodiscard]] fixed_list every_client_fixed();

// A new configuration: bootstrap servers, then `defaults`, then `fixed`
// (what correctness depends on, such as idempotence) and what every client
// of the project fixes: allow.auto.create.topics=false (a topic created by a
// probe or a produce gets broker defaults, and replay silently loses
// events), then the operator's properties, each refused if it would change
// a fixed one (refuse_overrides). librdkafka's log lines and errors go
// through the project's logger (see log_error), rate-limited.
[[nodiscard]] conf_ptr make_conf(const client_config& cfg, property_list defaults, fixed_list fixed);
[[nodiscard]] conf_ptr make_conf(const client_config& cfg, property_list defaults, property_list fixed);

// Logs a librdkafka error (error callback, or an error event from poll) as
// one `kafka_error` line, rate-limited per kind of error: the first, then
// one a minute with the count held back. A client that installs its own
// error callback calls this from it. An error event of a topic (`about`)
// names it, and one of a partition (a batch that cannot be decompressed,
// say, which stops that partition alone) also its partition and offset,
// each rate-limited apart. Thread-safe.
void log_error(const rd_kafka_t* rk, int err, const char* reason, const rd_kafka_message_t* about = nullptr);

// What a broker failure's text (librdkafka's FAIL log line, or the reason
// of an error event) says its retries will not fix: a refused login, or a
// TLS handshake that failed in OpenSSL's checks (a certificate that does
// not verify, an alert from the broker, no TLS spoken back) or in
// librdkafka's own check of the certificate. An ordinary disconnect during
// a handshake (an end of file, a reset, a socket error) is none: nullopt.
// Pure; it knows librdkafka 2.0.2's wording.
[[nodiscard]] std::optional<refusal::kind> refusal_in(std::string_view text);

// The latest refusal librdkafka reported for this client (see refusal_in),
// until a metadata request of its succeeds or it gets an assignment.
// Without it, a client whose login is refused or whose TLS handshake fails
// sees only requests timing out ("Broker transport failure", "Message timed
// out"). Thread-safe.
[[nodiscard]] std::optional<refusal> refusal_of(const rd_kafka_t* rk);

// Forgets the noted refusal: a request of the client succeeded.
void connection_accepted(const rd_kafka_t* rk);

// rd_kafka_metadata, ended early when no broker is usable because the
// client was refused (then RD_KAFKA_RESP_ERR__AUTHENTICATION for a login,
// RD_KAFKA_RESP_ERR__SSL for a TLS handshake): an operator waits seconds,
// not the whole timeout, for a verdict the retries will not change. A
// success clears the noted refusal.
[[nodiscard]] rd_kafka_resp_err_t metadata(rd_kafka_t* rk, bool all_topics, rd_kafka_topic_t* only,
                                           const rd_kafka_metadata_t** md, std::chrono::milliseconds timeout);

// What to say of a request that failed with `err`: the refusal when one is
// noted, else librdkafka's words for `err`.
[[nodiscard]] std::string failure_text(const rd_kafka_t* rk, rd_kafka_resp_err_t err);

// Creates the handle; throws with librdkafka's reason: fatal_error when a
// thread could not start, else config_error (a property it refused).
[[nodiscard]] handle_ptr make_handle(rd_kafka_type_t type, conf_ptr conf);

}  // namespace clerk_sync::kafka::detail
