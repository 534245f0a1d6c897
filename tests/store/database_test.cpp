#include "store/database.hpp"

#include <doctest/doctest.h>

#include <SQLiteCpp/SQLiteCpp.h>
#include <sqlite3.h>

#include <sched.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <filesystem>
#include <functional>
#include <optional>
#include <thread>

#include "store/file_lock.hpp"
#include "support/support.hpp"

namespace store = clerk_sync::store;

TEST_CASE("a fresh file gets every embedded migration, WAL and the contract's tables") {
  clerk_sync::test::temp_dir dir;
  const auto path = (dir / "a.db").string();
  const auto& migrations = store::embedded_migrations();
  REQUIRE_FALSE(migrations.empty());
  CHECK(migrations.front().version == 1);
  CHECK(migrations.front().name == "001_initial.sql");
  {
    store::database db(path);
    CHECK(db.schema_version() == migrations.back().version);
    CHECK(db.native().execAndGet("PRAGMA journal_mode").getString() == "wal");
    for (const char* t : {"users", "referrals", "balances", "sessions", "applied_events", "kafka_offsets", "dead_letters"})
      CHECK_MESSAGE(db.native().tableExists(t), t);
    store::exec(db, "INSERT INTO users(id, updated_at) VALUES ('u1', 1)");
  }
  // Reopening applies nothing twice and keeps the data.
  store::database again(path);
  CHECK(again.schema_version() == migrations.back().version);
  CHECK(again.native().execAndGet("SELECT count(*) FROM users").getInt() == 1);
}

TEST_CASE("a file from a newer binary is refused, an unwritable path too") {
  clerk_sync::test::temp_dir dir;
  const auto path = (dir / "newer.db").string();
  {
    SQLite::Database raw(path, SQLite::OPEN_READWRITE | SQLite::OPEN_CREATE);
    raw.exec("PRAGMA user_version = 999");
  }
  CHECK_THROWS_AS(store::database{path}, store::open_error);
  CHECK_THROWS_AS(store::database{(dir / "missing" / "x.db").string()}, store::open_error);
}

TEST_CASE("another application's file is refused before anything is written to it: no WAL, no tables of ours") {
  // The consumer opens "any" file (it creates a fresh one): pointed at
  // another application's database, it switched it to WAL and added its
  // eight tables; one of a newer user_version it switched to WAL and then
  // refused as "newer than this binary knows".
  clerk_sync::test::temp_dir dir;
  for (const int version : {0, 3, 99}) {
    CAPTURE(version);
    const auto path = (dir / ("foreign" + std::to_string(version) + ".db")).string();
    {
      SQLite::Database raw(path, SQLite::OPEN_READWRITE | SQLite::OPEN_CREATE);
      raw.exec("CREATE TABLE notes(id INTEGER PRIMARY KEY, text TEXT); INSERT INTO notes(text) VALUES ('mine')");
      raw.exec("PRAGMA user_version = " + std::to_string(version));
    }
    CHECK_THROWS_WITH_AS(store::database{path}, doctest::Contains("holds no clerk-sync schema (it holds other tables, notes"),
                         store::open_error);
    SQLite::Database after(path, SQLite::OPEN_READONLY);
    CHECK(after.execAndGet("PRAGMA journal_mode").getString() == "delete");
    CHECK(after.execAndGet("SELECT count(*) FROM sqlite_master WHERE type = 'table'").getInt() == 1);
    CHECK(after.execAndGet("PRAGMA user_version").getInt() == version);
  }
  // A fresh file, and an empty one left by an interrupted first start, are set up.
  const auto empty = (dir / "empty.db").string();
  { SQLite::Database raw(empty, SQLite::OPEN_READWRITE | SQLite::OPEN_CREATE); }
  store::database set_up(empty);
  CHECK(set_up.schema_version() == store::embedded_migrations().back().version);
}

TEST_CASE("a writer waits for another connection's lock, then reports db_error") {
  clerk_sync::test::temp_dir dir;
  const auto path = (dir / "shared.db").string();
  store::database a(path);
  store::database b(path, {std::chrono::milliseconds(100)});
  store::exec(a, "BEGIN IMMEDIATE");
  const auto t0 = std::chrono::steady_clock::now();
  CHECK_THROWS_AS(store::exec(b, "INSERT INTO users(id, updated_at) VALUES ('u', 1)"), store::db_error);
  CHECK(std::chrono::steady_clock::now() - t0 >= std::chrono::milliseconds(90));
  store::exec(a, "COMMIT");
  store::exec(b, "INSERT INTO users(id, updated_at) VALUES ('u', 1)");
  CHECK(a.native().execAndGet("SELECT count(*) FROM users").getInt() == 1);
}

TEST_CASE("several connections opening one fresh file at once all end migrated (WAL switch is retried)") {
  clerk_sync::test::temp_dir dir;
  const auto path = (dir / "race.db").string();
  std::vector<std::thread> threads;
  std::atomic<int> opened{0};
  for (int i = 0; i < 6; ++i)
    threads.emplace_back([&] {
      try {
        store::database db(path);
        if (db.schema_version() == store::embedded_migrations().back().version) ++opened;
      } catch (const std::exception&) {  // counted as not opened
      }
    });
  for (auto& t : threads) t.join();
  CHECK(opened.load() == 6);
}

TEST_CASE("an open waits for another process's migration however long it takes, not its own busy timeout") {
  // Consumers started together after an upgrade: one migrates, the others
  // must wait for it, where each failing at its busy timeout exits 3 and is
  // restarted until systemd's start limit leaves it stopped.
  clerk_sync::test::temp_dir dir;
  const auto path = (dir / "upgrade.db").string();
  const int newest = store::embedded_migrations().back().version;
  clerk_sync::test::file_at_schema(path, newest - 1);
  // A writer (an old consumer's last batch) keeps the first opener in its
  // migration for longer than the second opener's busy timeout.
  SQLite::Database writer(path, SQLite::OPEN_READWRITE);
  writer.exec("PRAGMA journal_mode = WAL");  // as the consumers left it
  writer.exec("BEGIN IMMEDIATE");
  int first_version = 0;
  std::thread first([&] {
    store::database db(path, {.busy_timeout = std::chrono::seconds(10)});
    first_version = db.schema_version();
  });
  bool first_migrating = false;
  for (int i = 0; i < 500 && !first_migrating; ++i) {
    first_migrating = !store::file_lock::try_lock(store::migration_lock_path(path), store::file_lock::mode::exclusive);
    if (!first_migrating) std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  CHECK(first_migrating);
  std::atomic<bool> told{false};
  int second_version = 0;
  std::string second_error;
  std::thread second([&] {
    try {
      store::database db(path, {.busy_timeout = std::chrono::milliseconds(50),
                                .on_migration_wait = [&](const std::string& lock) {
                                  told = lock == store::migration_lock_path(path);
                                }});
      second_version = db.schema_version();
    } catch (const std::exception& e) {
      second_error = e.what();
    }
  });
  // Waiting for the migration, and past its own busy timeout, before the
  // first opener can go on.
  for (int i = 0; i < 500 && !told.load(); ++i) std::this_thread::sleep_for(std::chrono::milliseconds(10));
  std::this_thread::sleep_for(std::chrono::milliseconds(200));  // four of its busy timeouts
  writer.exec("COMMIT");
  first.join();
  second.join();
  CHECK(second_error == "");
  CHECK(first_version == newest);
  CHECK(second_version == newest);
  CHECK(told.load());
}

TEST_CASE("read-only open: reads a migrated file, writes nothing, creates nothing, refuses a non-clerk-sync file") {
  clerk_sync::test::temp_dir dir;
  const auto path = (dir / "live.db").string();
  { store::database rw(path); }

  store::database ro(path, {.read_only = true});
  CHECK(ro.schema_version() == store::embedded_migrations().back().version);
  CHECK_THROWS_AS(store::exec(ro, "DELETE FROM users"), store::db_error);

  const auto missing = (dir / "missing.db").string();
  CHECK_THROWS_AS(store::database(missing, {.read_only = true}), store::open_error);
  CHECK_FALSE(std::filesystem::exists(missing));

  const auto empty = (dir / "empty.db").string();
  { SQLite::Database plain(empty, SQLite::OPEN_READWRITE | SQLite::OPEN_CREATE); plain.exec("CREATE TABLE t(x)"); }
  CHECK_THROWS_AS(store::database(empty, {.read_only = true}), store::open_error);
}

TEST_CASE("checkpoint_wal says whether the whole WAL reached the main file, which an open reader prevents") {
  clerk_sync::test::temp_dir dir;
  const auto path = (dir / "ck.db").string();
  store::database db(path, {std::chrono::milliseconds(100)});
  store::exec(db, "CREATE TABLE t(x)");
  store::exec(db, "INSERT INTO t VALUES (1)");
  {
    SQLite::Database reader(path, SQLite::OPEN_READONLY);
    reader.exec("BEGIN");
    CHECK(reader.execAndGet("SELECT count(*) FROM t").getInt() == 1);  // holds a snapshot of the WAL
    store::exec(db, "INSERT INTO t VALUES (2)");
    CHECK_FALSE(store::checkpoint_wal(db));
    reader.exec("COMMIT");
  }
  CHECK(store::checkpoint_wal(db));
  CHECK(std::filesystem::file_size(path + "-wal") == 0);  // truncated: the main file alone holds both rows
}

namespace {

// Runs `body` in a child with a mount namespace of its own, where `dir` is
// mounted read-only (no file can be created or written there), as
// clerk-sync-auth's unit binds the consumers' folder; the child's exit code
// (`body`'s result, 1 if it threw), or nullopt where no namespace can be
// made (not root).
std::optional<int> in_read_only_folder(const std::filesystem::path& dir, const std::function<int()>& body) {
  const pid_t child = fork();
  REQUIRE(child >= 0);
  if (child == 0) {
    if (unshare(CLONE_NEWNS) != 0 || mount(nullptr, "/", nullptr, MS_REC | MS_PRIVATE, nullptr) != 0) _exit(3);
    if (mount(dir.c_str(), dir.c_str(), nullptr, MS_BIND, nullptr) != 0 ||
        mount(nullptr, dir.c_str(), nullptr, MS_REMOUNT | MS_BIND | MS_RDONLY, nullptr) != 0)
      _exit(3);
    try {
      _exit(body());
    } catch (...) {
      _exit(1);
    }
  }
  int status = 0;
  REQUIRE(waitpid(child, &status, 0) == child);
  REQUIRE(WIFEXITED(status));
  if (WEXITSTATUS(status) == 3) return std::nullopt;
  return WEXITSTATUS(status);
}

}  // namespace

TEST_CASE("a consumer's connection leaves the WAL files, emptied, so that a reader that may not create files opens the database") {
  clerk_sync::test::temp_dir dir;
  for (const bool keep : {true, false}) {
    CAPTURE(keep);
    const std::string name = keep ? "kept.db" : "plain.db";
    const auto path = (dir / name).string();
    {
      store::database db(path, {.keep_wal_files = keep});
      store::exec(db, "CREATE TABLE t(x)");
      store::exec(db, "INSERT INTO t VALUES (1)");
    }
    CHECK(std::filesystem::exists(path + "-wal") == keep);
    CHECK(std::filesystem::exists(path + "-shm") == keep);
    if (keep) CHECK(std::filesystem::file_size(path + "-wal") == 0);  // folded in: the files carry no rows
    const auto read = in_read_only_folder(dir.path(), [&] {
      store::database db(path, {.read_only = true});
      return db.native().execAndGet("SELECT count(*) FROM t").getInt() == 1 ? 0 : 1;
    });
    if (!read) {
      MESSAGE("no mount namespace here (not root?): the read-only folder part is not checked");
      continue;
    }
    CHECK((*read == 0) == keep);  // without the files SQLite cannot read a WAL database it may not create them for
  }
}

TEST_CASE("a file the process may not write is a bad setting at open, not a write failing for ever") {
  clerk_sync::test::temp_dir dir;
  const auto path = (dir / "ro.db").string();
  { store::database db(path, {.keep_wal_files = true}); }
  const auto code = in_read_only_folder(dir.path(), [&] {
    try {
      store::database db(path);
    } catch (const store::open_error& e) {
      return std::string(e.what()).find("read-only to this process") != std::string::npos ? 0 : 2;
    }
    return 1;  // opened: writes would fail later
  });
  if (!code) {
    // Not root: the file's mode is enough to refuse a write.
    REQUIRE(geteuid() != 0);
    std::filesystem::permissions(path, std::filesystem::perms::owner_read);
    CHECK_THROWS_WITH_AS(store::database{path}, doctest::Contains("read-only to this process"), store::open_error);
    return;
  }
  CHECK(*code == 0);
}

TEST_CASE("a file that cannot use WAL is a bad setting at open, not readers blocking the writer") {
  clerk_sync::test::temp_dir dir;
  const auto path = (dir / "nowal.db").string();
  // SQLite's unix-dotfile VFS has no shared memory, as some network file
  // systems: PRAGMA journal_mode = WAL then keeps the rollback journal.
  sqlite3_vfs* const normal = sqlite3_vfs_find(nullptr);
  sqlite3_vfs* const dotfile = sqlite3_vfs_find("unix-dotfile");
  REQUIRE(dotfile != nullptr);
  REQUIRE(sqlite3_vfs_register(dotfile, 1) == SQLITE_OK);
  std::optional<std::string> error;
  try {
    store::database db(path);
  } catch (const store::open_error& e) {
    error = e.what();
  }
  sqlite3_vfs_register(normal, 1);
  REQUIRE(error);
  CHECK(error->find("cannot use WAL (journal_mode stays delete") != std::string::npos);
  // The normal VFS opens the same file in WAL.
  store::database db(path);
  CHECK(db.native().execAndGet("PRAGMA journal_mode").getString() == "wal");
}

TEST_CASE("a lock file is readable by every user whatever the umask of the process that made it") {
  // ctl swap-in run as root under umask 077 makes the files that the
  // consumers, another user, open next.
  clerk_sync::test::temp_dir dir;
  const auto db = (dir / "live.db").string();
  {
    struct umask_for_scope {
      mode_t before = ::umask(077);
      ~umask_for_scope() { ::umask(before); }
    } root_hardened;
    const auto held = store::file_lock::try_lock(store::migration_lock_path(db), store::file_lock::mode::exclusive);
    CHECK(held.has_value());
  }
  struct stat st {};
  REQUIRE(::stat(store::migration_lock_path(db).c_str(), &st) == 0);
  CHECK((st.st_mode & 0777) == 0644);
}
