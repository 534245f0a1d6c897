#include "ops/swap.hpp"

#include <SQLiteCpp/SQLiteCpp.h>
#include <sqlite3.h>

#include <algorithm>
#include <filesystem>
#include <map>
#include <system_error>
#include <vector>

#include "projection/applier.hpp"
#include "store/database.hpp"
#include "store/file_lock.hpp"

namespace clerk_sync::ops {
namespace {

// "a, b, c", for a message.
std::string listed(const std::vector<std::string>& topics) {
  std::string out;
  for (const auto& t : topics) out += (out.empty() ? "" : ", ") + t;
  return out;
}

// The columns of main's `table`, quoted, comma-separated, without `skip`.
std::string columns_of(SQLite::Database& db, const std::string& table, const std::string& skip = "") {
  SQLite::Statement st(db, "SELECT name FROM pragma_table_info(?, 'main')");
  st.bind(1, table);
  std::string out;
  while (st.executeStep()) {
    const std::string name = st.getColumn(0).getString();
    if (name != skip) out += (out.empty() ? "\"" : ", \"") + name + "\"";
  }
  if (out.empty()) throw store::db_error("no table " + table);
  return out;
}

// Replaces main's rows of `table` (those of `projection` when `where` names
// its column) with the rebuilt file's, column by column as main has them
// (the rebuilt file lacking one is an error); the number of rows copied.
int replace_rows(SQLite::Database& db, const std::string& table, const std::string& where,
                 const std::string& projection) {
  const std::string columns = columns_of(db, table);
  const std::string filter = where.empty() ? "" : " WHERE " + where + " = ?";
  SQLite::Statement del(db, "DELETE FROM main." + table + filter);
  if (!where.empty()) del.bind(1, projection);
  del.exec();
  SQLite::Statement ins(db, "INSERT INTO main." + table + " (" + columns + ") SELECT " + columns + " FROM rebuilt." +
                                table + filter);
  if (!where.empty()) ins.bind(1, projection);
  return ins.exec();
}

// The live dead letters of `projection` whose event the replay met (applied
// or dead-lettered it: its svix-id in the rebuilt ledger or letters; a
// letter without a svix-id, by its record's place) or its consumer will
// meet after the swap (at or past the rebuilt offset of its partition) give
// way to the rebuilt file's letters; the others are kept as they are, ids
// and state included (see swapped). A dismissal is the operator's decision,
// not a fact of the log: a dismissed letter stays unless the replay applied
// its event (the consumer meeting its record again leaves it be), and the
// rebuilt file's letter of the same event is not copied beside it.
void replace_dead_letters(SQLite::Database& db, const std::string& projection, swapped& s) {
  const std::string applied = "svix_id IN (SELECT svix_id FROM rebuilt.applied_events WHERE projection = ?1)";
  // `l`'s event is that of `r`, both dead letters.
  const auto same_event = [](const std::string& l, const std::string& r) {
    return "(" + l + ".svix_id = " + r + ".svix_id OR (" + l + ".svix_id IS NULL AND " + r + ".svix_id IS NULL AND " +
           l + ".topic = " + r + ".topic AND " + l + ".partition = " + r + ".partition AND " + l + ".\"offset\" = " +
           r + ".\"offset\"))";
  };
  const std::string met =
      "(" + applied + " OR EXISTS (SELECT 1 FROM rebuilt.dead_letters r WHERE r.projection = ?1 AND " +
      same_event("main.dead_letters", "r") +
      ") OR \"offset\" >= (SELECT o.next_offset FROM rebuilt.kafka_offsets o WHERE o.projection = ?1 "
      "AND o.topic = main.dead_letters.topic AND o.partition = main.dead_letters.partition))";
  SQLite::Statement overruled(db, "SELECT count(*) FROM main.dead_letters WHERE projection = ?1 AND "
                                  "dismissed_at IS NOT NULL AND " + applied);
  overruled.bind(1, projection);
  if (overruled.executeStep()) s.dismissed_applied = overruled.getColumn(0).getInt64();
  overruled.reset();
  // A dismissed one only when the replay applied its event (one without a
  // svix-id never is: `applied` is NULL there, not true).
  SQLite::Statement drop(db, "DELETE FROM main.dead_letters WHERE projection = ?1 AND " + met +
                                 " AND (dismissed_at IS NULL OR (" + applied + ") IS TRUE)");
  drop.bind(1, projection);
  drop.exec();
  SQLite::Statement kept(db, "SELECT count(*), count(resolved_at) - count(dismissed_at) FROM main.dead_letters "
                             "WHERE projection = ?");
  kept.bind(1, projection);
  if (kept.executeStep()) {
    s.kept_dead_letters = kept.getColumn(0).getInt64();
    s.kept_redriven_dead_letters = kept.getColumn(1).getInt64();
  }
  kept.reset();
  // The rebuilt letters but those of an event a kept letter stands for (a
  // dismissed one: no other kept letter's event was met).
  const std::string columns = columns_of(db, "dead_letters", "id");  // ids are the live file's own
  SQLite::Statement copy(db, "INSERT INTO main.dead_letters (" + columns + ") SELECT " + columns +
                                 " FROM rebuilt.dead_letters r WHERE r.projection = ?1 AND NOT EXISTS (SELECT 1 "
                                 "FROM main.dead_letters m WHERE m.projection = ?1 AND " + same_event("m", "r") + ")");
  copy.bind(1, projection);
  s.dead_letters = copy.exec();
}

// Detaches the rebuilt file however the swap ends.
struct attached {
  SQLite::Database& db;
  attached(SQLite::Database& d, const std::string& path) : db(d) {
    SQLite::Statement st(db, "ATTACH DATABASE ? AS rebuilt");
    st.bind(1, path);
    st.exec();
  }
  ~attached() {
    try {
      db.exec("DETACH DATABASE rebuilt");
    } catch (const SQLite::Exception&) {  // NOLINT(bugprone-empty-catch): the connection closes next
    }
  }
  attached(const attached&) = delete;
  attached& operator=(const attached&) = delete;
};

}  // namespace

swap_result swap_in(const std::string& from, const std::string& live,
                             const std::vector<projection::kind>& projections, const std::string& topic,
                             bool accept_incomplete,
                             const std::function<void(const std::string& lock)>& on_migration_wait,
                             const std::function<void()>& before_swap) {
  // Both files must be clerk-sync databases, the rebuilt one at this
  // binary's schema, checked before anything is written: a refusal leaves
  // the live file as it was (never one made, or migrated, by a mistyped
  // path). A live file at an older schema is migrated, as its consumers
  // would on their next start (one stopped across an upgrade).
  {
    std::error_code ec;
    if (std::filesystem::equivalent(from, live, ec))
      throw swap_error("--from and --db name the same file (" + live + ")");
    // Consumers leave their lock files beside a file they ran on; a replay
    // never does. A --from with one, of any projection, is a live file:
    // --from and --db swapped would copy the live rows over the rebuilt ones
    // and report success. A lock file that cannot be looked for refuses too.
    for (const auto k : projection::all_kinds) {
      const auto lock = store::projection_lock_path(from, projection::name(k));
      const bool there = std::filesystem::exists(lock, ec);
      if (ec)
        throw swap_error("cannot tell whether consumers ran on " + from + " (looking for " + lock + ": " +
                         ec.message() + ")");
      if (there)
        throw swap_error(from + " is a file consumers ran on (" + lock +
                         " is beside it), not a replay's: are --from and --db swapped? (If it is a rebuilt file a "
                         "consumer was run on, remove " + lock + " and swap again.)");
    }
  }
  // The live file's lock files are made beside it below: a mistyped --db
  // naming some other file is refused first, with nothing left beside it.
  (void)store::database(live, {.read_only = true});
  std::map<projection::kind, std::vector<std::string>> rebuilt_topics;
  std::map<projection::kind, std::map<std::int32_t, std::int64_t>> rebuilt_offsets;  // of its one topic
  bool incomplete = false;
  {
    store::database rebuilt(from, {.read_only = true});
    // A replay marks its file only once it has read up to its targets: one
    // unmarked is still being written, or its replay was killed (however it
    // was renamed since). Swapped in, its projection would go back to where
    // that replay stopped until the consumer caught up, a ban or a deletion
    // after it undone meanwhile.
    const int mark = rebuilt.native().execAndGet("PRAGMA application_id").getInt();
    // Its replay took a log without its start, or a compacted one: rows
    // of events the log no longer held are missing from it, and swapped in
    // they would go from the live file too, whoever swaps it in.
    incomplete = mark == store::incomplete_replay_id;
    if (incomplete && !accept_incomplete)
      throw swap_error(from + " is the file of a replay that finished with events missing (--allow-incomplete: the "
                       "log did not start at offset 0, or the topic is compacted), whose rows would go from the "
                       "live file too: --accept-incomplete swaps it in anyway");
    if (mark != store::finished_replay_id && mark != store::incomplete_replay_id)
      throw swap_error(from + " is not a finished replay's file (a replay still writing it or killed, one made "
                       "before replays marked their files, or no replay at all): replay again and swap that in");
    const int from_version = rebuilt.schema_version();
    const int newest = store::embedded_migrations().back().version;
    if (from_version != newest)
      throw swap_error(from + " is at schema version " + std::to_string(from_version) + ", this clerk-sync at " +
                       std::to_string(newest) + ": replay again with this version");
    for (const auto k : projections) {
      rebuilt_topics[k] = projection::offset_topics(rebuilt, k);
      if (rebuilt_topics[k].empty())
        throw swap_error(from + " holds no stored offsets for " + std::string(projection::name(k)) +
                         ": it is not a replay of that projection");
      // A replay reads one topic, the one the consumers read: a replay of an
      // old topic swapped in would drop the current topic's offsets, and
      // its consumer would read that topic again from its start, answering
      // from the old topic's rows meanwhile.
      if (rebuilt_topics[k] != std::vector<std::string>{topic})
        throw swap_error(from + " was replayed from " + listed(rebuilt_topics[k]) + ", not from " + topic +
                         ", the topic the consumers read (CLERK_SYNC_TOPIC, --topic)");
      rebuilt_offsets[k] = projection::stored_offsets(rebuilt, k, rebuilt_topics[k].front());
    }
  }
  std::vector<store::file_lock> held;
  for (const auto k : projections) {
    const auto path = store::projection_lock_path(live, projection::name(k));
    try {
      auto l = store::file_lock::try_lock(path, store::file_lock::mode::exclusive);
      if (!l)
        throw swap_error("a consumer of " + std::string(projection::name(k)) + " is running on " + live +
                         " (it holds " + path + "): stop it first (systemctl stop clerk-sync-consumer@" +
                         std::string(projection::name(k)) + ")");
      held.push_back(std::move(*l));
    } catch (const std::system_error& e) {
      throw swap_error(e.what());
    }
  }
  // Read-only until every check has passed: opened for writing, a live
  // file at an older schema is migrated at once.
  std::map<projection::kind, std::int64_t> rewound;
  {
    store::database live_view(live, {.read_only = true});
    for (const auto k : projections) {
      const auto& rebuilt = rebuilt_topics.at(k);
      const auto live_topics = projection::offset_topics(live_view, k);
      // An old topic's offsets may stay beside the current one's after a
      // move to a new topic (ctl status lists both): what matters is that
      // the live projection reads the replayed topic too. (The old topic's
      // go with the swap: the rebuilt file stores none.)
      if (!live_topics.empty() && std::find(live_topics.begin(), live_topics.end(), rebuilt.front()) == live_topics.end())
        throw swap_error(from + " was replayed from " + rebuilt.front() + ", " + live + "'s " +
                         std::string(projection::name(k)) + " stores offsets of " + listed(live_topics) +
                         " only: check CLERK_SYNC_TOPIC (source the environment file), or, after a move to " +
                         rebuilt.front() + ", start its consumers on it once");
      // The consumers are stopped (their locks are held): these stay.
      for (const auto& [partition, at] : projection::stored_offsets(live_view, k, rebuilt.front())) {
        const auto it = rebuilt_offsets[k].find(partition);
        rewound[k] += std::max<std::int64_t>(0, at - (it == rebuilt_offsets[k].end() ? 0 : it->second));
      }
    }
  }
  // The files agree; last, what the caller checks beyond them (the log).
  if (before_swap) before_swap();
  // Keeps the WAL files the consumers keep for the auth service.
  const store::open_options live_options{.must_be = store::open_options::existing::clerk_sync,
                                         .on_migration_wait = on_migration_wait};
  store::database db(live, live_options);
  swap_result out{.projections = {}, .incomplete = incomplete};
  try {
    auto& c = db.native();
    const attached guard(c, from);
    SQLite::Transaction tx(c, SQLite::TransactionBehavior::IMMEDIATE);
    // A live file that was a replay moved into place whole keeps no mark.
    (void)store::clear_replay_mark(db);
    for (const auto k : projections) {
      const std::string p(projection::name(k));
      swapped s{k};
      s.rewound = rewound[k];
      s.rows = replace_rows(c, p, "", p);
      s.ledger_rows = replace_rows(c, "applied_events", "projection", p);
      s.offsets = replace_rows(c, "kafka_offsets", "projection", p);
      replace_dead_letters(c, p, s);
      out.projections.push_back(s);
    }
    tx.commit();
  } catch (const SQLite::Exception& e) {
    // SQLite says only "database is locked": the operator must learn which
    // file, that nothing of the swap was kept (the transaction rolled back
    // before this runs), and that it may simply be run again.
    const int code = e.getErrorCode() & 0xff;
    if (code == SQLITE_BUSY || code == SQLITE_LOCKED)
      throw swap_error("could not swap into " + live + ": another process held its write lock for more than " +
                       std::to_string(live_options.busy_timeout.count()) +
                       " ms (another projection's consumer in a long batch, a dead-letters retry?); nothing was "
                       "swapped in, the live file is unchanged: retry swap-in");
    throw store::db_error("could not swap into " + live + ": " + e.what() +
                          "; nothing was swapped in, the live file is unchanged");
  }
  return out;
}

}  // namespace clerk_sync::ops
