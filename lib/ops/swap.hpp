#pragma once
// `ctl swap-in`: projections rebuilt by `replay` put into the live database
// in place of its own, each with what makes it resumable: its table, its
// ledger rows, its stored offsets and its dead letters, in one transaction.
// A consumer of a projection must not run on that file meanwhile: it would
// go on from the offsets it had read and write over the new ones.

#include <cstdint>
#include <functional>
#include <stdexcept>
#include <string>
#include <vector>

#include "projection/mapping.hpp"

namespace clerk_sync::ops {

struct swap_error : std::runtime_error {
  using std::runtime_error::runtime_error;
};

struct swapped {
  projection::kind projection = projection::kind::users;
  std::int64_t rows = 0;
  std::int64_t ledger_rows = 0;
  std::int64_t offsets = 0;
  std::int64_t dead_letters = 0;  // the rebuilt file's, copied
  // The live file's dead letters of events the replay did not meet (neither
  // applied nor dead-lettered in the rebuilt file: a record the log no
  // longer held) and its consumer will not meet after the swap (before the
  // rebuilt offset): kept as they are, with their ids, since the letter may
  // be the event's last copy; and the dismissed ones whose event the
  // replay did not apply, met or not (the rebuilt file's letter of it is
  // not copied). The others go: the rebuilt file has their event's
  // outcome, or the consumer will give it.
  std::int64_t kept_dead_letters = 0;
  // Of those, the ones re-driven: their event is in the live rows but not
  // in the rebuilt ones.
  std::int64_t kept_redriven_dead_letters = 0;
  // Dismissed live letters whose event the replay applied (a mapping fixed
  // since): gone with the swap, their events in the rows.
  std::int64_t dismissed_applied = 0;
  // Records the live file's stored offsets were past the rebuilt file's
  // (from 0 where the rebuilt file stores none: exact while the log keeps
  // every record, as topic ensure makes it): until its consumer has read
  // them again, the projection answers as of the replay (a ban or a
  // deletion since then undone meanwhile).
  std::int64_t rewound = 0;
};

struct swap_result {
  std::vector<swapped> projections;  // in the order asked
  // `from` finished with events missing (store::incomplete_replay_id),
  // taken as asked (accept_incomplete).
  bool incomplete = false;
};

// Replaces, in one transaction of the file at `live`, each projection's
// rows, ledger rows, stored offsets and dead letters with those of `from`
// (but the live dead letters of events the replay did not meet; see swapped),
// holding each projection's lock (store::projection_lock_path) exclusively
// meanwhile. Throws swap_error while a consumer of one runs on `live` (it
// holds that lock shared), or when `from` is not a rebuild of them for this
// file (no stored offsets for a projection, offsets of another topic than
// `topic`, which the consumers read, or of more than one, a replay that
// finished knowing events missing unless `accept_incomplete`, a live file that
// stores offsets of other topics only, another schema version); store::db_error or store::open_error when a file cannot be read
// or written. A live file at an older schema is migrated first; while
// another process migrates it, the swap waits for that, after one call of
// `on_migration_wait` with the lock file's path (store::open_options).
// `before_swap` runs once both files passed every check, the locks held,
// before anything is written: a check of the caller's (ctl's of the rebuilt
// offsets against the log), which refuses by throwing.
[[nodiscard]] swap_result swap_in(const std::string& from, const std::string& live,
                                           const std::vector<projection::kind>& projections,
                                           const std::string& topic, bool accept_incomplete,
                                           const std::function<void(const std::string& lock)>& on_migration_wait = {},
                                           const std::function<void()>& before_swap = {});

}  // namespace clerk_sync::ops
