#pragma once
// What the synced tables say about a user and a session: two prepared
// statements on one read-only connection to the consumers' SQLite file
// (WAL: each lookup sees the latest committed batch, and never blocks the
// writer). Not thread-safe: one per thread. Errors: store::open_error at
// construction (no file, no tables); store::db_error for a failed lookup.
//
// A connection stays on the file it opened, even when another is moved to
// its path (README "Backfill a projection and swap it in"): it would then
// answer from the old file, bans and revocations of the new one unseen. Nor
// can it safely open the new one: SQLite finds the -wal and -shm by name,
// and the old file's would be read into it. So a lookup checks, at most
// once per `recheck`, whether the path still names the file it opened; once
// it does not, every lookup throws store::db_error (the service answers 503
// and logs why) until the process is restarted after the swap.

#include <chrono>
#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "auth/decision.hpp"

namespace clerk_sync::auth {

// The next offset a projection stores for each (topic, partition).
using stored_offsets = std::map<std::pair<std::string, std::int32_t>, std::int64_t>;
// Each projection that has written the file, with its stored offsets.
using positions = std::map<std::string, stored_offsets>;

class lookup {
 public:
  explicit lookup(const std::string& db_path, std::chrono::milliseconds recheck = std::chrono::seconds(1));
  ~lookup();
  lookup(const lookup&) = delete;
  lookup& operator=(const lookup&) = delete;

  [[nodiscard]] std::optional<user_row> user(const std::string& id);
  [[nodiscard]] std::optional<session_row> session(const std::string& id);
  // The projections that have stored offsets in the file (kafka_offsets),
  // those whose consumers have written it, each with its next offset for
  // each (topic, partition) it stores: how far it has read.
  [[nodiscard]] positions projection_positions();
  // A fresh connection to the same file, after a failed lookup (the
  // consumers restarted and replaced the WAL files under a read-only
  // reader). Throws store::db_error, also when the path names another file.
  void reopen();
  // Why the path cannot be served now (the file is missing, or another file
  // was moved there: that stays until a restart); nullopt when it can.
  // For /healthz, which then answers 503.
  [[nodiscard]] std::optional<std::string> file_problem();
  // The path names another file than the one opened: for good, until a
  // restart (file_problem() says so).
  [[nodiscard]] bool replaced() const { return replaced_; }

 private:
  // Throws store::db_error once the path no longer names the file the
  // connection has (checked at most once per recheck_).
  void follow_path();
  // Throws store::db_error unless the path names that file: for a missing
  // path until it is back, for another file (a swap) until a restart.
  void require_same_file();
  [[nodiscard]] std::string replaced_error() const;

  struct impl;
  std::string path_;
  std::chrono::milliseconds recheck_;
  std::chrono::steady_clock::time_point next_check_{};
  bool replaced_ = false;
  bool missing_ = false;  // the path named no file when last looked at
  std::unique_ptr<impl> impl_;
};

}  // namespace clerk_sync::auth
