#pragma once
// Whether the two projections a check reads, users and sessions, both keep
// the database up to date, judged from readings of every projection's
// stored positions (lookup::projection_positions) at each
// --projections-check-s. Every event of the topic moves every projection's
// offsets, so with their consumers running, all that write the file move.
// Two ways users or sessions fails its checks without a word elsewhere in
// auth:
// - missing: it has never written the file while another projection has
//   (a consumer unit not enabled, or writing another file); said once seen
//   by two readings in a row (consumers start apart), and when it ends;
// - stalled: it has not moved for `min_still` (and at least two readings),
//   another projection has moved meanwhile, and it is behind that one on
//   the partitions both store (its consumer stopped, or fails every
//   batch). However bursty or quiet the topic: one event after the stop is
//   enough. Users and sessions are each measured against every other
//   projection, so that both stopping together (one process running the
//   two) is said while referrals or balances go on. Said once, and when it
//   ends: it moved, it is no longer behind, or it has no offsets any more.
// Either way its refusals never come: revoked sessions are let in, or bans
// unseen. Not thread-safe.

#include <chrono>
#include <cstdint>
#include <map>
#include <set>
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
    bool other_moved = false;         // another projection moved since then
  };
  clock::duration min_still_;
  std::map<std::string, track> tracks_;  // every projection that has written
  std::set<std::string> missing_seen_, missing_said_, stalled_said_;  // of users and sessions
};

}  // namespace clerk_sync::auth
