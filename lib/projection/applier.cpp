#include "projection/applier.hpp"

#include <SQLiteCpp/SQLiteCpp.h>

#include <algorithm>
#include <array>
#include <chrono>
#include <ctime>

namespace clerk_sync::projection {
namespace {

// The CPU time the calling thread has used; nothing if the clock fails
// (then a turn's held CPU is left out of the totals, not counted wrong).
std::optional<std::chrono::nanoseconds> thread_cpu() {
  timespec t{};
  if (clock_gettime(CLOCK_THREAD_CPUTIME_ID, &t) != 0) return std::nullopt;
  return std::chrono::seconds(t.tv_sec) + std::chrono::nanoseconds(t.tv_nsec);
}

std::int64_t now_ms() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::system_clock::now().time_since_epoch())
      .count();
}

// Text bound without SQLite's copy of it (SQLITE_STATIC): the value must
// outlive the statement's next reset, which every write here does right
// after its step, so temporaries are refused at compile time.
void bind_text(SQLite::Statement& st, int i, const std::string& v) { st.bindNoCopy(i, v); }
void bind_text(SQLite::Statement&, int, std::string&&) = delete;

void bind_opt(SQLite::Statement& st, int i, const std::optional<std::string>& v) {
  if (v)
    st.bindNoCopy(i, *v);
  else
    st.bind(i);
}
void bind_opt(SQLite::Statement&, int, std::optional<std::string>&&) = delete;

void bind_opt(SQLite::Statement& st, int i, const std::optional<std::int64_t>& v) {
  if (v)
    st.bind(i, *v);
  else
    st.bind(i);
}

// A message decoded once and shared by every projection of the batch.
struct decoded {
  std::string svix_id;
  std::variant<event::clerk_event, event::decode_error> event;
  std::string user;
  std::string type;
};

decoded decode_message(const envelope& m) {
  decoded d{m.svix_id, event::decode(m.body), "", ""};
  if (const auto* e = std::get_if<event::clerk_event>(&d.event)) {
    d.type = e->type;
    if (const auto u = event::user_id_of(*e); !u.empty()) d.user = std::string(u);
  } else {
    d.type = m.type;
  }
  return d;
}

constexpr const char* terminal_list = "('ended','removed','revoked','expired','abandoned','replaced')";

// Last writer wins on updated_at, and a tombstone is final for anything not
// newer than the deletion.
// Last writer wins: whether an event at `at` (an SQL expression) may write
// over `table`'s row: not older than it, and later than its tombstone.
std::string writable_at(const std::string& table, const std::string& at) {
  return at + " >= " + table + ".updated_at AND (" + table + ".deleted_at IS NULL OR " + at + " > " + table +
         ".deleted_at)";
}

std::string upsert_guard(const std::string& table) { return " WHERE " + writable_at(table, "excluded.updated_at"); }

}  // namespace

std::string_view name(outcome o) {
  switch (o) {
    case outcome::applied: return "applied";
    case outcome::stale: return "stale";
    case outcome::duplicate: return "duplicate";
    case outcome::skipped: return "skipped";
    case outcome::dead_letter: return "dead_letter";
  }
  return "?";
}

// Prepared once per connection; each use starts with reset().
struct applier::statements {
  explicit statements(SQLite::Database& db)
      : ledger_has(db, "SELECT 1 FROM applied_events WHERE projection = ? AND svix_id = ?"),
        ledger_add(db,
                   "INSERT INTO applied_events(projection, svix_id, type, user_id, outcome, topic, partition, "
                   "\"offset\", applied_at) VALUES (?,?,?,?,?,?,?,?,?)"),
        offset_set(db,
                   "INSERT INTO kafka_offsets(projection, topic, partition, next_offset, updated_at, "
                   "last_svix_id, checked_offset, checked_svix_id) VALUES (?,?,?,?,?,?,?,?) "
                   "ON CONFLICT(projection, topic, partition) DO UPDATE SET "
                   // Offsets only move forward, even if a late batch of an evicted member
                   // commits; the record ids move with the offset they were stored with.
                   "last_svix_id = CASE WHEN excluded.next_offset >= next_offset THEN excluded.last_svix_id "
                   "ELSE last_svix_id END, "
                   "checked_offset = CASE WHEN excluded.next_offset >= next_offset THEN excluded.checked_offset "
                   "ELSE checked_offset END, "
                   "checked_svix_id = CASE WHEN excluded.next_offset >= next_offset THEN excluded.checked_svix_id "
                   "ELSE checked_svix_id END, "
                   "next_offset = max(next_offset, excluded.next_offset), updated_at = excluded.updated_at"),
        dead_letter_add(db,
                        "INSERT INTO dead_letters(projection, topic, partition, \"offset\", svix_id, type, reason, "
                        "payload, created_at) VALUES (?,?,?,?,?,?,?,?,?) "
                        // A redelivery of the same broken event (by svix-id; without
                        // one, the same record read again): the first dead letter stands.
                        "ON CONFLICT DO NOTHING"),
        user_upsert(db,
                    "INSERT INTO users(id, email, first_name, last_name, username, image_url, role, banned, "
                    "created_at, updated_at, last_sign_in_at) VALUES (?,?,?,?,?,?,?,?,?,?,?) "
                    "ON CONFLICT(id) DO UPDATE SET email = excluded.email, first_name = excluded.first_name, "
                    "last_name = excluded.last_name, username = excluded.username, image_url = excluded.image_url, "
                    "role = excluded.role, banned = excluded.banned, created_at = excluded.created_at, "
                    "updated_at = excluded.updated_at, last_sign_in_at = excluded.last_sign_in_at" +
                        upsert_guard("users")),
        user_tombstone(db,
                       "INSERT INTO users(id, deleted_at) VALUES (?, ?) ON CONFLICT(id) DO UPDATE SET "
                       "deleted_at = excluded.deleted_at WHERE users.deleted_at IS NULL"),
        referral_get(db,
                     "SELECT referrer_id, referrer_since, updated_at, deleted_at, referral_code, "
                     "pending_referral_code, referral_code_since, referral_code_broken_at FROM referrals "
                     "WHERE user_id = ?"),
        // The holder of a code, and whether its claim began after this
        // one's (updated_at ?1 of user ?2): then the code is this one's. A
        // holder is live: a deleted user gives up its code.
        referral_code_owner(db,
                            "SELECT user_id, (referral_code_since, user_id) > (?1, ?2) FROM referrals "
                            "WHERE referral_code = ?3 AND user_id <> ?2"),
        // The whole row as upsert_referral decided it: the ordering rules
        // need the stored row, so they are decided in C++, not in a guard.
        referral_upsert(db,
                        "INSERT INTO referrals(user_id, referral_code, referrer_id, updated_at, pending_referral_code, "
                        "referral_code_since, referrer_since, referral_code_broken_at) VALUES (?,?,?,?,?,?,?,?) "
                        "ON CONFLICT(user_id) DO UPDATE SET "
                        "referral_code = excluded.referral_code, referrer_id = excluded.referrer_id, "
                        "updated_at = excluded.updated_at, pending_referral_code = excluded.pending_referral_code, "
                        "referral_code_since = excluded.referral_code_since, referrer_since = excluded.referrer_since, "
                        "referral_code_broken_at = excluded.referral_code_broken_at"),
        // A holder whose claim began later than another's: it waits now.
        referral_displace(db,
                          "UPDATE referrals SET pending_referral_code = referral_code, referral_code = NULL "
                          "WHERE user_id = ?"),
        // Who gets a code given up: of the live users waiting for it, the
        // one whose claim began first. A user that waits holds no code.
        referral_waiting(db,
                         "SELECT user_id, referral_code_since FROM referrals WHERE pending_referral_code = ? "
                         "AND deleted_at IS NULL ORDER BY referral_code_since, user_id LIMIT 1"),
        referral_take(db,
                      "UPDATE referrals SET referral_code = pending_referral_code, pending_referral_code = NULL "
                      "WHERE user_id = ?"),
        // A deleted user holds no code: the one it held stays named in
        // pending_referral_code (a deleted user waits for nothing).
        referral_tombstone(db,
                           "INSERT INTO referrals(user_id, deleted_at) VALUES (?, ?) ON CONFLICT(user_id) DO UPDATE "
                           "SET deleted_at = excluded.deleted_at, "
                           "pending_referral_code = coalesce(referrals.pending_referral_code, referrals.referral_code), "
                           "referral_code = NULL WHERE referrals.deleted_at IS NULL"),
        balance_upsert(db,
                       "INSERT INTO balances(user_id, points_balance, g2a_balance, nft_count, updated_at) "
                       "VALUES (?,?,?,?,?) ON CONFLICT(user_id) DO UPDATE SET "
                       "points_balance = excluded.points_balance, g2a_balance = excluded.g2a_balance, "
                       "nft_count = excluded.nft_count, updated_at = excluded.updated_at" +
                           upsert_guard("balances")),
        // A row the upsert's guard would keep from this user's event at ?2.
        balance_newer(db, "SELECT 1 FROM balances WHERE user_id = ?1 AND NOT (" + writable_at("balances", "?2") + ")"),
        balance_tombstone(db,
                          "INSERT INTO balances(user_id, deleted_at) VALUES (?, ?) ON CONFLICT(user_id) DO UPDATE "
                          "SET deleted_at = excluded.deleted_at WHERE balances.deleted_at IS NULL"),
        session_upsert(db,
                       std::string("INSERT INTO sessions(id, user_id, status, created_at, updated_at, "
                                   "last_active_at, expire_at, ended_at) VALUES (?,?,?,?,?,?,?,?) "
                                   "ON CONFLICT(id) DO UPDATE SET user_id = excluded.user_id, "
                                   "status = excluded.status, created_at = excluded.created_at, "
                                   "updated_at = excluded.updated_at, last_active_at = excluded.last_active_at, "
                                   "expire_at = excluded.expire_at, ended_at = excluded.ended_at WHERE ") +
                           // A terminal session is never revived, and a terminal event
                           // ends a live one whatever its updated_at (Clerk's terminal
                           // states are final: a revocation stamped before the last
                           // live update, clock skew, must still end the session).
                           // Between two live states, or two terminal ones, the newer
                           // update wins.
                           "(sessions.status NOT IN " + terminal_list + " AND (excluded.status IN " +
                           terminal_list + " OR excluded.updated_at >= sessions.updated_at)) OR (sessions.status IN " +
                           terminal_list + " AND excluded.status IN " + terminal_list +
                           " AND excluded.updated_at > sessions.updated_at)") {}

  void reset_all() {
    for (auto* st : {&ledger_has, &ledger_add, &offset_set, &dead_letter_add, &user_upsert, &user_tombstone,
                     &referral_get, &referral_code_owner, &referral_upsert, &referral_displace, &referral_waiting,
                     &referral_take, &referral_tombstone, &balance_upsert, &balance_newer, &balance_tombstone,
                     &session_upsert})
      (void)st->tryReset();
  }

  SQLite::Statement ledger_has, ledger_add, offset_set, dead_letter_add;
  SQLite::Statement user_upsert, user_tombstone;
  SQLite::Statement referral_get, referral_code_owner, referral_upsert, referral_displace, referral_waiting;
  SQLite::Statement referral_take, referral_tombstone;
  SQLite::Statement balance_upsert, balance_newer, balance_tombstone;
  SQLite::Statement session_upsert;
};

namespace {

using statements = applier::statements;

// Runs a prepared write; true when it changed a row (an upsert whose guard
// refused it changes nothing: the event was stale).
bool run(SQLite::Statement& st) {
  const int changed = st.exec();
  st.reset();
  return changed > 0;
}

outcome upsert_user(statements& s, const event::user& u, std::string& detail) {
  const user_row r = map_user(u);
  auto& st = s.user_upsert;
  st.reset();
  st.clearBindings();
  bind_text(st, 1, r.id);
  bind_opt(st, 2, r.email);
  bind_opt(st, 3, r.first_name);
  bind_opt(st, 4, r.last_name);
  bind_opt(st, 5, r.username);
  bind_opt(st, 6, r.image_url);
  bind_text(st, 7, r.role);
  st.bind(8, r.banned ? 1 : 0);
  bind_opt(st, 9, r.created_at);
  st.bind(10, r.updated_at);
  bind_opt(st, 11, r.last_sign_in_at);
  if (!run(st)) return outcome::stale;  // nothing written, so nothing kept or refused to say
  if (r.rejected_role) detail = "unknown role kept as spacer: " + *r.rejected_role;
  return outcome::applied;
}

void add_detail(std::string& detail, const std::string& more) { detail += (detail.empty() ? "" : "; ") + more; }

// The live user that waits for `code` since the earliest, and when its
// claim began; nothing when no one waits.
std::optional<std::pair<std::string, std::int64_t>> first_waiting(statements& s, const std::string& code) {
  auto& waiting = s.referral_waiting;
  waiting.reset();
  bind_text(waiting, 1, code);
  std::optional<std::pair<std::string, std::int64_t>> out;
  if (waiting.executeStep()) out.emplace(waiting.getColumn(0).getString(), waiting.getColumn(1).getInt64());
  waiting.reset();
  return out;
}

// Hands a code its holder gave up to the live user that waits for it since
// the earliest, if any. That user held no code, so nothing else moves.
void hand_over(statements& s, const std::string& code, std::string& detail) {
  const auto taker = first_waiting(s, code);
  if (!taker) return;
  auto& take = s.referral_take;
  take.reset();
  bind_text(take, 1, taker->first);
  run(take);
  add_detail(detail, "referral_code " + code + " released to " + taker->first);
}

std::optional<std::string> text_or_null(const SQLite::Column& c) {
  return c.isNull() ? std::nullopt : std::optional<std::string>(c.getString());
}
std::optional<std::int64_t> int_or_null(const SQLite::Column& c) {
  return c.isNull() ? std::nullopt : std::optional<std::int64_t>(c.getInt64());
}

// A user's referrals row as stored (all empty when there is none).
struct referral_state {
  std::optional<std::string> referrer;
  std::optional<std::int64_t> referrer_since;
  std::int64_t updated_at = 0;  // 0: no update applied (no row, or a tombstone alone)
  std::optional<std::int64_t> deleted_at;
  std::optional<std::string> held;     // referral_code
  std::optional<std::string> pending;  // pending_referral_code
  std::optional<std::int64_t> since;   // referral_code_since
  std::optional<std::int64_t> broken_at;
  // The code the row's latest event named, held or waited for.
  [[nodiscard]] const std::optional<std::string>& named() const { return held ? held : pending; }
};

referral_state read_referral(statements& s, const std::string& id) {
  auto& get = s.referral_get;
  get.reset();
  bind_text(get, 1, id);
  referral_state r;
  if (get.executeStep()) {
    r.referrer = text_or_null(get.getColumn(0));
    r.referrer_since = int_or_null(get.getColumn(1));
    r.updated_at = get.getColumn(2).getInt64();
    r.deleted_at = int_or_null(get.getColumn(3));
    r.held = text_or_null(get.getColumn(4));
    r.pending = text_or_null(get.getColumn(5));
    r.since = int_or_null(get.getColumn(6));
    r.broken_at = int_or_null(get.getColumn(7));
  }
  get.reset();
  return r;
}

// Attribution is set once, by the earliest event (Clerk's updated_at, not
// arrival) that names a referrer: a different one named later is a
// conflict to look at, never an overwrite; one named earlier and applied
// later replaces it, and the one replaced is the conflict. A referrer with
// no referrer_since (kept from before migration 007: when it was named is
// not known) is never replaced.
void attribute(const referral_state& old, const referral_row& r, referral_state& now, std::string& detail) {
  if (!r.referrer_id) return;
  if (old.referrer && !(old.referrer_since && r.updated_at < *old.referrer_since)) {
    if (*r.referrer_id != *old.referrer)
      detail = "referrer conflict: kept " + *old.referrer + ", refused " + *r.referrer_id;
    return;
  }
  if (old.referrer && *old.referrer != *r.referrer_id)
    detail = "referrer conflict: kept " + *r.referrer_id + ", refused " + *old.referrer;
  now.referrer = r.referrer_id;
  now.referrer_since = r.updated_at;
}

// Dates the claim of the code the row names after `r`: referral_code_since,
// the updated_at of the first event of the unbroken run of the user's
// events naming it, by Clerk's order, not arrival. An event not older than
// the row names the code from now on (the same code carries its claim
// over). An older one names nothing from now on, but dates the claim: if
// it is later than the last break known (referral_code_broken_at) and
// names the code, the claim began at it if not before; naming another
// code, it is the last break, and if the claim began before it, the claim
// is dated from the row's latest event, the only one of the run after the
// break that bounded state still knows (README, "referrals").
void date_claim(const referral_state& old, const referral_row& r, bool newer, referral_state& now) {
  const auto& named = old.named();
  if (newer) {
    if (!r.referral_code) {
      now.since = now.broken_at = std::nullopt;
    } else if (r.referral_code != named || !old.since) {
      now.since = r.updated_at;
      // The row's latest event named another code (or none): the break.
      now.broken_at = old.updated_at != 0 ? std::optional(old.updated_at) : std::nullopt;
    }
    return;
  }
  if (!named || (old.broken_at && r.updated_at <= *old.broken_at)) return;
  const std::int64_t since = old.since.value_or(old.updated_at);
  if (r.referral_code == named) {
    if (r.updated_at < since) now.since = r.updated_at;
  } else {
    now.broken_at = r.updated_at;
    if (r.updated_at >= since) now.since = old.updated_at;
  }
}

// Codes are unique, and who holds one must not depend on the order events
// were applied in: two users' events sit in different partitions, with no
// order between them, and a user's own may arrive out of order (Svix
// retries). The rule: a code belongs to the live user whose claim of it
// began first (referral_code_since, see date_claim; then the smaller user
// id); the others wait in pending_referral_code. A user holds only the code
// its latest event names. Kept true here one event at a time: only the code
// this user names and the one it gave up can change hands. An event older
// than the row writes none of its columns but the dates (and the referrer
// they decide).
outcome upsert_referral(statements& s, const event::user& u, std::string& detail) {
  const auto mapped = map_referral(u);
  const referral_state old = read_referral(s, u.id);
  if (const auto* err = std::get_if<mapping_error>(&mapped)) {
    // A dead letter even when older than the row: an older event still
    // dates a claim and may name the earliest referrer. Stale only behind
    // a deletion, which is final.
    if (old.deleted_at && u.updated_at <= *old.deleted_at) return outcome::stale;
    detail = err->reason;
    return outcome::dead_letter;
  }
  const auto& r = std::get<referral_row>(mapped);
  const bool deleted = old.deleted_at.has_value();
  // A tombstone is final for anything not newer than the deletion.
  if (deleted && r.updated_at <= *old.deleted_at) return outcome::stale;
  const bool newer = r.updated_at >= old.updated_at;
  referral_state now = old;
  attribute(old, r, now, detail);
  date_claim(old, r, newer, now);
  // Nothing to write: stale, though a refused referrer is still a conflict to log.
  if (!newer && now.referrer_since == old.referrer_since && now.since == old.since && now.broken_at == old.broken_at)
    return outcome::stale;
  if (r.self_referral_refused) add_detail(detail, "self-referral refused");
  const std::optional<std::string> named = newer ? r.referral_code : old.named();
  const std::int64_t updated_at = newer ? r.updated_at : old.updated_at;
  const std::int64_t since = now.since.value_or(updated_at);  // set whenever a code is named
  bool holds = false;
  if (named && !deleted) {
    if (old.held == named) {
      // Held already; a claim dated later now may come after a waiter's.
      holds = true;
      if (now.since > old.since)
        if (const auto w = first_waiting(s, *named); w && std::pair(w->second, w->first) < std::pair(since, r.user_id))
          holds = false;
    } else {
      auto& owner = s.referral_code_owner;
      owner.reset();
      owner.bind(1, since);
      bind_text(owner, 2, r.user_id);
      bind_text(owner, 3, *named);
      if (!owner.executeStep()) {
        holds = true;  // no holder, so no one waits for it either
      } else {
        const std::string holder = owner.getColumn(0).getString();
        holds = owner.getColumn(1).getInt() != 0;
        owner.reset();
        if (holds) {
          // Cleared before this row takes it: the code stays unique at every step.
          auto& displace = s.referral_displace;
          displace.reset();
          bind_text(displace, 1, holder);
          run(displace);
          add_detail(detail, "referral_code conflict: " + *named + " taken from " + holder +
                                 ", a later claim, which waits until it is released");
        } else {
          add_detail(detail, "referral_code conflict: " + *named + " belongs to " + holder +
                                 ", an earlier claim; waiting until it is released");
        }
      }
      owner.reset();
    }
  }
  const std::optional<std::string> code = holds ? named : std::nullopt;
  const std::optional<std::string> pending = holds ? std::nullopt : named;
  auto& st = s.referral_upsert;
  st.reset();
  st.clearBindings();
  bind_text(st, 1, r.user_id);
  bind_opt(st, 2, code);
  bind_opt(st, 3, now.referrer);
  st.bind(4, updated_at);
  bind_opt(st, 5, pending);
  bind_opt(st, 6, now.since);
  bind_opt(st, 7, now.referrer_since);
  bind_opt(st, 8, now.broken_at);
  run(st);
  // The code this user held and no longer does may be what another waits for.
  if (old.held && old.held != code) hand_over(s, *old.held, detail);
  return outcome::applied;
}

// A deleted user gives up the code it held, to whoever waits for it.
outcome tombstone_referral(statements& s, const std::string& id, std::int64_t deleted_at, std::string& detail) {
  const std::optional<std::string> held = read_referral(s, id).held;
  auto& st = s.referral_tombstone;
  st.reset();
  bind_text(st, 1, id);
  st.bind(2, deleted_at);
  if (!run(st)) return outcome::stale;
  if (held) hand_over(s, *held, detail);
  return outcome::applied;
}

outcome upsert_balance(statements& s, const balance_row& r) {
  auto& st = s.balance_upsert;
  st.reset();
  bind_text(st, 1, r.user_id);
  st.bind(2, r.points_balance);
  bind_text(st, 3, r.g2a_balance);
  st.bind(4, r.nft_count);
  st.bind(5, r.updated_at);
  return run(st) ? outcome::applied : outcome::stale;
}

// Whether the balance row is newer than `u` (or its tombstone not older):
// then nothing of the event would be written, whatever its amounts hold.
bool balance_is_newer(statements& s, const event::user& u) {
  auto& st = s.balance_newer;
  st.reset();
  bind_text(st, 1, u.id);
  st.bind(2, u.updated_at);
  const bool newer = st.executeStep();
  st.reset();
  return newer;
}

outcome tombstone(SQLite::Statement& st, const std::string& id, std::int64_t deleted_at) {
  st.reset();
  bind_text(st, 1, id);
  st.bind(2, deleted_at);
  return run(st) ? outcome::applied : outcome::stale;
}

outcome upsert_session(statements& s, const event::session& e) {
  const session_row r = map_session(e);
  auto& st = s.session_upsert;
  st.reset();
  st.clearBindings();
  bind_text(st, 1, r.id);
  bind_text(st, 2, r.user_id);
  bind_text(st, 3, r.status);
  bind_opt(st, 4, r.created_at);
  st.bind(5, r.updated_at);
  bind_opt(st, 6, r.last_active_at);
  bind_opt(st, 7, r.expire_at);
  bind_opt(st, 8, r.ended_at);
  return run(st) ? outcome::applied : outcome::stale;
}

// The user a user-derived projection should write from this event, if any:
// the user of user.created/updated, or the one embedded in a session event.
const event::user* user_of(const event::clerk_event& e) {
  if (const auto* u = std::get_if<event::user>(&e.data)) return u;
  if (const auto* s = std::get_if<event::session>(&e.data)) return s->embedded_user ? &*s->embedded_user : nullptr;
  return nullptr;
}

// Why a session's embedded user was refused, if it was: what it would have
// done to a user-derived row is unknown, so those projections dead-letter it.
const std::string* refused_embedded_user(const event::clerk_event& e) {
  const auto* s = std::get_if<event::session>(&e.data);
  return s && !s->embedded_user_error.empty() ? &s->embedded_user_error : nullptr;
}

// The mapping of one decoded event for one projection; writes the rows
// (inside the caller's transaction) but neither ledger nor offsets.
outcome map_and_write(statements& s, kind k, const event::clerk_event& e, std::string& detail) {
  // Published, acknowledged, and no table changes: worth a line, as a type
  // Clerk added (or a typo'd test event) would otherwise pass unseen.
  if (std::holds_alternative<event::other>(e.data)) {
    detail = "event type " + e.type + " is not projected";
    return outcome::skipped;
  }
  const auto* deleted = std::get_if<event::user_deleted>(&e.data);
  if (k != kind::sessions) {
    if (const auto* why = refused_embedded_user(e)) {
      detail = *why;
      return outcome::dead_letter;
    }
  }
  switch (k) {
    case kind::users:
      if (deleted) return tombstone(s.user_tombstone, deleted->id, e.timestamp_ms);
      if (const auto* u = user_of(e)) return upsert_user(s, *u, detail);
      return outcome::skipped;
    case kind::referrals:
      if (deleted) return tombstone_referral(s, deleted->id, e.timestamp_ms, detail);
      if (const auto* u = user_of(e)) return upsert_referral(s, *u, detail);
      return outcome::skipped;
    case kind::balances: {
      if (deleted) return tombstone(s.balance_tombstone, deleted->id, e.timestamp_ms);
      const auto* u = user_of(e);
      if (!u) return outcome::skipped;
      auto row = map_balance(*u);
      if (auto* err = std::get_if<mapping_error>(&row)) {
        // Bad amounts a newer row supersedes are stale like any older event:
        // no dead letter for them, and a re-drive resolves one superseded since.
        if (balance_is_newer(s, *u)) return outcome::stale;
        detail = err->reason;
        return outcome::dead_letter;
      }
      return upsert_balance(s, std::get<balance_row>(row));
    }
    case kind::sessions:
      if (const auto* sess = std::get_if<event::session>(&e.data)) return upsert_session(s, *sess);
      return outcome::skipped;
  }
  return outcome::skipped;
}

// What one event did to one projection. The write turn keeps only this;
// the result line (event_result, its strings copied) is built after it.
struct written {
  outcome result = outcome::applied;
  std::string detail;  // dead-letter reason, or a conflict worth a log line
};

event_result result_of(kind k, const envelope& m, const decoded& d, written w) {
  return {k, d.svix_id, d.type, d.user, w.result, std::move(w.detail), m.topic, m.partition, m.offset};
}

// The projection's name as the ledger and offset tables store it, kept for
// binding without a copy.
const std::string& stored_name(kind k) {
  static const std::array<std::string, 4> names{std::string(name(kind::users)), std::string(name(kind::referrals)),
                                                std::string(name(kind::balances)), std::string(name(kind::sessions))};
  return names[static_cast<std::size_t>(k)];
}

// One event for one projection: ledger check, mapping, rows, ledger row.
// Dead letters are reported, not stored: the caller decides (a re-drive
// must not add a second dead letter).
written apply_one(statements& s, kind k, const envelope& m, const decoded& d, std::int64_t now) {
  if (d.svix_id.empty()) return {outcome::dead_letter, "message without a svix-id header"};
  const std::string& projection = stored_name(k);
  auto& has = s.ledger_has;
  has.reset();
  bind_text(has, 1, projection);
  bind_text(has, 2, d.svix_id);
  const bool seen = has.executeStep();
  has.reset();
  if (seen) return {outcome::duplicate, {}};
  if (const auto* err = std::get_if<event::decode_error>(&d.event)) return {outcome::dead_letter, err->reason};
  written w;
  w.result = map_and_write(s, k, std::get<event::clerk_event>(d.event), w.detail);
  // Only what was applied needs a ledger row. A skip depends on the event
  // alone, and staleness only grows: a row's updated_at never falls (but
  // for a session ended by an older terminal event, which no live event
  // moves again), a tombstone and a terminal session stay, rows are never
  // deleted. So a redelivery of a skipped or stale event is skipped or
  // stale again and writes nothing, without a row that would be half the
  // ledger. One exception, harmless: a stale referrals event may date a
  // claim once a later break is known (date_claim), and its redelivery then
  // applies what it knows, which only moves a claim's date to an event of
  // the user's that truly named the code.
  if (w.result != outcome::applied) return w;
  static const std::string applied(name(outcome::applied));
  auto& add = s.ledger_add;
  add.reset();
  bind_text(add, 1, projection);
  bind_text(add, 2, d.svix_id);
  bind_text(add, 3, d.type);
  if (d.user.empty())
    add.bind(4);
  else
    bind_text(add, 4, d.user);
  bind_text(add, 5, applied);
  bind_text(add, 6, m.topic);
  add.bind(7, m.partition);
  add.bind(8, m.offset);
  add.bind(9, now);
  run(add);
  return w;
}

void add_dead_letter(statements& s, kind k, const envelope& m, const decoded& d, const std::string& reason,
                     std::int64_t now) {
  auto& st = s.dead_letter_add;
  st.reset();
  st.clearBindings();
  bind_text(st, 1, stored_name(k));
  bind_text(st, 2, m.topic);
  st.bind(3, m.partition);
  st.bind(4, m.offset);
  if (d.svix_id.empty())
    st.bind(5);
  else
    bind_text(st, 5, d.svix_id);
  if (d.type.empty())
    st.bind(6);
  else
    bind_text(st, 6, d.type);
  bind_text(st, 7, reason);
  st.bindNoCopy(8, m.body.data(), static_cast<int>(m.body.size()));
  st.bind(9, now);
  run(st);
}

template <class F>
auto guarded(F&& body) {
  try {
    return body();
  } catch (const SQLite::Exception& e) {
    throw store::db_error(e.what());
  }
}

}  // namespace

applier::applier(store::database& db, std::vector<kind> projections, std::mutex* write_turn)
    : db_(db), kinds_(std::move(projections)), write_turn_(write_turn) {
  guarded([&] {
    st_ = std::make_unique<statements>(db_.native());
    return 0;
  });
}

applier::~applier() = default;

std::vector<event_result> applier::apply(std::span<const envelope> batch,
                                        const std::map<std::int32_t, checked_record>& checked) {
  // Decoding is pure, and so is finding the batch's last message in each
  // (topic, partition): both before the write turn.
  std::vector<decoded> decoded_batch;
  decoded_batch.reserve(batch.size());
  for (const auto& m : batch) decoded_batch.push_back(decode_message(m));
  std::vector<const envelope*> last;
  for (const auto& m : batch) {
    const auto it = std::find_if(last.begin(), last.end(), [&](const envelope* l) {
      return l->partition == m.partition && l->topic == m.topic;
    });
    if (it == last.end())
      last.push_back(&m);
    else if (m.offset > (*it)->offset)
      *it = &m;
  }
  std::vector<written> done;
  done.reserve(batch.size() * kinds_.size());
  {
    const auto asked = std::chrono::steady_clock::now();
    std::unique_lock<std::mutex> turn;
    if (write_turn_) turn = std::unique_lock(*write_turn_);
    const auto got = std::chrono::steady_clock::now();
    // Counted however the transaction ends, before the turn is released.
    struct count_turn {
      write_totals& totals;
      std::chrono::steady_clock::time_point asked, got;
      std::optional<std::chrono::nanoseconds> cpu_at_start = thread_cpu();
      ~count_turn() {
        ++totals.batches;
        totals.waited += got - asked;
        totals.held += std::chrono::steady_clock::now() - got;
        const auto cpu_now = thread_cpu();
        if (cpu_at_start && cpu_now) totals.held_cpu += *cpu_now - *cpu_at_start;
      }
    } counted{totals_, asked, got};
    const std::int64_t now = now_ms();
    try {
      SQLite::Transaction tx(db_.native(), SQLite::TransactionBehavior::IMMEDIATE);
      for (std::size_t i = 0; i < batch.size(); ++i) {
        for (const kind k : kinds_) {
          written w = apply_one(*st_, k, batch[i], decoded_batch[i], now);
          if (w.result == outcome::dead_letter) add_dead_letter(*st_, k, batch[i], decoded_batch[i], w.detail, now);
          done.push_back(std::move(w));
        }
      }
      // Store the offsets in the same transaction as the rows: a crash before
      // COMMIT loses both, after COMMIT keeps both.
      for (const kind k : kinds_) {
        for (const envelope* m : last) {
          auto& st = st_->offset_set;
          st.reset();
          bind_text(st, 1, stored_name(k));
          bind_text(st, 2, m->topic);
          st.bind(3, m->partition);
          st.bind(4, m->offset + 1);
          st.bind(5, now);
          bind_text(st, 6, m->svix_id);
          const auto c = checked.find(m->partition);
          if (c != checked.end() && c->second.offset < m->offset) {
            st.bind(7, c->second.offset);
            bind_text(st, 8, c->second.svix_id);
          } else {
            st.bind(7);
            st.bind(8);
          }
          run(st);
        }
      }
      tx.commit();
    } catch (const SQLite::Exception& e) {
      st_->reset_all();
      throw store::db_error(e.what());
    }
  }
  std::vector<event_result> results;
  results.reserve(done.size());
  for (std::size_t i = 0, j = 0; i < batch.size(); ++i)
    for (const kind k : kinds_) results.push_back(result_of(k, batch[i], decoded_batch[i], std::move(done[j++])));
  return results;
}

std::map<std::int32_t, stored_position> stored_positions(store::database& db, kind projection,
                                                        const std::string& topic) {
  return guarded([&] {
    // A file from before migration 003 has no last_svix_id, before 006 no
    // checked record (ctl status reads backups and files not yet migrated).
    const int version = db.schema_version();
    const std::string sql = std::string("SELECT partition, next_offset, ") +
                            (version >= 3 ? "last_svix_id" : "NULL") + ", " +
                            (version >= 6 ? "checked_offset, checked_svix_id" : "NULL, NULL") +
                            " FROM kafka_offsets WHERE projection = ? AND topic = ?";
    std::map<std::int32_t, stored_position> out;
    SQLite::Statement st(db.native(), sql);
    st.bind(1, std::string(name(projection)));
    st.bind(2, topic);
    while (st.executeStep()) {
      auto& p = out[st.getColumn(0).getInt()];
      p.next_offset = st.getColumn(1).getInt64();
      if (!st.getColumn(2).isNull()) p.last_svix_id = st.getColumn(2).getString();
      if (!st.getColumn(3).isNull()) p.checked = checked_record{st.getColumn(3).getInt64(), st.getColumn(4).getString()};
    }
    return out;
  });
}

std::map<std::int32_t, std::int64_t> stored_offsets(store::database& db, kind projection, const std::string& topic) {
  std::map<std::int32_t, std::int64_t> out;
  for (const auto& [partition, p] : stored_positions(db, projection, topic)) out[partition] = p.next_offset;
  return out;
}

std::vector<std::string> offset_topics(store::database& db, kind projection) {
  return guarded([&] {
    std::vector<std::string> out;
    SQLite::Statement st(db.native(),
                         "SELECT DISTINCT topic FROM kafka_offsets WHERE projection = ? ORDER BY topic");
    st.bind(1, std::string(name(projection)));
    while (st.executeStep()) out.push_back(st.getColumn(0).getString());
    return out;
  });
}

void rewind_offset(store::database& db, kind projection, const std::string& topic, std::int32_t partition,
                   std::int64_t next_offset, const std::string& last_svix_id) {
  guarded([&] {
    SQLite::Statement st(db.native(),
                         "UPDATE kafka_offsets SET next_offset = ?, last_svix_id = ?, updated_at = ?, "
                         "checked_offset = NULL, checked_svix_id = NULL "
                         "WHERE projection = ? AND topic = ? AND partition = ? AND next_offset > ?");
    st.bind(1, next_offset);
    st.bind(2, last_svix_id);
    st.bind(3, now_ms());
    st.bind(4, std::string(name(projection)));
    st.bind(5, topic);
    st.bind(6, partition);
    st.bind(7, next_offset);
    st.exec();
    return 0;
  });
}

void store_start(store::database& db, kind projection, const std::string& topic, std::int32_t partition,
                 std::int64_t next_offset) {
  guarded([&] {
    SQLite::Statement st(db.native(),
                         "INSERT INTO kafka_offsets(projection, topic, partition, next_offset, updated_at, "
                         "last_svix_id) VALUES (?,?,?,?,?,'') ON CONFLICT(projection, topic, partition) DO NOTHING");
    st.bind(1, std::string(name(projection)));
    st.bind(2, topic);
    st.bind(3, partition);
    st.bind(4, next_offset);
    st.bind(5, now_ms());
    st.exec();
    return 0;
  });
}

void forget_checked(store::database& db, kind projection, const std::string& topic, std::int32_t partition,
                    std::int64_t next_offset) {
  guarded([&] {
    SQLite::Statement st(db.native(),
                         "UPDATE kafka_offsets SET checked_offset = NULL, checked_svix_id = NULL "
                         "WHERE projection = ? AND topic = ? AND partition = ? AND next_offset = ? "
                         "AND checked_offset IS NOT NULL");
    st.bind(1, std::string(name(projection)));
    st.bind(2, topic);
    st.bind(3, partition);
    st.bind(4, next_offset);
    st.exec();
    return 0;
  });
}

namespace {

// A file from before migration 008 (`dead-letters list` reads files not
// yet migrated) has no dismissed_at: read from dismiss's note, as 008 does.
std::string dead_letter_columns(store::database& db) {
  return std::string("SELECT id, projection, topic, partition, \"offset\", svix_id, type, reason, payload, "
                     "created_at, resolved_at, ") +
         (db.schema_version() >= 8 ? "dismissed_at"
                                   : "CASE WHEN instr(reason, ' (dismissed: ') > 0 THEN resolved_at END") +
         " FROM dead_letters ";
}

dead_letter read_dead_letter(SQLite::Statement& st) {
  dead_letter d;
  d.id = st.getColumn(0).getInt64();
  d.projection = st.getColumn(1).getString();
  d.topic = st.getColumn(2).getString();
  d.partition = st.getColumn(3).getInt();
  d.offset = st.getColumn(4).getInt64();
  d.svix_id = st.getColumn(5).getString();
  d.type = st.getColumn(6).getString();
  d.reason = st.getColumn(7).getString();
  const auto payload = st.getColumn(8);
  d.payload.assign(static_cast<const char*>(payload.getBlob()), static_cast<std::size_t>(payload.getBytes()));
  d.created_at = st.getColumn(9).getInt64();
  if (!st.getColumn(10).isNull()) d.resolved_at = st.getColumn(10).getInt64();
  if (!st.getColumn(11).isNull()) d.dismissed_at = st.getColumn(11).getInt64();
  return d;
}

}  // namespace

std::vector<dead_letter> list_dead_letters(store::database& db, std::optional<kind> projection,
                                           bool include_resolved) {
  return guarded([&] {
    std::vector<dead_letter> out;
    SQLite::Statement st(db.native(), dead_letter_columns(db) +
                                          "WHERE (?1 IS NULL OR projection = ?1) AND (?2 OR resolved_at IS NULL) "
                                          "ORDER BY id");
    if (projection)
      st.bind(1, std::string(name(*projection)));
    else
      st.bind(1);
    st.bind(2, include_resolved ? 1 : 0);
    while (st.executeStep()) out.push_back(read_dead_letter(st));
    return out;
  });
}

std::optional<dead_letter> find_dead_letter(store::database& db, std::int64_t id) {
  return guarded([&]() -> std::optional<dead_letter> {
    SQLite::Statement st(db.native(), dead_letter_columns(db) + "WHERE id = ?");
    st.bind(1, id);
    if (!st.executeStep()) return std::nullopt;
    return read_dead_letter(st);
  });
}

prune_step prune_ledger(store::database& db, kind projection, std::int64_t applied_before_ms,
                        const std::string& after, int scan) {
  return guarded([&] {
    const std::string p(name(projection));
    prune_step out;
    SQLite::Transaction tx(db.native(), SQLite::TransactionBehavior::IMMEDIATE);
    std::vector<std::string> old;
    {
      SQLite::Statement st(db.native(),
                           "SELECT svix_id, applied_at FROM applied_events WHERE projection = ? AND svix_id > ? "
                           "ORDER BY svix_id LIMIT ?");
      st.bind(1, p);
      st.bind(2, after);
      st.bind(3, scan);
      int seen = 0;
      while (st.executeStep()) {
        ++seen;
        out.next = st.getColumn(0).getString();
        if (st.getColumn(1).getInt64() < applied_before_ms) old.push_back(out.next);
      }
      if (seen < scan) out.next.clear();  // the sweep reached the end
    }
    SQLite::Statement del(db.native(), "DELETE FROM applied_events WHERE projection = ? AND svix_id = ?");
    for (const auto& id : old) {
      del.reset();
      del.bind(1, p);
      del.bind(2, id);
      out.deleted += del.exec();
    }
    tx.commit();
    return out;
  });
}

redrive_result redrive_dead_letter(store::database& db, std::int64_t id) {
  return guarded([&]() -> redrive_result {
    statements s(db.native());
    SQLite::Transaction tx(db.native(), SQLite::TransactionBehavior::IMMEDIATE);
    // Read under the write lock: a re-drive running beside this one has
    // either resolved it already or waits for this one to end.
    const std::optional<dead_letter> found = find_dead_letter(db, id);
    if (!found || found->resolved_at) return {};
    redrive_result out{true, outcome::dead_letter, {}, found->projection, found->svix_id, found->type};
    const auto k = parse_kind(found->projection);
    if (!k) {
      out.detail = "unknown projection " + found->projection + ": not re-driven";
      return out;
    }
    const envelope m{found->topic, found->partition, found->offset, found->svix_id, found->type, found->payload};
    const decoded d = decode_message(m);
    const written w = apply_one(s, *k, m, d, now_ms());
    out.result = w.result;
    out.detail = w.detail;
    if (w.result == outcome::dead_letter) return out;  // still fails: leave it pending
    SQLite::Statement mark(db.native(), "UPDATE dead_letters SET resolved_at = ? WHERE id = ?");
    mark.bind(1, now_ms());
    mark.bind(2, id);
    mark.exec();
    tx.commit();
    return out;
  });
}

std::optional<dead_letter> dismiss_dead_letter(store::database& db, std::int64_t id, const std::string& note) {
  return guarded([&]() -> std::optional<dead_letter> {
    SQLite::Transaction tx(db.native(), SQLite::TransactionBehavior::IMMEDIATE);
    auto found = find_dead_letter(db, id);
    if (!found || found->resolved_at) return std::nullopt;
    SQLite::Statement mark(db.native(),
                           "UPDATE dead_letters SET resolved_at = ?1, dismissed_at = ?1, "
                           "reason = reason || ' (dismissed: ' || ?2 || ')' WHERE id = ?3");
    mark.bind(1, now_ms());
    mark.bind(2, note);
    mark.bind(3, id);
    mark.exec();
    tx.commit();
    return found;
  });
}

std::vector<projection_status> status(store::database& db) {
  return guarded([&] {
    std::vector<projection_status> out;
    for (const kind k : all_kinds) {
      projection_status p;
      p.projection = k;
      const std::string n(name(k));
      p.rows = db.native().execAndGet("SELECT count(*) FROM " + n).getInt64();
      SQLite::Statement ledger(db.native(), "SELECT count(*) FROM applied_events WHERE projection = ?");
      ledger.bind(1, n);
      if (ledger.executeStep()) p.ledger_rows = ledger.getColumn(0).getInt64();
      SQLite::Statement dl(db.native(),
                           "SELECT count(*) FROM dead_letters WHERE projection = ? AND resolved_at IS NULL");
      dl.bind(1, n);
      if (dl.executeStep()) p.pending_dead_letters = dl.getColumn(0).getInt64();
      // kafka_offsets moves with every applied batch: a tiny table, unlike the ledger.
      SQLite::Statement last(db.native(), "SELECT max(updated_at) FROM kafka_offsets WHERE projection = ?");
      last.bind(1, n);
      if (last.executeStep() && !last.getColumn(0).isNull()) p.last_applied_at = last.getColumn(0).getInt64();
      out.push_back(p);
    }
    return out;
  });
}

}  // namespace clerk_sync::projection
