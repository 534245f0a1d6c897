#pragma once
// `ctl replay`: rebuild projections from offset 0 of the events topic into a
// fresh database file, through the same applier the consumers use (rows,
// ledger and offsets in one transaction per batch), stopping at the high
// watermarks taken at start. The stored offsets let a consumer continue from
// the rebuilt file once it is swapped in. Blocking; one replay per process.
// The file is written under partial_path() and renamed to db_path only once
// caught up, so a file at db_path is always complete. A partition whose log
// no longer starts at offset 0, or a compacted topic (records gone from
// inside the log), makes the rebuild incomplete: refused unless
// allow_incomplete, and then the file carries store::incomplete_replay_id. Asked to stop (replay_options::stop_requested), it
// stops at its next poll or batch boundary and removes the partial file.
// Errors: replay_error (refused or could not finish: exit 1), replay_stopped,
// kafka::fatal_error, store::open_error; store::db_error after retries.

#include <chrono>
#include <cstdint>
#include <functional>
#include <map>
#include <optional>
#include <stdexcept>
#include <string>
#include <vector>

#include "kafka/client.hpp"
#include "consume/retry.hpp"
#include "kafka/consumer.hpp"
#include "projection/mapping.hpp"

namespace clerk_sync::ops {

struct replay_error : std::runtime_error {
  using std::runtime_error::runtime_error;
};

// Which offsets of each partition a replay must read: [low, high) as taken at
// start. Pure bookkeeping, so that the stopping rule is tested without Kafka.
class replay_tracker {
 public:
  void add_partition(std::int32_t partition, std::int64_t low, std::int64_t high);
  // Notes the message's position; true when it lies before the target and
  // must be applied (later messages arrived after the start: not ours, and
  // the partition is then read up to its target).
  bool accept(std::int32_t partition, std::int64_t offset);
  // Notes the reader's position in a partition (consumer::positions()):
  // each record before it was given to accept() or is one a read_committed
  // reader is never given (a transaction's control record, an aborted
  // transaction's records), so a log that ends with those is read in full.
  void passed(std::int32_t partition, std::int64_t position);
  [[nodiscard]] bool done() const;
  // Messages still to read, summed over partitions.
  [[nodiscard]] std::int64_t lag() const;
  // Messages the replay reads in all: sum of high - low.
  [[nodiscard]] std::int64_t total() const;
  [[nodiscard]] const std::map<std::int32_t, std::int64_t>& targets() const { return high_; }
  // The low watermarks taken at start.
  [[nodiscard]] const std::map<std::int32_t, std::int64_t>& starts() const { return low_; }
  // What the reader is assigned: each partition with records to read, from
  // the low watermark taken at start, not "the beginning": a log trimmed
  // between that check and the first fetch then fails the replay
  // (auto.offset.reset=error) instead of starting it later in silence.
  [[nodiscard]] std::vector<kafka::topic_partition> assignment(const std::string& topic) const;

 private:
  std::map<std::int32_t, std::int64_t> low_, high_, next_;
};

// Refuses a target that already holds data: a replay only fills a new file.
void require_fresh_database(const std::string& path);

struct replay_options {
  std::string topic = "clerk.events";
  std::vector<projection::kind> projections;
  std::string db_path;
  std::size_t batch_size = 2000;
  std::chrono::milliseconds progress_interval{1'000};
  // Behind the target yet nothing read moves it on for this long (events
  // arriving past the targets do not count): give up (exit 1).
  std::chrono::milliseconds stall_timeout{60'000};
  std::chrono::milliseconds request_timeout{15'000};
  // The consumers' policy for a batch the database refuses.
  consume::retry_policy retry;
  // Accept a rebuild that misses events retention already deleted.
  bool allow_incomplete = false;
  // Polled between Kafka's answers and batches, at least every 200 ms while
  // the replay waits (about every 100 ms while it reads): true stops it
  // (replay_stopped). Empty: never stops early.
  std::function<bool()> stop_requested;
};

// Where replay writes before the rename: db_path + ".partial".
[[nodiscard]] std::string partial_path(const std::string& db_path);

struct replay_progress {
  std::int64_t read = 0;     // messages read below the targets
  std::int64_t total = 0;    // messages to read
  std::int64_t lag = 0;      // total - read, per the tracker
  std::int64_t dead_letters = 0;
  std::chrono::milliseconds elapsed{0};
};

// The replay stopped on request before it caught up. Nothing was moved to
// db_path; the partial file and its sidecars were removed, except the paths
// in left_behind (with the reason), which the next replay removes. The lock
// file stays, as always.
struct replay_stopped : replay_error {
  replay_stopped(bool wrote_, std::vector<std::string> left_behind_, replay_progress last_);
  bool wrote;  // false: stopped before the partial file was created
  std::vector<std::string> left_behind;
  replay_progress last;
};

struct replay_result {
  replay_progress last;
  std::map<std::int32_t, std::int64_t> targets;  // high watermarks taken at start
  std::vector<std::string> warnings;              // events missing, accepted: partitions whose start was deleted
  std::vector<std::string> unchecked;             // what could not be checked (the topic's settings, say)
  // Events known missing were accepted (allow_incomplete): the file is
  // marked store::incomplete_replay_id, not finished_replay_id.
  bool incomplete = false;
};

[[nodiscard]] replay_result replay(const kafka::client_config& cfg, const replay_options& opts,
                                   const std::function<void(const replay_progress&)>& on_progress = {});

}  // namespace clerk_sync::ops
