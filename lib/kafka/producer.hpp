#pragma once
// Idempotent Kafka producer (acks=all). produce() never blocks: it enqueues
// or says why not. Each accepted record gets exactly one delivery report,
// invoked on the producer's own poller thread (callers hop back to their own
// executor from there), or, with `serve_on_caller`, by serve_reports() on
// the caller's thread when report_fd() is readable. Thread-safe: produce()
// may be called from any thread.

#include <atomic>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "kafka/client.hpp"

namespace clerk_sync::kafka {

struct producer_options {
  // Upper bound on the time from produce() to the delivery report: keep the
  // HTTP answer inside Svix's 15 s window.
  std::chrono::milliseconds message_timeout{10'000};
  // librdkafka 2.0.2 sends one request at a time per partition once five
  // records are in flight (it compares a record count with the request
  // limit), and its broker thread busy-polls from the end of the linger
  // until that request's response. A longer linger shortens the spin, at
  // the cost of latency: in scripts/bench receiver on an idle machine, 5 ms
  // gave (c) 64-69 us of CPU per webhook against 84 at 2 ms, but c/a
  // 0.16-0.18 against 0.27; 1 ms gave 7 % more webhooks a second than 2 ms
  // (6 of 7 pairs, p50 3.1 ms against 3.4) for about 3 % more CPU, and 0 ms
  // fewer than both (README, Benchmarks). `--kafka-property linger.ms=5`
  // suits a loaded host.
  std::chrono::milliseconds linger{1};
  // Largest record (value, key, headers and framing) sent; a larger one is
  // refused at produce() as too_large, before anything reaches a broker.
  std::size_t max_message_bytes = 1'000'000;
  // No poller thread: the caller watches report_fd() and calls
  // serve_reports() (an event loop serves its reports without a thread hop).
  bool serve_on_caller = false;
};

struct outgoing_record {
  std::string_view topic;
  std::string_view key;
  std::string_view value;
  std::vector<header> headers;
};

struct delivery_report {
  bool ok = false;
  std::int32_t partition = -1;
  std::int64_t offset = -1;
  std::string error;  // empty when ok
  // The record timed out or failed after it was sent: it may be in the log
  // anyway. Harmless for us (the consumers deduplicate), but worth a log line.
  bool possibly_persisted = false;
  // The record is over a size limit (ours or the broker's): retrying cannot help.
  bool too_large = false;
};

enum class enqueue_status {
  queued,      // a delivery report will follow
  queue_full,  // backpressure: answer 503, try later
  fatal,       // the producer is finished: stop intake, exit non-zero
  too_large,   // over max_message_bytes: this record can never be produced
  rejected,    // this record cannot be produced (unknown topic…); see `why`
};

class producer {
 public:
  using delivery_callback = std::function<void(const delivery_report&)>;
  using fatal_callback = std::function<void(const std::string& reason)>;

  // Throws config_error for a bad property. `on_fatal` runs once, on the
  // thread serving reports (the poller, or serve_reports()' caller), when
  // librdkafka raises a fatal error. With serve_on_caller, produce() never
  // blocks on a full queue (no RD_KAFKA_MSG_F_BLOCK): the caller is also the
  // only thread that frees it.
  producer(const client_config& cfg, const producer_options& opts, fatal_callback on_fatal = {});
  // The check the constructor makes of the operator's properties against
  // what the producer fixes (idempotence, acks=all), for a start-up that
  // validates settings before it does anything else. Throws config_error.
  static void check_properties(const client_config& cfg, const producer_options& opts);
  ~producer();  // stops the poller if any; call flush() first to keep queued records
  producer(const producer&) = delete;
  producer& operator=(const producer&) = delete;

  [[nodiscard]] enqueue_status produce(const outgoing_record& rec, delivery_callback on_delivery,
                                       std::string* why = nullptr);

  // Waits until every queued record has its delivery report or the timeout
  // passes; true when nothing is left in flight.
  bool flush(std::chrono::milliseconds timeout);

  // With serve_on_caller: a descriptor that becomes readable when reports
  // (or errors) wait; serve_reports() drains it and runs their callbacks on
  // the calling thread. -1 otherwise.
  [[nodiscard]] int report_fd() const;
  void serve_reports();

  // Records not yet reported.
  [[nodiscard]] int in_flight() const;

  // unauthenticated: the brokers refused the credentials; tls_failed: the
  // TLS handshake with them failed (both: see refusal); unauthorized: these
  // credentials may not describe the topic (its ACLs), which is not
  // "missing".
  enum class topic_state { available, missing, unreachable, unauthenticated, tls_failed, unauthorized };
  // A partition with fewer replicas in sync than it has.
  struct partition_sync {
    std::int32_t partition = 0;
    int replicas = 0;
    int in_sync = 0;
  };
  // Whether `topic` exists with a partition, by a metadata round-trip for it
  // alone; blocks up to `timeout`, less once the brokers refused the client.
  // `short_of_sync`, when given, gets the partitions that answer showed with
  // replicas out of sync; `leaderless`, those it showed without a leader.
  [[nodiscard]] topic_state check_topic(const std::string& topic, std::chrono::milliseconds timeout,
                                        std::vector<partition_sync>* short_of_sync = nullptr,
                                        std::vector<std::int32_t>* leaderless = nullptr) const;

  [[nodiscard]] std::optional<std::string> fatal_reason() const;

  // Why the brokers turn this producer away when retrying will not help (a
  // refused login, a failed TLS handshake), until a metadata request
  // succeeds; nullopt else.
  [[nodiscard]] std::optional<kafka::refusal> refusal() const;

  // Test hook: makes librdkafka raise a fatal error (rd_kafka_test_fatal_error).
  void inject_fatal_error_for_test();

 private:
  struct impl;
  std::unique_ptr<impl> impl_;
};

}  // namespace clerk_sync::kafka
