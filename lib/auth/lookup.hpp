#pragma once
// What the synced tables say about a user and a session: two prepared
// statements on one read-only connection to the consumers' SQLite file
// (WAL: each lookup sees the latest committed batch, and never blocks the
// writer). Not thread-safe: one per thread. Errors: store::open_error at
// construction (no file, no tables); store::db_error for a failed lookup.

#include <memory>
#include <optional>
#include <string>

#include "auth/decision.hpp"

namespace clerk_sync::auth {

class lookup {
 public:
  explicit lookup(const std::string& db_path);
  ~lookup();
  lookup(const lookup&) = delete;
  lookup& operator=(const lookup&) = delete;

  [[nodiscard]] std::optional<user_row> user(const std::string& id);
  [[nodiscard]] std::optional<session_row> session(const std::string& id);
  // A fresh connection, after a failed lookup (the consumers restarted and
  // replaced the WAL files under a read-only reader). Throws store::db_error.
  void reopen();

 private:
  struct impl;
  std::string path_;
  std::unique_ptr<impl> impl_;
};

}  // namespace clerk_sync::auth
