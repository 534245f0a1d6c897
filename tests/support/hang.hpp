#pragma once
// Stopping a process inside an SQLite transaction at a chosen write, so that
// a test can kill it exactly there: a trigger whose body takes hours (a
// cross join, since triggers allow no WITH), and a way to see that the
// process is stuck in it.

#include <chrono>
#include <string>

namespace clerk_sync::test {

// Every `event` ("INSERT", "UPDATE", "UPDATE OF column") of `table` in the
// database at `db` for which `when` (an SQL condition on NEW) holds hangs
// inside its transaction, after the writes before it, counting rows³ rows:
// 3,000 takes hours; 1,100 about 12 s on a 2-core VM (more on a loaded one).
// One row count per database.
void hang_writes(const std::string& db, const std::string& table, const std::string& event, const std::string& when,
                 int rows = 3'000);

// Removes what hang_writes() added, so that the next run gets through.
void unhang_writes(const std::string& db);

// Whether another connection has held the write lock for all of `span`: a
// transaction that hangs, not one of the short ones a process runs.
[[nodiscard]] bool write_lock_held_for(const std::string& db, std::chrono::milliseconds span);

class process;

// Waits up to `timeout` until `p`, still running, has held the write lock of
// `db` for a second (write_lock_held_for): stuck in a hanging write. False
// when it ended or never got there.
[[nodiscard]] bool wait_until_hung(process& p, const std::string& db, std::chrono::milliseconds timeout);

}  // namespace clerk_sync::test
