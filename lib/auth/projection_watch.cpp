#include "auth/projection_watch.hpp"

#include <algorithm>
#include <chrono>

namespace clerk_sync::auth {
namespace {

const std::string users = "users", sessions = "sessions";

const std::string& other_of(const std::string& p) { return p == users ? sessions : users; }

std::string consequence(const std::string& p, bool since) {
  if (p == sessions) return since ? "sessions revoked or ended since are let in" : "revoked or ended sessions are let in";
  return since ? "users banned or deleted since are let in, role changes unseen"
               : "banned or deleted users are let in, roles unknown";
}

// Records `p` is behind `q` on the partitions both store (a topic only one
// of them has read, an old one or a new one, says nothing of the other).
std::int64_t behind(const stored_offsets& p, const stored_offsets& q) {
  std::int64_t n = 0;
  for (const auto& [where, next] : p)
    if (const auto it = q.find(where); it != q.end()) n += std::max<std::int64_t>(0, it->second - next);
  return n;
}

}  // namespace

std::vector<watch_line> projection_watch::observe(const positions& now, clock::time_point t) {
  std::vector<watch_line> out;
  const auto has = [&](const std::string& p) { return now.contains(p); };

  // Missing: one has written, the other never has.
  std::optional<std::string> missing;
  if (has(users) != has(sessions)) missing = has(users) ? sessions : users;
  if (missing_said_ && missing != missing_said_) {
    out.push_back({log::level::info, "projection_written", *missing_said_, {}, 0, {}});
    missing_said_.reset();
  }
  if (missing && missing == missing_seen_ && missing != missing_said_) {
    out.push_back({log::level::warn, "projection_missing", *missing,
                   "the " + other_of(*missing) + " projection writes this database and the " + *missing +
                       " one never did: " + consequence(*missing, false),
                   0, {}});
    missing_said_ = missing;
  }
  missing_seen_ = missing;

  // Where each has got to since the last reading.
  std::map<std::string, bool> moved;
  for (const auto& p : {users, sessions}) {
    const auto it = now.find(p);
    if (it == now.end()) {
      tracks_.erase(p);
      continue;
    }
    auto [tr, fresh] = tracks_.try_emplace(p, track{it->second, t, 0, false});
    moved[p] = !fresh && tr->second.at != it->second;
    if (moved[p]) tr->second = track{it->second, t, 0, false};
    else if (!fresh) ++tr->second.readings_still;
  }
  for (const auto& p : {users, sessions})
    if (tracks_.contains(p) && !moved[p] && moved[other_of(p)]) tracks_.at(p).other_moved = true;

  // A stall said: over once it moved, is no longer behind, or has no offsets.
  if (stalled_said_) {
    const auto& p = *stalled_said_;
    std::string reason;
    if (!tracks_.contains(p)) reason = "not_written";
    else if (moved[p]) reason = "moved";
    else if (!tracks_.contains(other_of(p)) || behind(tracks_.at(p).at, tracks_.at(other_of(p)).at) == 0)
      reason = "not_behind";
    if (!reason.empty()) {
      out.push_back({log::level::info, "projection_stall_over", p, {}, 0, reason});
      stalled_said_.reset();
    }
  }
  if (!stalled_said_ && tracks_.contains(users) && tracks_.contains(sessions)) {
    for (const auto& p : {users, sessions}) {
      const auto& tr = tracks_.at(p);
      const auto n = behind(tr.at, tracks_.at(other_of(p)).at);
      if (tr.readings_still >= 2 && t - tr.since >= min_still_ && tr.other_moved && n > 0) {
        const auto still_s = std::chrono::duration_cast<std::chrono::seconds>(t - tr.since).count();
        out.push_back({log::level::warn, "projection_stalled", p,
                       "the " + p + " projection has stored nothing for " + std::to_string(still_s) +
                           " s while the " + other_of(p) + " one went on: its consumer is stopped or failing, and " +
                           consequence(p, true),
                       n, {}});
        stalled_said_ = p;
        break;
      }
    }
  }
  return out;
}

}  // namespace clerk_sync::auth
