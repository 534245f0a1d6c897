#pragma once
// Whether the two projections a check reads, users and sessions, both keep
// the database up to date, judged from readings of their stored positions
// (lookup::projection_positions) at each --projections-check-s. Every event
// of the topic moves every projection's offsets, so with both consumers
// running, both have written the file and both move. Two ways one fails
// its checks without a word elsewhere in auth:
// - missing: it has never written the file while the other has (a consumer
//   unit not enabled, or writing another file); said once seen by two
//   readings in a row (consumers start apart), and when it ends;
// - stalled: it has not moved for `min_still` (and at least two readings),
//   the other has moved meanwhile, and it is behind the other on the
//   partitions both store (its consumer stopped, or fails every batch).
//   However bursty or quiet the topic: one event after the stop is enough.
//   Said once, and when it ends: it moved, it is no longer behind, or it
//   has no offsets any more.
// Either way its refusals never come: revoked sessions are let in, or bans
// unseen. Not thread-safe.

#include <chrono>
#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "auth/lookup.hpp"
#include "log/log.hpp"

namespace clerk_sync::auth {

struct watch_line {
  log::level level = log::level::info;
  std::string msg;  // projection_missing, projection_written, projection_stalled, projection_stall_over
  std::string projection;
  std::string outcome;      // the warnings: what it means for checks
  std::int64_t behind = 0;  // projection_stalled: records behind the other
  std::string reason;       // projection_stall_over: moved, not_behind, not_written
};

class projection_watch {
 public:
  using clock = std::chrono::steady_clock;
  explicit projection_watch(clock::duration min_still) : min_still_(min_still) {}

  // One reading, taken at `t`. Returns the lines to write now.
  std::vector<watch_line> observe(const positions& now, clock::time_point t);

 private:
  struct track {
    stored_offsets at;                // where it was last seen
    clock::time_point since{};        // the reading it was last seen moving (or first seen)
    int readings_still = 0;           // readings since then
    bool other_moved = false;         // the other projection moved since then
  };
  clock::duration min_still_;
  std::map<std::string, track> tracks_;  // users, sessions: those that have written
  std::optional<std::string> missing_seen_, missing_said_;
  std::optional<std::string> stalled_said_;
};

}  // namespace clerk_sync::auth
