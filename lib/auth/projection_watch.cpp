#include "auth/projection_watch.hpp"

#include <algorithm>
#include <chrono>

namespace clerk_sync::auth {
namespace {

const std::string users = "users", sessions = "sessions";

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

  // Where each projection has got to since the last reading: users and
  // sessions, and the others (referrals, balances), which move with every
  // event too and so tell a stop of both the checks read.
  std::map<std::string, bool> moved;
  std::erase_if(tracks_, [&](const auto& tr) { return !now.contains(tr.first); });
  for (const auto& [p, at] : now) {
    auto [tr, fresh] = tracks_.try_emplace(p, track{at, t, 0, false});
    moved[p] = !fresh && tr->second.at != at;
    if (moved[p]) tr->second = track{at, t, 0, false};
    else if (!fresh) ++tr->second.readings_still;
  }
  for (auto& entry : tracks_) {
    const auto& p = entry.first;  // a name, not a binding: clang 14 cannot capture those
    if (!moved[p] && std::any_of(moved.begin(), moved.end(), [&](const auto& m) { return m.first != p && m.second; }))
      entry.second.other_moved = true;
  }
  // The projection `p` is furthest behind, and by how much (0: none).
  const auto furthest_ahead = [&](const std::string& p) {
    std::pair<std::string, std::int64_t> best{"", 0};
    for (const auto& [q, tr] : tracks_)
      if (q != p)
        if (const auto n = behind(tracks_.at(p).at, tr.at); n > best.second) best = {q, n};
    return best;
  };

  std::string writers;
  for (const auto& [q, at] : now) writers += (writers.empty() ? "" : ", ") + q;
  for (const auto& p : {users, sessions}) {
    // Missing: it has never written while another has.
    const bool missing = !now.contains(p) && !writers.empty();
    if (missing_said_.contains(p) && !missing) {
      out.push_back({log::level::info, "projection_written", p, {}, 0, {}});
      missing_said_.erase(p);
    }
    if (missing && missing_seen_.contains(p) && !missing_said_.contains(p)) {
      out.push_back({log::level::warn, "projection_missing", p,
                     "projections (" + writers + ") write this database and the " + p +
                         " one never did: " + consequence(p, false),
                     0, {}});
      missing_said_.insert(p);
    }
    if (missing) missing_seen_.insert(p);
    else missing_seen_.erase(p);

    // A stall said: over once it moved, is no longer behind, or has no offsets.
    if (stalled_said_.contains(p)) {
      std::string reason;
      if (!tracks_.contains(p)) reason = "not_written";
      else if (moved[p]) reason = "moved";
      else if (furthest_ahead(p).second == 0) reason = "not_behind";
      if (!reason.empty()) {
        out.push_back({log::level::info, "projection_stall_over", p, {}, 0, reason});
        stalled_said_.erase(p);
      }
    }
    if (!stalled_said_.contains(p) && tracks_.contains(p)) {
      const auto& tr = tracks_.at(p);
      const auto [ahead, n] = furthest_ahead(p);
      if (tr.readings_still >= 2 && t - tr.since >= min_still_ && tr.other_moved && n > 0) {
        const auto still_s = std::chrono::duration_cast<std::chrono::seconds>(t - tr.since).count();
        out.push_back({log::level::warn, "projection_stalled", p,
                       "the " + p + " projection has stored nothing for " + std::to_string(still_s) +
                           " s while the " + ahead + " one went on: its consumer is stopped or failing, and " +
                           consequence(p, true),
                       n, {}});
        stalled_said_.insert(p);
      }
    }
  }
  return out;
}

}  // namespace clerk_sync::auth
