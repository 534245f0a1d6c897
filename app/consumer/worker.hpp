#pragma once
// One projection's consumer: a group member of `<group_prefix>.<projection>`
// with its own database connection, running the blocking poll loop until
// `stop` is set. Offsets come from and go to the database (never Kafka).
// run() is called once, on its own thread; the atomics are shared with main.

#include <atomic>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <mutex>
#include <string>

#include "kafka/client.hpp"
#include "projection/mapping.hpp"

namespace clerk_sync::consumer_app {

inline constexpr int exit_bad_kafka_config = 2;
inline constexpr int exit_db_failed = 3;
inline constexpr int exit_kafka_failed = 4;
// A stored offset the partition's log no longer holds: never reset silently.
inline constexpr int exit_offset_out_of_range = 5;

struct worker_config {
  kafka::client_config kafka;
  std::string topic = "clerk.events";
  std::string group_prefix = "clerk-sync";
  std::string db_path;
  projection::kind projection = projection::kind::users;
  std::size_t batch_size = 500;
  std::chrono::milliseconds batch_latency{50};
  std::chrono::milliseconds busy_timeout{5'000};
  // Total time a failing batch is retried before the process gives up; kept
  // well below max.poll.interval.ms so the group does not evict us first.
  std::chrono::milliseconds retry_budget{30'000};
  std::chrono::milliseconds max_poll_interval{300'000};
  // Ledger rows older than this are pruned (README "Bounded state"); zero
  // keeps them forever.
  std::chrono::seconds ledger_retention{std::chrono::hours(24 * 90)};
  std::chrono::milliseconds prune_interval{1'000};
  // Workers of one process that share a database file take turns here:
  // SQLite's busy handler would otherwise make them sleep in steps of up to
  // 100 ms waiting for each other's write lock. Optional.
  std::mutex* write_turn = nullptr;
};

struct worker_state {
  std::atomic<bool> subscribed{false};
  std::atomic<bool> done{false};
  std::atomic<int> exit_code{0};
  // steady_clock ms of the last loop turn, for the systemd watchdog.
  std::atomic<std::int64_t> heartbeat_ms{0};
};

// Runs until `stop` (then finishes the batch, commits, leaves the group and
// returns 0), or until the database keeps failing (exit_db_failed), Kafka
// fails for good (exit_kafka_failed), holds a stored offset outside the log
// (exit_offset_out_of_range) or rejects a property (exit_bad_kafka_config). Never throws.
int run_worker(const worker_config& cfg, const std::atomic<bool>& stop, worker_state& state);

// steady_clock now in ms, the unit of worker_state::heartbeat_ms.
[[nodiscard]] std::int64_t steady_ms();

}  // namespace clerk_sync::consumer_app
