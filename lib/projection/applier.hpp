#pragma once
// Exactly-once application of Clerk events read from Kafka into the
// projection tables. One apply() = one IMMEDIATE transaction holding the
// rows, the applied_events ledger and kafka_offsets of every message in the
// batch: all of it or nothing. Used by clerk-sync-consumer's poll loop and by
// clerk-sync-ctl replay. Not thread-safe: one applier per connection.
// Errors: store::db_error (nothing was written; retry the same batch).

#include <chrono>
#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "projection/mapping.hpp"
#include "store/database.hpp"

namespace clerk_sync::projection {

// One event as read from the log: where it sits (topic, partition, offset),
// the Svix message id and Clerk event type the receiver put in its headers,
// and the raw body as signed. Plain data; no Kafka type.
struct envelope {
  std::string topic;
  std::int32_t partition = 0;
  std::int64_t offset = 0;
  std::string svix_id;
  std::string type;
  std::string body;
};

enum class outcome {
  applied,      // rows written
  stale,        // older than the stored row, a tombstone or a terminal session (no ledger row:
                // a redelivery is stale again)
  duplicate,    // this svix-id was already applied for this projection
  skipped,      // irrelevant to this projection (no ledger row: a redelivery is skipped again)
  dead_letter,  // cannot be decoded or mapped: stored in dead_letters
};
[[nodiscard]] std::string_view name(outcome o);

struct event_result {
  kind projection = kind::users;
  std::string svix_id;
  std::string type;
  std::string user;
  outcome result = outcome::applied;
  std::string detail;  // dead-letter reason, or a conflict worth a log line
  std::string topic;
  std::int32_t partition = 0;
  std::int64_t offset = 0;
};

// A record by its offset and its svix-id, known to be in the log being read.
struct checked_record {
  std::int64_t offset = 0;
  std::string svix_id;
  friend bool operator==(const checked_record&, const checked_record&) = default;
};

class applier {
 public:
  // Applies to `projections` through `db` (which must outlive the applier).
  // Appliers of one process writing the same file may share `write_turn`:
  // each decodes its batch first, then takes the turn only for the
  // transaction (SQLite's busy handler would sleep instead).
  applier(store::database& db, std::vector<kind> projections, std::mutex* write_turn = nullptr);
  ~applier();
  applier(const applier&) = delete;
  applier& operator=(const applier&) = delete;

  // Applies `batch` to every projection in one transaction and moves
  // each (projection, topic, partition) next offset past its last message,
  // storing with it the partition's entry of `checked` (partition -> the
  // latest record the consumer's position check found in the log; for the
  // batch's topic) when that is an earlier record than the last.
  // Returns one result per message and projection, in batch order. Throws
  // store::db_error, after rollback, when the database fails.
  [[nodiscard]] std::vector<event_result> apply(std::span<const envelope> batch,
                                                const std::map<std::int32_t, checked_record>& checked = {});

  [[nodiscard]] const std::vector<kind>& projections() const { return kinds_; }

  // Since construction: the transactions apply() ran (each retry of a batch
  // counts), the time it waited for the shared write turn, and the time it
  // held the turn (or, without one, spent in transactions), of which its
  // thread was on a CPU for `held_cpu`. With several appliers on one turn,
  // the sum of `held` over the run's length says how much their
  // transactions bound them; `held` well above `held_cpu`, that the holder
  // waited meanwhile: for a CPU, the disk, or another process's write lock
  // (BEGIN IMMEDIATE inside the turn). Other users of the turn (the
  // consumer's ledger pruning) are not counted here.
  struct write_totals {
    std::int64_t batches = 0;
    std::chrono::nanoseconds waited{0};
    std::chrono::nanoseconds held{0};
    std::chrono::nanoseconds held_cpu{0};
  };
  [[nodiscard]] const write_totals& totals() const { return totals_; }

  struct statements;  // the prepared statements (applier.cpp only)

 private:
  store::database& db_;
  std::vector<kind> kinds_;
  std::mutex* write_turn_;
  std::unique_ptr<statements> st_;
  write_totals totals_;
};

// What `projection` stores for one partition of a topic: where it resumes,
// the svix-id of the record just before that (absent where the offset was
// stored before migration 003 added the column, in a file migrated since or
// not) and the record stored as checked (see apply(); absent where it is
// the record before the offset, never stored, or the file is from before
// migration 006).
struct stored_position {
  std::int64_t next_offset = 0;
  std::optional<std::string> last_svix_id;
  std::optional<checked_record> checked;
};

// Each partition of `topic` that `projection` stored an offset for. One
// statement reads the three: read apart, a batch committed between them
// paired an offset with a later batch's svix-id, and the record before the
// offset then looked like another event (a topic "recreated": a false
// alarm in ctl status, exit 5 for a consumer). Throws db_error.
[[nodiscard]] std::map<std::int32_t, stored_position> stored_positions(store::database& db, kind projection,
                                                                       const std::string& topic);

// The stored next offsets alone (partition -> offset). Throws db_error.
[[nodiscard]] std::map<std::int32_t, std::int64_t> stored_offsets(store::database& db, kind projection,
                                                                  const std::string& topic);

// Every topic `projection` stores offsets for, sorted; empty before its
// first batch. Throws db_error.
[[nodiscard]] std::vector<std::string> offset_topics(store::database& db, kind projection);

// Forgets the checked record of a partition whose next offset is still
// `next_offset`: the record before it was checked since. Throws db_error.
void forget_checked(store::database& db, kind projection, const std::string& topic, std::int32_t partition,
                    std::int64_t next_offset);

// Moves a partition's stored position back to `next_offset`, with
// `last_svix_id` the record before it: the consumer found that records it
// applied after that one came from another log (the topic recreated while it
// ran), so that resuming there finds the same mismatch. The one write that
// moves a stored offset back. Throws db_error.
void rewind_offset(store::database& db, kind projection, const std::string& topic, std::int32_t partition,
                   std::int64_t next_offset, const std::string& last_svix_id);

// Stores `next_offset` as `projection`'s position in a partition of `topic`
// where it stores none yet, with no record before it applied (svix-id ""):
// where a replay found nothing to read, so that its consumer resumes there,
// not wherever the log starts by then, and status and swap-in check it.
// Throws db_error.
void store_start(store::database& db, kind projection, const std::string& topic, std::int32_t partition,
                 std::int64_t next_offset);

struct dead_letter {
  std::int64_t id = 0;
  // As stored: a name this binary does not know (a hand edit, a newer
  // binary's) stays itself, never read as another projection.
  std::string projection;
  std::string topic;
  std::int32_t partition = 0;
  std::int64_t offset = 0;
  std::string svix_id;
  std::string type;
  std::string reason;
  std::string payload;
  std::int64_t created_at = 0;
  std::optional<std::int64_t> resolved_at;   // re-driven or dismissed
  std::optional<std::int64_t> dismissed_at;  // dismissed: resolved without its rows
};

// Dead letters, oldest first; of one projection when given; resolved ones
// (re-driven) only with include_resolved. Throws db_error.
[[nodiscard]] std::vector<dead_letter> list_dead_letters(store::database& db, std::optional<kind> projection = {},
                                                         bool include_resolved = false);

// One dead letter by id, resolved or not; nullopt when there is none. Throws db_error.
[[nodiscard]] std::optional<dead_letter> find_dead_letter(store::database& db, std::int64_t id);

// One step of a sweep over a projection's ledger in key order: reads at most
// `scan` rows after the svix-id `after`, deletes those applied before
// `applied_before_ms` (ms since epoch) in one short transaction. A sweep
// costs no index (an index on applied_at would add a third to the ledger):
// the work per step is bounded, and the next step starts at `next` (empty
// once the sweep reached the end). Throws db_error.
struct prune_step {
  std::int64_t deleted = 0;
  std::string next;
};
[[nodiscard]] prune_step prune_ledger(store::database& db, kind projection, std::int64_t applied_before_ms,
                                      const std::string& after, int scan);

struct redrive_result {
  bool found = false;     // no pending dead letter has that id
  outcome result = outcome::dead_letter;  // dead_letter: still fails (reason in detail)
  std::string detail;     // the reason, or a conflict the apply met (as the consumer logs it)
  // The letter's, for the line that says what was re-driven (the projection
  // as stored: one this binary does not know is named as it is).
  std::string projection;
  std::string svix_id;
  std::string type;
};

// Re-runs the mapping on a pending dead letter's stored payload (read by id
// alone, inside the transaction); when it now maps, applies it (rows +
// ledger, never offsets) and marks the dead letter resolved in the same
// transaction. Throws db_error.
[[nodiscard]] redrive_result redrive_dead_letter(store::database& db, std::int64_t id);

// Marks a pending dead letter resolved without applying it (an operator's
// decision, `note` saying why, kept after its reason); the letter, or
// nullopt when no pending one has that id. Throws db_error.
[[nodiscard]] std::optional<dead_letter> dismiss_dead_letter(store::database& db, std::int64_t id,
                                                             const std::string& note);

struct projection_status {
  kind projection = kind::users;
  std::int64_t rows = 0;                        // rows in its table
  std::int64_t ledger_rows = 0;                 // applied_events rows
  std::int64_t pending_dead_letters = 0;
  std::optional<std::int64_t> last_applied_at;  // ms since epoch, wall clock of the apply
};

// Row counts and last apply time per projection, for ctl status. Throws db_error.
[[nodiscard]] std::vector<projection_status> status(store::database& db);

}  // namespace clerk_sync::projection
