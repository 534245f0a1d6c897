#include "projection/applier.hpp"

#include <doctest/doctest.h>

#include <SQLiteCpp/SQLiteCpp.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <mutex>
#include <set>
#include <thread>

#include "event/envelope.hpp"
#include "support/support.hpp"

namespace pj = clerk_sync::projection;
namespace store = clerk_sync::store;
using pj::outcome;

namespace {

const std::vector<pj::kind> all{pj::kind::users, pj::kind::referrals, pj::kind::balances, pj::kind::sessions};

// A message shaped as the receiver publishes it.
pj::envelope msg(const std::string& svix, const std::string& body, std::int64_t offset, std::int32_t partition = 0) {
  return {"clerk.events", partition, offset, svix, "x", body};
}

std::string user_body(const std::string& type, const std::string& id, std::int64_t updated_at,
                      const std::string& public_meta = "{}", const std::string& first = "Ann") {
  return R"({"type":")" + type + R"(","timestamp":)" + std::to_string(updated_at) + R"(,"data":{"id":")" + id +
         R"(","first_name":")" + first + R"(","updated_at":)" + std::to_string(updated_at) +
         R"(,"created_at":1,"public_metadata":)" + public_meta + R"(,"private_metadata":null}})";
}

std::string deleted_body(const std::string& id, std::int64_t ts) {
  return R"({"type":"user.deleted","timestamp":)" + std::to_string(ts) + R"(,"data":{"id":")" + id +
         R"(","deleted":true}})";
}

std::string session_body(const std::string& type, const std::string& status, std::int64_t updated_at,
                         const std::string& user = "") {
  return R"({"type":")" + type + R"(","timestamp":)" + std::to_string(updated_at) +
         R"(,"data":{"id":"sess_1","user_id":"u1","status":")" + status + R"(","updated_at":)" +
         std::to_string(updated_at) + (user.empty() ? "" : R"(,"user":)" + user) + "}}";
}

std::vector<outcome> outcomes(const std::vector<pj::event_result>& rs, pj::kind k) {
  std::vector<outcome> out;
  for (const auto& r : rs)
    if (r.projection == k) out.push_back(r.result);
  return out;
}

// The svix-id stored with each partition's offset (partition -> id).
std::map<std::int32_t, std::string> last_ids(store::database& db, pj::kind k) {
  std::map<std::int32_t, std::string> out;
  for (const auto& [partition, at] : pj::stored_positions(db, k, "clerk.events"))
    if (at.last_svix_id) out[partition] = *at.last_svix_id;
  return out;
}

std::string text(store::database& db, const std::string& sql) {
  SQLite::Statement st(db.native(), sql);
  REQUIRE(st.executeStep());
  return st.getColumn(0).isNull() ? "NULL" : st.getColumn(0).getString();
}

std::int64_t count(store::database& db, const std::string& sql) { return db.native().execAndGet(sql).getInt64(); }

}  // namespace

TEST_CASE("the example bodies land in every projection - the ledger and offsets move in the same transaction") {
  store::database db(":memory:");
  pj::applier app(db, all);
  std::vector<pj::envelope> batch;
  std::int64_t off = 0;
  for (const char* f : {"user.created.json", "user.updated.json", "session.created.json", "session.ended.json"})
    batch.push_back(msg(std::string("msg_") + f,
                        clerk_sync::test::read_file(clerk_sync::test::source_path(std::string("tests/fixtures/clerk/") + f)),
                        off++));
  const auto rs = app.apply(batch);
  CHECK(rs.size() == 16);
  CHECK(outcomes(rs, pj::kind::users) == std::vector{outcome::applied, outcome::applied, outcome::stale, outcome::stale});
  CHECK(outcomes(rs, pj::kind::sessions) ==
        std::vector{outcome::skipped, outcome::skipped, outcome::applied, outcome::applied});
  CHECK(text(db, "SELECT last_name || '/' || username || '/' || role FROM users") == "Doe Updated/johndoe/spacer");
  CHECK(text(db, "SELECT status || '/' || ended_at FROM sessions WHERE id = 'sess_2g7np7Hrk0SN6kj5EDMLDaKNL0S'") ==
        "ended/1716883200000");
  // One ledger row per (event, projection) applied: a skip or a stale event leaves none.
  const auto kept = std::count_if(rs.begin(), rs.end(), [](const auto& r) { return r.result == outcome::applied; });
  CHECK(kept == 8);
  CHECK(count(db, "SELECT count(*) FROM applied_events") == kept);
  CHECK(count(db, "SELECT count(*) FROM applied_events WHERE outcome <> 'applied'") == 0);
  CHECK(pj::stored_offsets(db, pj::kind::users, "clerk.events") == std::map<std::int32_t, std::int64_t>{{0, 4}});
  CHECK(pj::stored_offsets(db, pj::kind::sessions, "clerk.events") == std::map<std::int32_t, std::int64_t>{{0, 4}});

  // user.deleted (seconds timestamp) tombstones; a late older update cannot undo it.
  const auto del = app.apply(std::vector{
      msg("msg_del", clerk_sync::test::read_file(clerk_sync::test::source_path("tests/fixtures/clerk/user.deleted.json")), 4),
      msg("msg_late", user_body("user.updated", "user_2g7np7Hrk0SN6kj5EDMLDaKNL0S", 1716883100000, "{}", "Late"), 5)});
  CHECK(outcomes(del, pj::kind::users) == std::vector{outcome::applied, outcome::stale});
  CHECK(text(db, "SELECT deleted_at || '/' || first_name FROM users") == "1716883200000/John");
  CHECK(count(db, "SELECT count(*) FROM balances WHERE deleted_at = 1716883200000") == 1);
}

TEST_CASE("last writer wins on updated_at, in whatever order the events arrive") {
  store::database db(":memory:");
  pj::applier app(db, {pj::kind::users});
  const auto rs = app.apply(std::vector{msg("a", user_body("user.updated", "u1", 300, "{}", "Newest"), 0),
                                        msg("b", user_body("user.created", "u1", 100, "{}", "Oldest"), 1),
                                        msg("c", user_body("user.updated", "u1", 200, "{}", "Middle"), 2)});
  CHECK(outcomes(rs, pj::kind::users) == std::vector{outcome::applied, outcome::stale, outcome::stale});
  CHECK(text(db, "SELECT first_name || '/' || updated_at FROM users") == "Newest/300");
  // A stale event leaves no ledger row; redelivered, it is stale again and writes nothing.
  CHECK(count(db, "SELECT count(*) FROM applied_events") == 1);
  CHECK(outcomes(app.apply(std::vector{msg("b", user_body("user.created", "u1", 100, "{}", "Oldest"), 3)}),
                 pj::kind::users) == std::vector{outcome::stale});
  CHECK(text(db, "SELECT first_name || '/' || updated_at FROM users") == "Newest/300");
  CHECK(count(db, "SELECT count(*) FROM applied_events") == 1);
  // A deletion before the user ever appeared leaves a tombstone a late create cannot undo...
  CHECK(outcomes(app.apply(std::vector{msg("d", deleted_body("u2", 1716883200500), 4),
                                       msg("e", user_body("user.created", "u2", 1716883200400), 5)}),
                 pj::kind::users) == std::vector{outcome::applied, outcome::stale});
  CHECK(text(db, "SELECT coalesce(first_name, 'none') || '/' || deleted_at FROM users WHERE id = 'u2'") ==
        "none/1716883200500");
}

TEST_CASE("an event of a type no projection maps is skipped by each with a reason, never in silence") {
  // The receiver publishes every user.* and session.* type: one Clerk adds
  // later (or a typo'd test event) reaches here and changes no table.
  store::database db(":memory:");
  pj::applier app(db, all);
  const auto rs = app.apply(std::vector{
      msg("u", R"({"type":"user.frobnicated","timestamp":1765000000000,"data":{"id":"u1","updated_at":1}})", 0)});
  REQUIRE(rs.size() == all.size());
  for (const auto& r : rs) {
    CAPTURE(pj::name(r.projection));
    CHECK(r.result == outcome::skipped);
    CHECK(r.detail == "event type user.frobnicated is not projected");
  }
  CHECK(count(db, "SELECT count(*) FROM users") == 0);
  CHECK(count(db, "SELECT count(*) FROM applied_events") == 0);
  // A type it maps, skipped by the projections it does not concern: no reason.
  const auto session = app.apply(std::vector{msg("s", session_body("session.created", "active", 100), 1)});
  CHECK(outcomes(session, pj::kind::users) == std::vector{outcome::skipped});
  for (const auto& r : session) CHECK(r.detail.empty());
}

TEST_CASE("the same svix-id twice is applied once, even inside one batch") {
  store::database db(":memory:");
  pj::applier app(db, {pj::kind::balances});
  const auto body = user_body("user.updated", "u1", 100, R"({"points_balance":5})");
  const auto rs = app.apply(std::vector{msg("same", body, 0), msg("same", body, 1)});
  CHECK(outcomes(rs, pj::kind::balances) == std::vector{outcome::applied, outcome::duplicate});
  CHECK(outcomes(app.apply(std::vector{msg("same", body, 2)}), pj::kind::balances) == std::vector{outcome::duplicate});
  CHECK(count(db, "SELECT count(*) FROM applied_events") == 1);
  CHECK(pj::stored_offsets(db, pj::kind::balances, "clerk.events").at(0) == 3);
}

TEST_CASE("the svix-id kept with a stored offset is the record's just before it, and moves only with the offset") {
  store::database db(":memory:");
  pj::applier app(db, {pj::kind::users});
  (void)app.apply(std::vector{msg("b", user_body("user.created", "u1", 100), 1),
                              msg("a", user_body("user.created", "u2", 100), 0),
                              msg("z", user_body("user.created", "u3", 100), 7, 1)});
  using ids = std::map<std::int32_t, std::string>;
  CHECK(last_ids(db, pj::kind::users) == ids{{0, "b"}, {1, "z"}});
  // A late batch of an evicted member, behind the stored offset, moves neither.
  (void)app.apply(std::vector{msg("late", user_body("user.updated", "u1", 50), 0)});
  CHECK(pj::stored_offsets(db, pj::kind::users, "clerk.events").at(0) == 2);
  CHECK(last_ids(db, pj::kind::users) == ids{{0, "b"}, {1, "z"}});
  // The same place again (a batch applied twice by two members): the later id stands.
  (void)app.apply(std::vector{msg("b2", user_body("user.updated", "u1", 60), 1)});
  CHECK(last_ids(db, pj::kind::users).at(0) == "b2");
  (void)app.apply(std::vector{msg("c", user_body("user.updated", "u1", 200), 2)});
  CHECK(last_ids(db, pj::kind::users).at(0) == "c");
  CHECK(last_ids(db, pj::kind::sessions).empty());
}

TEST_CASE("a stored offset is read with its own svix-id while batches commit beside the reader") {
  // ctl status and a consumer taking over partitions read a projection's
  // offsets while another process commits. The svix-id compared with the
  // record before the offset must be the one stored with that offset: one
  // of a later commit names a record further on, and the log then looks
  // like another topic's.
  clerk_sync::test::temp_dir dir;
  const auto path = (dir / "beside.db").string();
  store::database writer_db(path);
  store::database reader_db(path);
  // Batches until the reader has seen 200 offsets, however the two threads
  // share the cores (a busy CI machine may run them on one), or a cap.
  constexpr std::size_t wanted_offsets = 200;
  constexpr int cap = 50'000;
  std::atomic<bool> enough = false, done = false;
  std::atomic<int> written = 0;
  std::thread writer([&] {
    pj::applier app(writer_db, {pj::kind::users});
    for (int i = 0; i < cap && !enough; ++i) {
      (void)app.apply(std::vector{msg("e" + std::to_string(i), user_body("user.updated", "u1", 100 + i), i)});
      written = i + 1;
    }
    done = true;
  });
  int reads = 0, mismatched = 0;
  std::set<std::int64_t> offsets_seen;
  while (!done) {
    const auto positions = pj::stored_positions(reader_db, pj::kind::users, "clerk.events");
    const auto it = positions.find(0);
    if (it == positions.end()) continue;
    ++reads;
    offsets_seen.insert(it->second.next_offset);
    if (it->second.last_svix_id != "e" + std::to_string(it->second.next_offset - 1)) ++mismatched;
    if (offsets_seen.size() >= wanted_offsets) enough = true;
  }
  writer.join();
  MESSAGE(reads << " reads of " << offsets_seen.size() << " distinct offsets beside " << written.load() << " commits, "
                << mismatched << " mismatched");
  CHECK(offsets_seen.size() >= wanted_offsets);  // the reads did run beside the commits
  CHECK(mismatched == 0);
  CHECK(pj::stored_offsets(reader_db, pj::kind::users, "clerk.events").at(0) == written.load());
}

TEST_CASE("stored positions of a file not migrated: no svix-id before migration 003, no checked record before 006") {
  // ctl status reads backups and files a stopped consumer left, read-only.
  clerk_sync::test::temp_dir dir;
  const auto at_version = [&](int version) {
    const auto path = (dir / ("v" + std::to_string(version) + ".db")).string();
    clerk_sync::test::file_at_schema(path, version);
    {
      SQLite::Database raw(path, SQLite::OPEN_READWRITE);
      raw.exec(std::string("INSERT INTO kafka_offsets(projection, topic, partition, next_offset, updated_at") +
               (version >= 3 ? ", last_svix_id" : "") + (version >= 6 ? ", checked_offset, checked_svix_id" : "") +
               ") VALUES ('users', 'clerk.events', 0, 7, 0" + (version >= 3 ? ", 'msg_6'" : "") +
               (version >= 6 ? ", 4, 'msg_4'" : "") + ")");
    }
    store::database db(path, {.read_only = true});
    return pj::stored_positions(db, pj::kind::users, "clerk.events").at(0);
  };
  const auto v2 = at_version(2);
  CHECK(v2.next_offset == 7);
  CHECK_FALSE(v2.last_svix_id.has_value());
  const auto v5 = at_version(5);
  CHECK(v5.last_svix_id == "msg_6");
  CHECK_FALSE(v5.checked.has_value());
  const auto v6 = at_version(6);
  CHECK(v6.last_svix_id == "msg_6");
  CHECK(v6.checked == pj::checked_record{4, "msg_4"});
}

TEST_CASE("balances keep exact decimal text from numbers and strings - bad amounts become dead letters") {
  store::database db(":memory:");
  pj::applier app(db, {pj::kind::users, pj::kind::balances});
  const auto rs = app.apply(std::vector{
      msg("m1", user_body("user.created", "u1", 100,
                          R"({"g2a_balance":123456789012345678901234.5678900,"points_balance":"77","nft_count":2})"), 0),
      msg("m2", user_body("user.created", "u2", 100, R"({"g2a_balance":"lots"})"), 1),
      msg("m3", "this is not json", 2, 1)});
  CHECK(outcomes(rs, pj::kind::balances) == std::vector{outcome::applied, outcome::dead_letter, outcome::dead_letter});
  // The users projection maps u2 fine: a bad amount only concerns balances.
  CHECK(outcomes(rs, pj::kind::users) == std::vector{outcome::applied, outcome::applied, outcome::dead_letter});
  CHECK(text(db, "SELECT g2a_balance || '/' || points_balance || '/' || nft_count FROM balances") ==
        "123456789012345678901234.56789/77/2");
  const auto dls = pj::list_dead_letters(db, pj::kind::balances);
  REQUIRE(dls.size() == 2);
  CHECK(dls[0].reason == "g2a_balance is not a decimal number: lots");
  CHECK(dls[1].reason.starts_with("not JSON"));
  CHECK(dls[1].payload == "this is not json");
  CHECK(dls[1].partition == 1);
  // The partitions moved on past the dead letters.
  CHECK(pj::stored_offsets(db, pj::kind::balances, "clerk.events") == std::map<std::int32_t, std::int64_t>{{0, 2}, {1, 3}});

  // Re-drive: still failing stays pending; after fixing the payload it applies once.
  const auto still = pj::redrive_dead_letter(db, dls[0].id);
  CHECK(still.found);
  CHECK(still.result == outcome::dead_letter);
  SQLite::Statement fix(db.native(), "UPDATE dead_letters SET payload = ? WHERE id = ?");
  fix.bind(1, user_body("user.created", "u2", 100, R"({"g2a_balance":"1.50"})"));
  fix.bind(2, dls[0].id);
  fix.exec();
  const auto ok = pj::redrive_dead_letter(db, dls[0].id);
  CHECK(ok.result == outcome::applied);
  CHECK(text(db, "SELECT g2a_balance FROM balances WHERE user_id = 'u2'") == "1.5");
  CHECK(pj::list_dead_letters(db, pj::kind::balances).size() == 1);
  CHECK(pj::list_dead_letters(db, pj::kind::balances, true).size() == 2);
  CHECK_FALSE(pj::redrive_dead_letter(db, dls[0].id).found);
  CHECK(ok.projection == "balances");
  CHECK(ok.svix_id == dls[0].svix_id);
  // A projection this binary does not know was read as users and applied
  // there: it is not re-driven now, and stays pending.
  SQLite::Statement rename(db.native(), "UPDATE dead_letters SET projection = 'orgs', resolved_at = NULL WHERE id = ?");
  rename.bind(1, dls[0].id);
  rename.exec();
  const auto ledger_before = text(db, "SELECT count(*) FROM applied_events");
  const auto unknown = pj::redrive_dead_letter(db, dls[0].id);
  CHECK(unknown.result == outcome::dead_letter);
  CHECK(unknown.detail == "unknown projection orgs: not re-driven");
  CHECK(unknown.projection == "orgs");
  CHECK(text(db, "SELECT count(*) FROM applied_events") == ledger_before);
  CHECK(text(db, "SELECT count(*) FROM dead_letters WHERE projection = 'orgs' AND resolved_at IS NULL") == "1");

  const auto st = pj::status(db);
  CHECK(st[0].projection == pj::kind::users);
  CHECK(st[0].rows == 2);
  CHECK(st[2].rows == 2);
  CHECK(st[2].pending_dead_letters == 1);
  CHECK(st[2].ledger_rows == 2);
  CHECK(st[2].last_applied_at.has_value());
  CHECK_FALSE(st[3].last_applied_at.has_value());
}

TEST_CASE("a ban is applied even when the user wrote a number too large for a double into unsafe_metadata") {
  store::database db(":memory:");
  pj::applier app(db, {pj::kind::users, pj::kind::balances});
  const auto ban = R"({"type":"user.updated","timestamp":200,"data":{"id":"u1","updated_at":200,"banned":true,
      "public_metadata":{"role":"admin","g2a_balance":12e2},"private_metadata":null,"unsafe_metadata":{"x":1e400}}})";
  const auto rs = app.apply(std::vector{msg("m1", user_body("user.created", "u1", 100, R"({"role":"admin"})"), 0),
                                        msg("m2", ban, 1)});
  CHECK(outcomes(rs, pj::kind::users) == std::vector{outcome::applied, outcome::applied});
  CHECK(outcomes(rs, pj::kind::balances) == std::vector{outcome::applied, outcome::applied});
  CHECK(text(db, "SELECT banned || '/' || updated_at FROM users") == "1/200");
  CHECK(text(db, "SELECT g2a_balance FROM balances") == "1200");
  CHECK(pj::list_dead_letters(db).empty());
}

TEST_CASE("a ban is applied even when the user nested unsafe_metadata as deep as Clerk's 8 KB of metadata allows") {
  // unsafe_metadata is the end user's to write, and Clerk sends it whole
  // with every later event about the user: its depth must not refuse those.
  store::database db(":memory:");
  pj::applier app(db, {pj::kind::users, pj::kind::sessions});
  const std::string deep = std::string(4096, '[') + std::string(4096, ']');
  const auto ban = R"({"type":"user.updated","timestamp":200,"data":{"id":"u1","updated_at":200,"banned":true,
      "public_metadata":{},"private_metadata":null,"unsafe_metadata":{"x":)" + deep + "}}}";
  const auto user = R"({"id":"u1","updated_at":300,"banned":true,"public_metadata":{},"unsafe_metadata":{"x":)" + deep + "}}";
  const auto rs = app.apply(std::vector{msg("m1", user_body("user.created", "u1", 100), 0), msg("m2", ban, 1),
                                        msg("m3", session_body("session.revoked", "revoked", 300, user), 2)});
  CHECK(outcomes(rs, pj::kind::users) == std::vector{outcome::applied, outcome::applied, outcome::applied});
  CHECK(outcomes(rs, pj::kind::sessions) == std::vector{outcome::skipped, outcome::skipped, outcome::applied});
  CHECK(text(db, "SELECT banned || '/' || updated_at FROM users") == "1/300");
  CHECK(pj::list_dead_letters(db).empty());
  // The receiver publishes it, under the user's key.
  CHECK(std::get<clerk_sync::event::envelope>(clerk_sync::event::read_envelope(ban)).user_id == "u1");
}

TEST_CASE("a stale event's line says it was stale, not what applying it would have refused") {
  // An unknown role or a self-referral in an event older than the row: it
  // writes nothing, so no role was "kept as spacer" and nothing refused.
  store::database db(":memory:");
  pj::applier app(db, {pj::kind::users, pj::kind::referrals});
  const std::string bad = R"({"role":"overlord","referrer_id":"u1"})";
  (void)app.apply(std::vector{msg("new", user_body("user.updated", "u1", 300, R"({"role":"vip"})"), 0)});
  const auto rs = app.apply(std::vector{msg("old", user_body("user.updated", "u1", 200, bad), 1)});
  REQUIRE(rs.size() == 2);
  for (const auto& r : rs) {
    CAPTURE(pj::name(r.projection));
    CHECK(r.result == outcome::stale);
    CHECK(r.detail.empty());
  }
  CHECK(text(db, "SELECT role FROM users") == "vip");
  // Applied, the same event says what it refused.
  const auto fresh = app.apply(std::vector{msg("newer", user_body("user.updated", "u1", 400, bad), 2)});
  CHECK(fresh[0].detail == "unknown role kept as spacer: overlord");
  CHECK(fresh[1].detail == "self-referral refused");
}

TEST_CASE("referrals: attribution set once, conflicts and self-referral refused, codes unique") {
  store::database db(":memory:");
  pj::applier app(db, {pj::kind::referrals});
  const auto rs = app.apply(std::vector{
      msg("r1", user_body("user.created", "u1", 100, R"({"referral_code":"C1","referrer_id":"u9"})"), 0),
      msg("r2", user_body("user.updated", "u1", 200, R"({"referral_code":"C1","referrer_id":"u8"})"), 1),
      msg("r3", user_body("user.created", "u2", 100, R"({"referral_code":"C1","referrer_id":"u2"})"), 2)});
  CHECK(outcomes(rs, pj::kind::referrals) == std::vector{outcome::applied, outcome::applied, outcome::applied});
  CHECK(rs[1].detail == "referrer conflict: kept u9, refused u8");
  CHECK(rs[2].detail.find("referral_code conflict") != std::string::npos);
  CHECK(text(db, "SELECT referral_code || '/' || referrer_id || '/' || updated_at FROM referrals WHERE user_id = 'u1'") ==
        "C1/u9/200");
  CHECK(text(db, "SELECT coalesce(referral_code, '-') || '/' || coalesce(referrer_id, '-') FROM referrals WHERE user_id = 'u2'") ==
        "-/-");
  // A code another user claimed earlier is refused: the user waits for it,
  // and holds no code meanwhile (its metadata no longer names C4).
  const auto rs2 = app.apply(std::vector{
      msg("r5", user_body("user.created", "u4", 100, R"({"referral_code":"C4"})"), 4),
      msg("r6", user_body("user.updated", "u4", 200, R"({"referral_code":"C1"})"), 5)});
  CHECK(outcomes(rs2, pj::kind::referrals) == std::vector{outcome::applied, outcome::applied});
  CHECK(rs2[1].detail == "referral_code conflict: C1 belongs to u1, an earlier claim; waiting until it is released");
  CHECK(text(db, "SELECT coalesce(referral_code, '-') || '/' || pending_referral_code || '/' || updated_at FROM "
                 "referrals WHERE user_id = 'u4'") == "-/C1/200");
  // Keys come from public_metadata, never unsafe_metadata.
  (void)app.apply(std::vector{msg("r4", R"({"type":"user.created","data":{"id":"u3","updated_at":1,"public_metadata":{},
      "unsafe_metadata":{"referrer_id":"u1","referral_code":"X"}}})", 3)});
  CHECK(text(db, "SELECT coalesce(referrer_id, '-') FROM referrals WHERE user_id = 'u3'") == "-");
}

TEST_CASE("referrals: a referrer or code that is a boolean, object or array is a dead letter, not an attribution or a release") {
  store::database db(":memory:");
  pj::applier app(db, {pj::kind::referrals});
  const auto rs = app.apply(std::vector{
      msg("b0", user_body("user.created", "u1", 100, R"({"referral_code":"AAA"})"), 0),
      msg("b1", user_body("user.updated", "u1", 120, R"({"referral_code":"AAA","referrer_id":true})"), 1),
      msg("b2", user_body("user.created", "u3", 150, R"({"referral_code":"AAA"})"), 2),
      msg("b3", user_body("user.updated", "u1", 200, R"({"referral_code":["AAA"]})"), 3),
      msg("b4", user_body("user.updated", "u1", 300, R"({"referral_code":"AAA","referrer_id":"u9"})"), 4),
      msg("b5", user_body("user.updated", "u1", 250, R"({"referrer_id":{}})"), 5)});
  // "true" was kept as the referrer for good, refusing u9; the array was
  // read as no code and gave AAA to u3 for good.
  CHECK(outcomes(rs, pj::kind::referrals) == std::vector{outcome::applied, outcome::dead_letter, outcome::applied,
                                                         outcome::dead_letter, outcome::applied,
                                                         outcome::dead_letter});
  CHECK(rs[1].detail == "referrer_id is a boolean");
  CHECK(rs[3].detail == "referral_code is an array");
  CHECK(text(db, "SELECT referral_code || '/' || referrer_id FROM referrals WHERE user_id = 'u1'") == "AAA/u9");
  CHECK(text(db, "SELECT coalesce(referral_code, '-') || '/' || pending_referral_code FROM referrals "
                 "WHERE user_id = 'u3'") == "-/AAA");
  // The last is older than the row, and a dead letter all the same: an
  // older event may still name the earliest referrer.
  CHECK(rs[5].detail == "referrer_id is an object");
  CHECK(text(db, "SELECT count(*) FROM dead_letters") == "3");
}

TEST_CASE("sessions: terminal states are never revived - the embedded user obeys the same updated_at rule") {
  store::database db(":memory:");
  pj::applier app(db, {pj::kind::users, pj::kind::sessions});
  const std::string newer_user = R"({"id":"u1","first_name":"Embedded","updated_at":50,"public_metadata":{}})";
  const auto rs = app.apply(std::vector{msg("s1", session_body("session.created", "active", 100, newer_user), 0),
                                        msg("s2", session_body("session.revoked", "revoked", 200), 1),
                                        msg("s3", session_body("session.pending", "pending", 300), 2),
                                        msg("s4", session_body("session.created", "active", 150), 3),
                                        msg("s5", user_body("user.updated", "u1", 40, "{}", "Older"), 4)});
  CHECK(outcomes(rs, pj::kind::sessions) ==
        std::vector{outcome::applied, outcome::applied, outcome::stale, outcome::stale, outcome::skipped});
  CHECK(outcomes(rs, pj::kind::users) ==
        std::vector{outcome::applied, outcome::skipped, outcome::skipped, outcome::skipped, outcome::stale});
  CHECK(text(db, "SELECT status || '/' || updated_at || '/' || ended_at FROM sessions") == "revoked/200/200");
  CHECK(text(db, "SELECT first_name FROM users") == "Embedded");
}

TEST_CASE("sessions: a revocation older than the live row still ends it - clock skew never keeps a session active") {
  // session.created at 200, then session.revoked at 199 (Clerk's clocks
  // disagree): the revocation is final, whatever its updated_at.
  const auto created = msg("c", session_body("session.created", "active", 200), 0);
  const auto revoked = msg("r", session_body("session.revoked", "revoked", 199), 1);
  const std::string row = "SELECT status || '/' || updated_at || '/' || coalesce(ended_at, '-') FROM sessions";
  std::string forward;
  {
    store::database db(":memory:");
    pj::applier app(db, {pj::kind::sessions});
    CHECK(outcomes(app.apply(std::vector{created}), pj::kind::sessions) == std::vector{outcome::applied});
    CHECK(outcomes(app.apply(std::vector{revoked}), pj::kind::sessions) == std::vector{outcome::applied});
    forward = text(db, row);
    CHECK(forward == "revoked/199/199");
    // A later live event does not revive it; a newer terminal one moves it on.
    CHECK(outcomes(app.apply(std::vector{msg("p", session_body("session.pending", "pending", 300), 2)}),
                   pj::kind::sessions) == std::vector{outcome::stale});
    CHECK(text(db, row) == "revoked/199/199");
    CHECK(outcomes(app.apply(std::vector{msg("e", session_body("session.ended", "ended", 400), 3)}),
                   pj::kind::sessions) == std::vector{outcome::applied});
    CHECK(text(db, row) == "ended/400/400");
  }
  {
    // The other order: the same row.
    store::database db(":memory:");
    pj::applier app(db, {pj::kind::sessions});
    CHECK(outcomes(app.apply(std::vector{revoked, created}), pj::kind::sessions) ==
          std::vector{outcome::applied, outcome::stale});
    CHECK(text(db, row) == forward);
  }
  {
    // Every terminal status, each over a newer live row.
    for (const std::string status : {"ended", "removed", "revoked", "expired", "abandoned", "replaced"}) {
      CAPTURE(status);
      store::database db(":memory:");
      pj::applier app(db, {pj::kind::sessions});
      (void)app.apply(std::vector{msg("c", session_body("session.created", "active", 500), 0),
                                  msg("e", session_body("session." + status, status, 100), 1)});
      CHECK(text(db, row) == status + "/100/100");
    }
  }
}

TEST_CASE("referrals: a code asked for while another user holds it is given once the holder gives it up, in either order") {
  // Each user's events in a partition of its own: no order between users.
  const std::vector<pj::envelope> events{
      msg("h1", user_body("user.created", "u1", 100, R"({"referral_code":"C1"})"), 0, 0),
      msg("h2", user_body("user.created", "u2", 100, R"({"referral_code":"C2"})"), 0, 1),
      msg("h3", user_body("user.created", "u3", 150, R"({"referral_code":"C1"})"), 0, 2),
      msg("h4", user_body("user.created", "u4", 100, R"({"referral_code":"C4"})"), 0, 3),
      msg("h5", user_body("user.updated", "u4", 160, R"({"referral_code":"C2"})"), 1, 3),
      msg("h6", user_body("user.created", "u5", 170, R"({"referral_code":"C4"})"), 0, 4),
      msg("h7", user_body("user.updated", "u1", 200, R"({"referral_code":"C9"})"), 1, 0),
      msg("h8", user_body("user.updated", "u2", 300, R"({"referral_code":"C8"})"), 1, 1)};
  const auto codes = [](store::database& db) {
    return text(db, "SELECT group_concat(user_id || '=' || coalesce(referral_code, '-') || "
                    "coalesce('?' || pending_referral_code, ''), ' ') FROM (SELECT * FROM referrals ORDER BY user_id)");
  };
  const std::string expected = "u1=C9 u2=C8 u3=C1 u4=C2 u5=C4";
  {
    // The claims first: each waits, and each release hands its code on.
    // u4 gives up C4 when it names C2, so u5 finds C4 free.
    store::database db(":memory:");
    pj::applier app(db, {pj::kind::referrals});
    const auto rs = app.apply(events);
    CHECK(outcomes(rs, pj::kind::referrals) == std::vector<outcome>(events.size(), outcome::applied));
    CHECK(rs[2].detail == "referral_code conflict: C1 belongs to u1, an earlier claim; waiting until it is released");
    CHECK(rs[6].detail == "referral_code C1 released to u3");
    CHECK(rs[7].detail == "referral_code C2 released to u4");
    CHECK(codes(db) == expected);
  }
  {
    // The releases first, as a replay may meet them: the same table.
    store::database db(":memory:");
    pj::applier app(db, {pj::kind::referrals});
    for (const auto* id : {"h1", "h2", "h4", "h7", "h8", "h3", "h5", "h6"})
      for (const auto& m : events)
        if (m.svix_id == id) (void)app.apply(std::vector{m});
    CHECK(codes(db) == expected);
  }
}

TEST_CASE("a user without public_metadata changes no row: read as empty, it unbanned, demoted and zeroed the user") {
  // Clerk sends it always ({} when empty); a session's embedded user cut
  // short to its id and time was applied to users, referrals and balances
  // as a user without metadata or ban.
  store::database db(":memory:");
  pj::applier app(db, {std::begin(pj::all_kinds), std::end(pj::all_kinds)});
  const auto admin = R"({"type":"user.updated","timestamp":100,"data":{"id":"u1","updated_at":100,"banned":true,)"
                     R"("public_metadata":{"role":"admin","points_balance":50,"referral_code":"X"}}})";
  (void)app.apply(std::vector{msg("m1", admin, 0)});
  const auto before = text(db, "SELECT role || '/' || banned || '/' || referral_code || '/' || points_balance FROM "
                               "users JOIN referrals ON user_id = id JOIN balances USING (user_id)");
  CHECK(before == "admin/1/X/50");
  const auto rs = app.apply(std::vector{
      msg("m2", session_body("session.created", "active", 200, R"({"id":"u1","updated_at":200})"), 1),
      msg("m3", R"({"type":"user.updated","timestamp":300,"data":{"id":"u1","updated_at":300,"public_metadata":null}})",
          2)});
  for (const auto k : {pj::kind::users, pj::kind::referrals, pj::kind::balances})
    CHECK(outcomes(rs, k) == std::vector{outcome::dead_letter, outcome::dead_letter});
  CHECK(rs[0].detail == "embedded user without public_metadata");
  CHECK(text(db, "SELECT role || '/' || banned || '/' || referral_code || '/' || points_balance FROM users JOIN "
                 "referrals ON user_id = id JOIN balances USING (user_id)") == before);
  CHECK(text(db, "SELECT status FROM sessions") == "active");  // the session itself is applied
  CHECK(outcomes(rs, pj::kind::sessions) == std::vector{outcome::applied, outcome::dead_letter});
}

TEST_CASE("a session whose embedded user is malformed still ends the session - the user projections dead-letter it") {
  store::database db(":memory:");
  pj::applier app(db, {std::begin(pj::all_kinds), std::end(pj::all_kinds)});
  // No updated_at in the embedded user.
  auto rs = app.apply(std::vector{msg("s1", session_body("session.created", "active", 100), 0),
                                  msg("s2", session_body("session.revoked", "revoked", 200, R"({"id":"u1"})"), 1)});
  CHECK(text(db, "SELECT status FROM sessions WHERE id = 'sess_1'") == "revoked");
  // A user id that is not the session's.
  const auto more =
      app.apply(std::vector{msg("s3", session_body("session.ended", "ended", 300, R"({"id":"u2","updated_at":300,"public_metadata":{}})"), 2)});
  rs.insert(rs.end(), more.begin(), more.end());
  CHECK(text(db, "SELECT status FROM sessions WHERE id = 'sess_1'") == "ended");
  CHECK(outcomes(rs, pj::kind::sessions) == std::vector{outcome::applied, outcome::applied, outcome::applied});
  for (const auto k : {pj::kind::users, pj::kind::referrals, pj::kind::balances})
    CHECK(outcomes(rs, k) == std::vector{outcome::skipped, outcome::dead_letter, outcome::dead_letter});
  CHECK(count(db, "SELECT count(*) FROM users") == 0);
  for (const auto& r : rs) {
    if (r.projection != pj::kind::users || r.result != outcome::dead_letter) continue;
    CHECK((r.detail == "embedded user without a numeric updated_at" ||
           r.detail == "embedded user id differs from data.user_id"));
  }
  CHECK(count(db, "SELECT count(*) FROM dead_letters WHERE projection = 'users'") == 2);
  CHECK(count(db, "SELECT count(*) FROM dead_letters WHERE projection = 'sessions'") == 0);
}

TEST_CASE("a locked database fails the whole batch: no rows, no ledger, offsets where they were") {
  clerk_sync::test::temp_dir dir;
  const auto path = (dir / "locked.db").string();
  store::database holder(path);
  store::database db(path, {std::chrono::milliseconds(50)});
  pj::applier app(db, {pj::kind::users});
  (void)app.apply(std::vector{msg("m0", user_body("user.created", "u0", 1), 0)});
  store::exec(holder, "BEGIN IMMEDIATE");
  const std::vector batch{msg("m1", user_body("user.created", "u1", 1), 1), msg("m2", "garbage", 2)};
  CHECK_THROWS_AS((void)app.apply(batch), store::db_error);
  store::exec(holder, "ROLLBACK");
  CHECK(pj::stored_offsets(holder, pj::kind::users, "clerk.events").at(0) == 1);
  CHECK(count(holder, "SELECT count(*) FROM users") == 1);
  CHECK(count(holder, "SELECT count(*) FROM dead_letters") == 0);
  // The same in-memory batch, retried once the lock is gone, applies in full.
  CHECK(outcomes(app.apply(batch), pj::kind::users) == std::vector{outcome::applied, outcome::dead_letter});
  CHECK(pj::stored_offsets(holder, pj::kind::users, "clerk.events").at(0) == 3);
}

TEST_CASE("a redelivery inside the ledger retention is a no-op, pruning sweeps in bounded steps and leaves the rows alone") {
  store::database db(":memory:");
  pj::applier app(db, {pj::kind::users});
  std::vector<pj::envelope> batch;
  for (int i = 0; i < 25; ++i)
    batch.push_back(msg("msg_" + std::to_string(i), user_body("user.created", "u" + std::to_string(i), 100 + i), i));
  (void)app.apply(batch);
  const auto rows_before = text(db, "SELECT group_concat(id || first_name, ',') FROM (SELECT * FROM users ORDER BY id)");
  CHECK(count(db, "SELECT count(*) FROM applied_events") == 25);

  // Retention not reached (cut-off before every apply): nothing pruned, a redelivery is a duplicate.
  auto step = pj::prune_ledger(db, pj::kind::users, 0, "", 100);
  CHECK(step.deleted == 0);
  CHECK(step.next.empty());
  const auto again = app.apply(std::vector{msg("msg_3", user_body("user.created", "u3", 103, "{}", "Changed"), 25)});
  CHECK(outcomes(again, pj::kind::users) == std::vector{outcome::duplicate});

  // Past the retention: pruned ten at a time, oldest first; other projections untouched.
  SQLite::Statement other(db.native(),
                          "INSERT INTO applied_events(projection, svix_id, type, outcome, topic, partition, \"offset\", "
                          "applied_at) VALUES ('sessions', 'msg_x', 't', 'applied', 'clerk.events', 0, 0, 1)");
  other.exec();
  const std::int64_t future = 4'000'000'000'000;
  step = pj::prune_ledger(db, pj::kind::users, future, "", 10);
  CHECK(step.deleted == 10);
  REQUIRE_FALSE(step.next.empty());
  step = pj::prune_ledger(db, pj::kind::users, future, step.next, 10);
  CHECK(step.deleted == 10);
  step = pj::prune_ledger(db, pj::kind::users, future, step.next, 10);
  CHECK(step.deleted == 5);
  CHECK(step.next.empty());  // the sweep is complete
  CHECK(pj::prune_ledger(db, pj::kind::users, future, "", 10).deleted == 0);
  CHECK(count(db, "SELECT count(*) FROM applied_events") == 1);
  CHECK(text(db, "SELECT group_concat(id || first_name, ',') FROM (SELECT * FROM users ORDER BY id)") == rows_before);
}

TEST_CASE("one dead letter per projection and svix-id, a re-drive reads its own by id") {
  store::database db(":memory:");
  pj::applier app(db, {pj::kind::users, pj::kind::balances});
  const auto broken = msg("msg_broken", "{not json", 0);
  (void)app.apply(std::vector{broken});
  (void)app.apply(std::vector{msg("msg_broken", "{not json", 1)});  // Svix delivered it twice
  CHECK(count(db, "SELECT count(*) FROM dead_letters WHERE projection = 'users'") == 1);
  CHECK(count(db, "SELECT count(*) FROM dead_letters WHERE projection = 'balances'") == 1);
  const auto dls = pj::list_dead_letters(db);
  REQUIRE(dls.size() == 2);
  const auto one = pj::find_dead_letter(db, dls[1].id);
  REQUIRE(one.has_value());
  CHECK(one->projection == dls[1].projection);
  CHECK(one->payload == "{not json");
  CHECK_FALSE(pj::find_dead_letter(db, dls[1].id + 100).has_value());
  // Without a svix-id, one per record: read again (a consumer rewound), it
  // adds none; another record without one adds its own.
  (void)app.apply(std::vector{msg("", "{not json", 7)});
  (void)app.apply(std::vector{msg("", "{not json", 7), msg("", "{not json", 8)});
  CHECK(count(db, "SELECT count(*) FROM dead_letters WHERE projection = 'users' AND svix_id IS NULL") == 2);
}

TEST_CASE("bad amounts older than the balance row are stale, and a dead letter a newer event superseded resolves") {
  store::database db(":memory:");
  pj::applier app(db, {pj::kind::balances});
  const std::string bad = R"({"points_balance":"12abc"})";
  // Out of order: the newer event first, then an older one with a bad
  // amount, which would not have been applied whatever it held.
  (void)app.apply(std::vector{msg("good", user_body("user.updated", "u1", 200, R"({"points_balance":7})"), 0)});
  const auto late = app.apply(std::vector{msg("late_bad", user_body("user.updated", "u1", 100, bad), 1)});
  CHECK(outcomes(late, pj::kind::balances) == std::vector{outcome::stale});
  CHECK(count(db, "SELECT count(*) FROM dead_letters") == 0);
  // In order: the bad amount is a dead letter while it is the newest word,
  // then a newer event supersedes it; a re-drive resolves it as stale
  // instead of failing for ever.
  CHECK(outcomes(app.apply(std::vector{msg("bad", user_body("user.updated", "u2", 100, bad), 2)}),
                 pj::kind::balances) == std::vector{outcome::dead_letter});
  const auto letters = pj::list_dead_letters(db);
  REQUIRE(letters.size() == 1);
  CHECK(pj::redrive_dead_letter(db, letters[0].id).result == outcome::dead_letter);  // not superseded yet
  (void)app.apply(std::vector{msg("fixed", user_body("user.updated", "u2", 300, R"({"points_balance":9})"), 3)});
  const auto r = pj::redrive_dead_letter(db, letters[0].id);
  CHECK(r.found);
  CHECK(r.result == outcome::stale);
  CHECK(pj::list_dead_letters(db).empty());
  CHECK(text(db, "SELECT points_balance FROM balances WHERE user_id = 'u2'") == "9");
}

TEST_CASE("write totals count each transaction, the wait for a shared turn and the time it was held") {
  store::database db(":memory:");
  std::mutex turn;
  pj::applier app(db, {pj::kind::users}, &turn);
  (void)app.apply(std::vector{msg("t1", user_body("user.created", "u1", 100), 0)});
  CHECK(app.totals().batches == 1);
  CHECK(app.totals().held > std::chrono::nanoseconds(0));
  CHECK(app.totals().held_cpu > std::chrono::nanoseconds(0));
  CHECK(app.totals().held_cpu <= app.totals().held + std::chrono::milliseconds(1));

  // Another holder of the turn keeps it 200 ms after the batch is on its
  // way to it (a decode away): the batch waits most of that time.
  std::unique_lock other(turn);
  std::atomic<bool> started{false};
  std::thread applying([&] {
    started = true;
    (void)app.apply(std::vector{msg("t2", user_body("user.updated", "u1", 200), 1)});
  });
  while (!started) std::this_thread::yield();
  std::this_thread::sleep_for(std::chrono::milliseconds(200));
  other.unlock();
  applying.join();
  CHECK(app.totals().batches == 2);
  CHECK(app.totals().waited >= std::chrono::milliseconds(100));
}

// A file at schema 7 at `path` holding dead letters (projection, topic,
// partition, offset, svix_id, type, reason, payload, created_at,
// resolved_at), given as SQL VALUES rows.
namespace {
void v7_with_letters(const std::string& path, const std::string& rows) {
  clerk_sync::test::file_at_schema(path, 7);
  SQLite::Database raw(path, SQLite::OPEN_READWRITE);
  raw.exec("INSERT INTO dead_letters(projection, topic, partition, \"offset\", svix_id, type, reason, payload, "
           "created_at, resolved_at) VALUES " + rows);
}
}  // namespace

TEST_CASE("migration 008 tells the letters dismissed before it from those re-driven, by the note dismiss wrote") {
  clerk_sync::test::temp_dir dir;
  const auto path = (dir / "v7.db").string();
  v7_with_letters(path,
                  "('users', 'clerk.events', 0, 1, 'msg_dismissed', NULL, 'not a Clerk event (dismissed: a load "
                  "test)', 'x', 1, 40), "
                  "('users', 'clerk.events', 0, 2, 'msg_redriven', NULL, 'fixed since', 'x', 1, 50), "
                  "('users', 'clerk.events', 0, 3, 'msg_pending', NULL, 'still fails', 'x', 1, NULL)");
  const auto dismissed = [](store::database& db) {
    std::string out;
    for (const auto& d : pj::list_dead_letters(db, {}, true))
      out += d.svix_id + "=" + (d.dismissed_at ? std::to_string(*d.dismissed_at) : "-") + " ";
    return out;
  };
  {
    // Read as it is, not migrated (`dead-letters list` on a backup, or
    // before the consumers restart after an upgrade): the same answer.
    store::database before(path, {.read_only = true});
    CHECK(before.schema_version() == 7);
    CHECK(dismissed(before) == "msg_dismissed=40 msg_redriven=- msg_pending=- ");
  }
  store::database db(path);  // migrates
  CHECK(db.schema_version() >= 8);
  CHECK(dismissed(db) == "msg_dismissed=40 msg_redriven=- msg_pending=- ");
}

TEST_CASE("migration 008 keeps one dead letter of a record without a svix-id, the dismissed one first") {
  clerk_sync::test::temp_dir dir;
  const auto path = (dir / "v7.db").string();
  // Offset 4 read three times (one copy dismissed), 5 twice, 6 once.
  v7_with_letters(path,
                  "('users', 'clerk.events', 0, 4, NULL, NULL, 'no svix-id', 'x', 1, NULL), "
                  "('users', 'clerk.events', 0, 4, NULL, NULL, 'no svix-id (dismissed: a test)', 'x', 2, 9), "
                  "('users', 'clerk.events', 0, 5, NULL, NULL, 'no svix-id', 'x', 3, NULL), "
                  "('users', 'clerk.events', 0, 4, NULL, NULL, 'no svix-id', 'x', 4, NULL), "
                  "('balances', 'clerk.events', 0, 4, NULL, NULL, 'no svix-id', 'x', 5, NULL), "
                  "('users', 'clerk.events', 0, 5, NULL, NULL, 'no svix-id', 'x', 6, NULL), "
                  "('users', 'clerk.events', 0, 6, NULL, NULL, 'no svix-id', 'x', 7, NULL)");
  store::database db(path);  // migrates
  std::string kept;
  for (const auto& d : pj::list_dead_letters(db, {}, true))
    kept += std::to_string(d.id) + ":" + d.projection + "@" + std::to_string(d.offset) + " ";
  CHECK(kept == "2:users@4 3:users@5 5:balances@4 7:users@6 ");
  pj::applier app(db, {pj::kind::users});
  (void)app.apply(std::vector{msg("", "{not json", 5)});  // read again
  CHECK(count(db, "SELECT count(*) FROM dead_letters") == 4);
}
