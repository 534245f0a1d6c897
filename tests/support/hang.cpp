#include "support/hang.hpp"

#include <SQLiteCpp/SQLiteCpp.h>

#include <thread>

#include "support/process.hpp"

namespace clerk_sync::test {

void hang_writes(const std::string& db, const std::string& table, const std::string& event, const std::string& when,
                 int rows) {
  SQLite::Database c(db, SQLite::OPEN_READWRITE);
  c.setBusyTimeout(10'000);
  c.exec("CREATE TABLE IF NOT EXISTS test_hang_rows(x INTEGER)");
  if (c.execAndGet("SELECT count(*) FROM test_hang_rows").getInt() == 0)
    c.exec("WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < " + std::to_string(rows) +
           ") INSERT INTO test_hang_rows SELECT i FROM n");
  const int n = c.execAndGet("SELECT count(*) FROM sqlite_master WHERE name LIKE 'test_hang_%' AND type = 'trigger'").getInt();
  c.exec("CREATE TRIGGER test_hang_" + std::to_string(n) + " AFTER " + event + " ON " + table + " WHEN " + when +
         " BEGIN SELECT count(*) FROM test_hang_rows a, test_hang_rows b, test_hang_rows c; END");
}

void unhang_writes(const std::string& db) {
  SQLite::Database c(db, SQLite::OPEN_READWRITE);
  c.setBusyTimeout(10'000);
  SQLite::Statement triggers(c, "SELECT name FROM sqlite_master WHERE name LIKE 'test_hang_%' AND type = 'trigger'");
  std::string sql;
  while (triggers.executeStep()) sql += "DROP TRIGGER " + triggers.getColumn(0).getString() + ";";
  triggers.reset();
  c.exec(sql + "DROP TABLE IF EXISTS test_hang_rows");
}

bool write_lock_held_for(const std::string& db, std::chrono::milliseconds span) {
  SQLite::Database c(db, SQLite::OPEN_READWRITE);  // busy timeout 0: BUSY at once
  const auto until = std::chrono::steady_clock::now() + span;
  while (std::chrono::steady_clock::now() < until) {
    try {
      c.exec("BEGIN IMMEDIATE");
      c.exec("ROLLBACK");
      return false;
    } catch (const SQLite::Exception&) {  // busy: held
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  return true;
}

bool wait_until_hung(process& p, const std::string& db, std::chrono::milliseconds timeout) {
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  while (std::chrono::steady_clock::now() < deadline && p.running()) {
    if (write_lock_held_for(db, std::chrono::seconds(1))) return p.running();
    std::this_thread::sleep_for(std::chrono::milliseconds(20));  // free: no connection per spin against the child
  }
  return false;
}

}  // namespace clerk_sync::test
