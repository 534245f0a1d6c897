#pragma once
// One projection's consume loop: a group member of `<group_prefix>.<projection>`
// with its own database connection, polling until `stop` is set. Batches of
// up to batch_size events, batch_bytes of bodies or batch_latency, each
// applied in one transaction with its offsets (never committed to Kafka); a
// failing batch is retried
// under retry_policy, then the loop gives up; on revoke the open batch is
// flushed first; partitions start from the stored offset, or explicitly from
// the log's first record when none is stored, and a stored offset outside the
// log ends the loop (exit_offset_out_of_range); so does a topic recreated and
// refilled past it, found by re-reading the record before the stored offset
// and comparing its svix-id with the one stored with it, on assignment and
// then every position_check_interval while it runs (the record checked last
// is stored with the offsets, so that a kill between two checks is caught on
// resume; a resume that cannot compare leaves it, or the record before the
// offset, to the first check, before anything is applied when that check
// reads it in time). Ledger rows past the
// retention are pruned between batches. run_loop() is called once, on its own
// thread; the atomics of loop_state are shared with whoever watches it.

#include <atomic>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <mutex>
#include <string>

#include "consume/retry.hpp"
#include "kafka/client.hpp"
#include "kafka/consumer.hpp"
#include "projection/applier.hpp"
#include "projection/mapping.hpp"

namespace clerk_sync::consume {

inline constexpr int exit_bad_kafka_config = 2;
inline constexpr int exit_db_failed = 3;
inline constexpr int exit_kafka_failed = 4;
// A stored offset the partition's log no longer holds: never reset silently.
inline constexpr int exit_offset_out_of_range = 5;
// The database path names another file than the one opened (replaced with
// mv, moved or deleted): an operator stops whatever else has it open before
// anything starts on the file there now, never an automatic restart.
inline constexpr int exit_db_replaced = 6;

struct loop_config {
  kafka::client_config kafka;
  std::string topic = "clerk.events";
  std::string group_prefix = "clerk-sync";
  std::string db_path;
  projection::kind projection = projection::kind::users;
  std::size_t batch_size = 2000;
  // A batch's bodies are held until it commits, beside the prefetch: also
  // bounded in bytes, so that a backlog of large events (bodies up to the
  // receiver's limit, 1 MiB by default) cannot hold batch_size of them. The
  // event that reaches it ends the batch it joined.
  std::size_t batch_bytes = 8 * 1024 * 1024;
  std::chrono::milliseconds batch_latency{50};
  std::chrono::milliseconds busy_timeout{5'000};
  retry_policy retry;
  std::chrono::milliseconds max_poll_interval{300'000};
  // No assignment this long after subscribing or after one was revoked
  // (Kafka unreachable, a wrong security.protocol or credentials, the
  // group's session lost with the cluster): an error line, not_joined, then
  // one every 10 minutes while it lasts.
  std::chrono::milliseconds join_deadline{60'000};
  // Ledger rows older than this are pruned (README "Bounded state"); zero
  // keeps them forever.
  std::chrono::seconds ledger_retention{std::chrono::hours(24 * 90)};
  std::chrono::milliseconds prune_interval{1'000};
  // How often, at most, the log being read is checked for being the one
  // the applied records came from (a topic recreated while the consumer
  // runs): before a batch, and while idle after records were applied.
  std::chrono::milliseconds position_check_interval{10'000};
  // The longest one position check takes: reading the record before the
  // stored offset (5 s, loop.cpp), then the log's range when that read is
  // out of it (10 s, kafka/consumer.cpp). A loop's turn between two polls
  // may hold two: before the batch and after it.
  static constexpr std::chrono::seconds position_check_limit{15};
  // Loops of one process that share a database file take turns here:
  // SQLite's busy handler would otherwise make them sleep in steps of up to
  // 100 ms waiting for each other's write lock. Optional.
  std::mutex* write_turn = nullptr;
};

struct loop_state {
  std::atomic<bool> subscribed{false};
  // Waiting for ctl swap-in's lock before it subscribes (swap_wait).
  std::atomic<bool> swap_waiting{false};
  std::atomic<bool> done{false};
  std::atomic<int> exit_code{0};
  // steady_clock ms of the last loop turn, for the systemd watchdog.
  std::atomic<std::int64_t> heartbeat_ms{0};
};

// Runs until `stop` (then finishes the batch, commits, leaves the group and
// returns 0), or until the database keeps failing (exit_db_failed), Kafka
// fails for good (exit_kafka_failed), a stored offset is outside the log or
// the topic was recreated past it (exit_offset_out_of_range) or Kafka rejects
// a property (exit_bad_kafka_config). Each ending is logged once. Never throws.
int run_loop(const loop_config& cfg, const std::atomic<bool>& stop, loop_state& state);

// steady_clock now in ms, the unit of loop_state::heartbeat_ms.
[[nodiscard]] std::int64_t steady_ms();

// The plain record the projections apply, from a Kafka message as the
// receiver publishes it (headers svix-id and clerk-event-type).
[[nodiscard]] projection::envelope to_envelope(kafka::message&& m);

}  // namespace clerk_sync::consume
