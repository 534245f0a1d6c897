#pragma once
// One connection to a clerk-sync SQLite file: WAL, a busy timeout, and the
// embedded migrations of schemas/sql applied on open (PRAGMA user_version),
// so several processes can share one file. Not thread-safe: one connection
// per thread. Errors: open_error (stop: bad path, newer schema), db_error
// (a statement failed, or the open met a lock, a full disk or an I/O error:
// the caller rolls back and retries the unit of work, or exits to be
// restarted).

#include <chrono>
#include <functional>
#include <memory>
#include <stdexcept>
#include <string>
#include <string_view>
#include <vector>

namespace SQLite {
class Database;
}

namespace clerk_sync::store {

// The file cannot be opened or migrated for a reason a restart will not
// change (no such directory, no permission, not a database, a schema newer
// than the binary): start-up fails as a bad setting. A lock held past the
// busy timeout, a full disk or an I/O error while opening or migrating is a
// db_error instead, which a restart may get past.
struct open_error : std::runtime_error {
  using std::runtime_error::runtime_error;
};

// A statement or commit failed (locked, busy, disk full, I/O): nothing of the
// transaction is kept; retry the whole unit with backoff.
struct db_error : std::runtime_error {
  using std::runtime_error::runtime_error;
};

struct open_options {
  // How long a writer waits for another connection's lock before db_error.
  std::chrono::milliseconds busy_timeout{5'000};
  // Open an existing file to read only: no WAL switch, no migrations, no
  // file created (clerk-sync-ctl status and dead-letters list, which an
  // operator may run as root beside the services' own user).
  bool read_only = false;
  // Leave the -wal and -shm files beside the database when this connection
  // closes last, the WAL emptied (SQLITE_FCNTL_PERSIST_WAL, with a journal
  // size limit that makes the close truncate it): clerk-sync-auth, which
  // may not create files there, needs both to read a WAL database, also
  // while no consumer runs. For the consumers, which run as the owner of
  // the files; a connection of another user (clerk-sync-ctl as root) would
  // leave files the consumers could not open. Files that were there before
  // the open are kept whatever this says.
  bool keep_wal_files = false;
  // What the file must already be before this connection writes to it:
  // anything (a missing file is created, an older one migrated: the
  // consumers), or a clerk-sync database (migrated when older: ctl swap-in
  // and dead-letters retry). A mistyped path naming some other SQLite file
  // is then refused as it was found, never given clerk-sync's tables or
  // switched to WAL.
  enum class existing { any, clerk_sync };
  existing must_be = existing::any;
  // Called once, with the lock file's path, when another process is
  // migrating the file: the open then waits for it without a deadline
  // (the consumers log migration_wait).
  std::function<void(const std::string& lock)> on_migration_wait = {};
};

// One embedded migration: schemas/sql/NNN_name.sql, version NNN.
struct migration {
  int version = 0;
  std::string_view name;
  std::string_view sql;
};

// The migrations compiled into this binary, by ascending version.
[[nodiscard]] const std::vector<migration>& embedded_migrations();

class database {
 public:
  // Opens (creating if needed) `path` (":memory:" works), sets WAL and the
  // busy timeout, applies missing migrations. Throws open_error, or
  // db_error for a failure a restart may get past (see open_error).
  explicit database(const std::string& path, const open_options& opts = {});
  ~database();
  database(database&&) noexcept;
  database& operator=(database&&) noexcept;
  database(const database&) = delete;
  database& operator=(const database&) = delete;

  // PRAGMA user_version: the schema version this file is at.
  [[nodiscard]] int schema_version();

  // The file's path as opened.
  [[nodiscard]] const std::string& path() const { return path_; }

  // Whether path() no longer names the file this connection has open: it
  // was renamed, deleted, or another file was moved there (a backup
  // restored with mv). One stat (SQLITE_FCNTL_HAS_MOVED); false for
  // ":memory:". The connection would go on writing the old file, and its
  // -wal, which SQLite finds by name, would be read into the new one. A
  // stat that fails (the folder's permissions changed, an I/O error) counts
  // as moved, as SQLite counts it. SQLite keeps the path with symlinks
  // resolved: a symlink pointed elsewhere is not seen.
  [[nodiscard]] bool file_moved();

  // The SQLiteCpp connection, for lib/projection's statements only.
  [[nodiscard]] SQLite::Database& native() { return *db_; }

 private:
  std::string path_;
  std::unique_ptr<SQLite::Database> db_;
};

// The SQLite application_id `clerk-sync-ctl replay` gives its file once it
// has read up to its targets, just before the file is checkpointed and
// renamed: a file without it (a replay killed or still writing, however it
// was renamed or copied since) is no finished replay, and swap-in refuses
// it (incomplete_replay_id below is the other finished mark). "cSrp".
inline constexpr std::int32_t finished_replay_id = 0x63537270;
// The mark of a replay that finished knowing events missing (accepted with
// --allow-incomplete: a log that no longer starts at 0, a compacted
// topic): swap-in takes such a file only when told to. "cSri".
inline constexpr std::int32_t incomplete_replay_id = 0x63537269;

// Takes either mark off a file that is live now: a replay moved into place
// whole (README: replay --projection all, then mv) and opened by a consumer,
// or a live file a swap-in writes. Left on, a copy or backup of the live
// file would pass swap-in's check for a finished replay. Throws db_error.
// Returns the mark taken off (0: none).
[[nodiscard]] std::int32_t clear_replay_mark(database& db);

// Runs `sql` (no results) and rethrows any SQLite failure as db_error.
void exec(database& db, const std::string& sql);

// Folds the WAL into the main file and truncates it (PRAGMA
// wal_checkpoint(TRUNCATE)); whether every frame made it, which another
// connection's open read can prevent (then the -wal file still holds
// committed rows and must not be deleted). SQLite failures: db_error.
[[nodiscard]] bool checkpoint_wal(database& db);

}  // namespace clerk_sync::store
