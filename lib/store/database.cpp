#include "store/database.hpp"

#include <SQLiteCpp/SQLiteCpp.h>
#include <sqlite3.h>

#include <algorithm>
#include <cerrno>
#include <filesystem>
#include <optional>
#include <system_error>
#include <thread>

#include "store/file_lock.hpp"

namespace clerk_sync::store {
namespace {

int read_user_version(SQLite::Database& db) { return db.execAndGet("PRAGMA user_version").getInt(); }

// Whether the file is a clerk-sync database: a schema version and the
// tables every version has (their names are the contract). The version
// alone is not enough: many applications set PRAGMA user_version, and a
// mistyped path naming one of their files would be switched to WAL,
// migrated, and given lock files beside it.
bool holds_clerk_sync_schema(SQLite::Database& db, int version) {
  return version != 0 &&
         db.execAndGet("SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name IN "
                       "('applied_events', 'kafka_offsets', 'dead_letters')")
                 .getInt() == 3;
}

int newest_known() {
  const auto& all = embedded_migrations();
  return all.empty() ? 0 : all.back().version;
}

// Refuses (open_error) a file this binary must not read or change, before
// anything is written to it (WAL, migrations): one without the clerk-sync
// schema, unless `fresh_ok` and it holds no table at all (a file to set
// up), or one whose schema is newer than this binary knows. A consumer
// pointed at another application's file switched it to WAL and added its
// tables to it.
void check_ours(SQLite::Database& db, const std::string& path, bool fresh_ok) {
  // One snapshot for the version and the tables: another process's first
  // migration (its tables and version, one transaction) committed between
  // two reads made a file being set up look like another application's.
  SQLite::Transaction snapshot(db, SQLite::TransactionBehavior::DEFERRED);
  const int version = read_user_version(db);
  if (!holds_clerk_sync_schema(db, version)) {
    const auto table = db.execAndGet("SELECT coalesce(min(name), '') FROM sqlite_master WHERE type = 'table' "
                                     "AND name NOT LIKE 'sqlite\\_%' ESCAPE '\\'")
                           .getString();
    if (fresh_ok && version == 0 && table.empty()) return;
    throw open_error("database " + path + " holds no clerk-sync schema" +
                     (table.empty() ? std::string()
                                    : " (it holds other tables, " + table + " among them: another application's file?)"));
  }
  if (version > newest_known())
    throw open_error("database schema version " + std::to_string(version) + " is newer than this binary knows (" +
                     std::to_string(newest_known()) + ")");
}

// An SQLite error that may pass by itself (another connection's lock held
// past the busy timeout, a full disk, an I/O error), so that a restart can
// succeed: db_error. Anything else (no such directory, no permission, not a
// database) is the setting's fault: open_error.
[[noreturn]] void throw_open_failure(const std::string& what, const SQLite::Exception& e) {
  // A reader that met a WAL the writer is still recovering or setting up.
  const int extended = e.getExtendedErrorCode();
  if (extended == SQLITE_READONLY_RECOVERY || extended == SQLITE_READONLY_CANTINIT)
    throw db_error(what + ": " + e.what());
  switch (e.getErrorCode() & 0xff) {
    case SQLITE_BUSY:
    case SQLITE_LOCKED:
    case SQLITE_FULL:
    case SQLITE_IOERR:
    case SQLITE_NOMEM:
    case SQLITE_PROTOCOL:
      throw db_error(what + ": " + e.what());
    default:
      throw open_error(what + ": " + e.what());
  }
}

// Applies each missing migration in its own IMMEDIATE transaction; the
// version is re-read under the write lock so that two processes opening a
// fresh file at once do not both run the same migration. One process
// migrates at a time, holding the migration lock: the others wait for it
// there, however long the migration takes (minutes over a large ledger),
// where waiting on its write lock they would fail after their busy timeout
// (every consumer started with the first one, after an upgrade or a boot,
// exiting 3 and restarted until systemd's start limit stops it). A new
// file's migrations run over empty tables, in milliseconds, and leave no
// lock file beside it (a replay's partial file, a test's).
void migrate(SQLite::Database& db, const std::string& path, const open_options& opts) {
  const auto& all = embedded_migrations();
  const int found = read_user_version(db);  // not newer: check_ours()
  if (found == newest_known()) return;
  std::optional<file_lock> held;
  if (found > 0 && path != ":memory:") {
    try {
      const auto lock = migration_lock_path(path);
      held = file_lock::try_lock(lock, file_lock::mode::exclusive);
      if (!held) {
        if (opts.on_migration_wait) opts.on_migration_wait(lock);
        held = file_lock::lock(lock, file_lock::mode::exclusive);
      }
    } catch (const std::system_error& e) {
      // No permission, a read-only file system, a bad path: a setting. Anything else
      // (no space for the file, no locks left) may pass, as a full disk may.
      const std::string what = std::string("cannot take the migration lock of ") + path + ": " + e.what();
      const int err = e.code().value();
      // errno values, as both categories hold on Linux.
      if (err == EACCES || err == EPERM || err == EROFS || err == ENOTDIR || err == ELOOP || err == ENAMETOOLONG)
        throw open_error(what);
      throw db_error(what);
    }
  }
  for (const auto& m : all) {
    if (read_user_version(db) >= m.version) continue;
    SQLite::Transaction tx(db, SQLite::TransactionBehavior::IMMEDIATE);
    if (read_user_version(db) >= m.version) continue;
    db.exec(std::string(m.sql));
    db.exec("PRAGMA user_version = " + std::to_string(m.version));
    tx.commit();
  }
}

}  // namespace

database::database(const std::string& path, const open_options& opts) : path_(path) {
  if (opts.read_only) {
    try {
      db_ = std::make_unique<SQLite::Database>(path, SQLite::OPEN_READONLY | SQLite::OPEN_NOMUTEX);
      db_->setBusyTimeout(static_cast<int>(opts.busy_timeout.count()));
      check_ours(*db_, path, false);
      return;
    } catch (const SQLite::Exception& e) {
      throw_open_failure("cannot open database " + path + " to read", e);
    }
  }
  // Several processes may open a fresh file at once: switching it to WAL
  // takes an exclusive lock that SQLite reports as busy without waiting, so
  // set-up is retried for as long as the busy timeout allows.
  const auto deadline = std::chrono::steady_clock::now() + opts.busy_timeout;
  // WAL files found beside the file (the consumers', which clerk-sync-auth
  // needs) are left as found, whoever closes last; files this connection
  // creates are its own user's, kept only when asked.
  std::error_code ec;  // a file that cannot be looked at: the open below says why
  const bool keep_wal_files = opts.keep_wal_files || (std::filesystem::exists(path + "-wal", ec) &&
                                                      std::filesystem::exists(path + "-shm", ec));
  while (true) {
    try {
      // NOMUTEX: a connection is used by one thread at a time (see header),
      // so SQLite's per-call mutexes are pure overhead.
      const int create = opts.must_be == open_options::existing::any ? SQLite::OPEN_CREATE : 0;
      db_ = std::make_unique<SQLite::Database>(path, SQLite::OPEN_READWRITE | create | SQLite::OPEN_NOMUTEX);
      // SQLite opens a file it may not write read-only, without a word:
      // every batch would then fail and be retried (exit 3, restarted for
      // ever), where the cause is a setting (the file's owner or mode).
      if (sqlite3_db_readonly(db_->getHandle(), "main") == 1)
        throw open_error("database " + path + " is read-only to this process (its owner, mode or file system?)");
      db_->setBusyTimeout(static_cast<int>(opts.busy_timeout.count()));
      check_ours(*db_, path, opts.must_be == open_options::existing::any);
      // WAL lets readers (ctl status) run beside the writers; NORMAL sync is
      // durable across a process crash, which is what the offsets need.
      if (path != ":memory:") {
        // SQLite answers with the mode it kept when WAL is impossible (a
        // file system without shared memory, such as some network mounts):
        // readers would then block the writer and meet SQLITE_BUSY.
        const auto mode = db_->execAndGet("PRAGMA journal_mode = WAL").getString();
        if (mode != "wal")
          throw open_error("database " + path + " cannot use WAL (journal_mode stays " + mode +
                           "; is it on a network or other file system without shared memory?)");
        if (keep_wal_files) {
          int persist = 1;
          if (sqlite3_file_control(db_->getHandle(), "main", SQLITE_FCNTL_PERSIST_WAL, &persist) != SQLITE_OK)
            throw open_error("cannot keep the WAL files of " + path + " (SQLITE_FCNTL_PERSIST_WAL refused)");
          // 64 MiB: also what a burst may leave of the WAL on disk.
          db_->execAndGet("PRAGMA journal_size_limit = 67108864");
        }
      }
      db_->exec("PRAGMA synchronous = NORMAL");
      // The ledger's index is hot during a replay; 32 MiB keeps it in memory.
      db_->exec("PRAGMA cache_size = -32768");
      db_->exec("PRAGMA foreign_keys = ON");
      migrate(*db_, path, opts);
      return;
    } catch (const SQLite::Exception& e) {
      const int code = e.getErrorCode() & 0xff;
      const bool busy = code == SQLITE_BUSY || code == SQLITE_LOCKED;
      if (!busy || std::chrono::steady_clock::now() >= deadline) throw_open_failure("cannot open database " + path, e);
      db_.reset();
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
  }
}

database::~database() = default;
database::database(database&&) noexcept = default;
database& database::operator=(database&&) noexcept = default;

int database::schema_version() {
  try {
    return read_user_version(*db_);
  } catch (const SQLite::Exception& e) {
    throw db_error(e.what());
  }
}

bool database::file_moved() {
  int moved = 0;
  if (sqlite3_file_control(db_->getHandle(), "main", SQLITE_FCNTL_HAS_MOVED, &moved) != SQLITE_OK) return false;
  return moved != 0;
}

void exec(database& db, const std::string& sql) {
  try {
    db.native().exec(sql);
  } catch (const SQLite::Exception& e) {
    throw db_error(e.what());
  }
}

std::int32_t clear_replay_mark(database& db) {
  try {
    const std::int32_t id = db.native().execAndGet("PRAGMA application_id").getInt();
    if (id != finished_replay_id && id != incomplete_replay_id) return 0;
    db.native().exec("PRAGMA application_id = 0");
    return id;
  } catch (const SQLite::Exception& e) {
    throw db_error(std::string("clearing the finished replay's mark: ") + e.what());
  }
}

bool checkpoint_wal(database& db) {
  try {
    // One row: busy (1 if it could not finish), frames in the WAL, frames
    // checkpointed (-1 and -1 outside WAL mode).
    SQLite::Statement st(db.native(), "PRAGMA wal_checkpoint(TRUNCATE)");
    if (!st.executeStep()) return false;
    return st.getColumn(0).getInt() == 0 && st.getColumn(1).getInt() == st.getColumn(2).getInt();
  } catch (const SQLite::Exception& e) {
    throw db_error(e.what());
  }
}

}  // namespace clerk_sync::store
