// bench-consumer-ceiling DB EVENTS USERS PROJECTIONS BATCH [CONSUMER_DB]: the benchmark's
// ceiling. Writes the same final rows as the consumer from the same generated
// events with a plain loop of prepared upserts, BATCH events a transaction: decoding and mapping
// included, but no Kafka, no ledger, no offsets. Prints events/s; with
// CONSUMER_DB, also whether its projection tables equal ours. Not a test.
#include <SQLiteCpp/SQLiteCpp.h>

#include <algorithm>
#include <chrono>
#include <ctime>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <utility>
#include <vector>

#include "consumer/generator.hpp"
#include "event/clerk_event.hpp"
#include "projection/mapping.hpp"
#include "store/database.hpp"

#if __has_include(<valgrind/callgrind.h>)
#include <valgrind/callgrind.h>
#else
#define CALLGRIND_TOGGLE_COLLECT
#endif

namespace {

namespace pj = clerk_sync::projection;
namespace ev = clerk_sync::event;

const std::string guard(const std::string& t) {
  return " WHERE excluded.updated_at >= " + t + ".updated_at AND (" + t + ".deleted_at IS NULL OR excluded.updated_at > " +
         t + ".deleted_at)";
}
const std::string terminal = "('ended','removed','revoked','expired','abandoned','replaced')";

template <class T>
void bind_opt(SQLite::Statement& st, int i, const std::optional<T>& v) {
  if (v)
    st.bind(i, *v);
  else
    st.bind(i);
}

// Each projection table's rows in key order, a line each ("users: ..."),
// after a line of its column names ("columns of users: ...").
std::vector<std::string> dump(const std::string& path) {
  SQLite::Database db(path, SQLite::OPEN_READONLY);
  std::vector<std::string> out;
  for (const auto& [table, key] : {std::pair{"users", "id"}, std::pair{"referrals", "user_id"},
                                   std::pair{"balances", "user_id"}, std::pair{"sessions", "id"}}) {
    SQLite::Statement st(db, std::string("SELECT * FROM ") + table + " ORDER BY " + key);
    std::string names = std::string("columns of ") + table + ":";
    for (int i = 0; i < st.getColumnCount(); ++i) names += std::string(" ") + st.getColumnName(i);
    out.push_back(names);
    while (st.executeStep()) {
      std::string row = std::string(table) + ":";
      for (int i = 0; i < st.getColumnCount(); ++i)
        row += std::string(" ") + (st.getColumn(i).isNull() ? "NULL" : st.getColumn(i).getString());
      out.push_back(row);
    }
  }
  return out;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 6) {
    std::fprintf(stderr, "usage: bench-consumer-ceiling DB EVENTS USERS PROJECTIONS BATCH [CONSUMER_DB]\n");
    return 2;
  }
  const auto kinds = pj::parse_kinds(argv[4]);
  const auto batch = static_cast<std::size_t>(std::atol(argv[5]));
  if (!kinds || batch == 0) return 2;
  auto wants = [&](pj::kind k) { return std::find(kinds->begin(), kinds->end(), k) != kinds->end(); };
  const bool w_users = wants(pj::kind::users), w_referrals = wants(pj::kind::referrals),
             w_balances = wants(pj::kind::balances), w_sessions = wants(pj::kind::sessions);
  const auto events = clerk_sync::test::generate_events(
      {.users = std::atoi(argv[3]), .events = std::atoi(argv[2]), .seed = 1});
  clerk_sync::store::database store(argv[1]);
  auto& db = store.native();
  SQLite::Statement user(db,
                         "INSERT INTO users(id, email, first_name, last_name, username, image_url, role, banned, "
                         "created_at, updated_at, last_sign_in_at) VALUES (?,?,?,?,?,?,?,?,?,?,?) ON CONFLICT(id) DO "
                         "UPDATE SET email = excluded.email, first_name = excluded.first_name, last_name = "
                         "excluded.last_name, username = excluded.username, image_url = excluded.image_url, role = "
                         "excluded.role, banned = excluded.banned, created_at = excluded.created_at, updated_at = "
                         "excluded.updated_at, last_sign_in_at = excluded.last_sign_in_at" + guard("users"));
  // The generated events give each user a code of its own: no conflicts to
  // settle. A deleted user names its code without holding it, and a claim
  // dates from the first event that named its code; a referrer, from the
  // first event that named one (none names one earlier than that and
  // arrives later).
  SQLite::Statement referral(db,
                             "INSERT INTO referrals(user_id, referral_code, referrer_id, updated_at, referral_code_since, "
                             "referrer_since) VALUES (?1,?2,?3,?4, CASE WHEN ?2 IS NULL THEN NULL ELSE ?4 END, "
                             "CASE WHEN ?3 IS NULL THEN NULL ELSE ?4 END) "
                             "ON CONFLICT(user_id) DO UPDATE SET "
                             "referral_code = CASE WHEN referrals.deleted_at IS NULL THEN excluded.referral_code END, "
                             "pending_referral_code = CASE WHEN referrals.deleted_at IS NOT NULL THEN "
                             "excluded.referral_code END, "
                             "referral_code_since = CASE WHEN excluded.referral_code IS NULL THEN NULL "
                             "WHEN excluded.referral_code = coalesce(referrals.referral_code, "
                             "referrals.pending_referral_code) AND referrals.referral_code_since IS NOT NULL "
                             "THEN referrals.referral_code_since ELSE excluded.updated_at END, "
                             "referrer_id = coalesce(referrals.referrer_id, excluded.referrer_id), "
                             "referrer_since = CASE WHEN referrals.referrer_id IS NULL THEN excluded.referrer_since "
                             "ELSE referrals.referrer_since END, "
                             "updated_at = excluded.updated_at" +
                                 guard("referrals"));
  SQLite::Statement balance(db,
                            "INSERT INTO balances(user_id, points_balance, g2a_balance, nft_count, updated_at) VALUES "
                            "(?,?,?,?,?) ON CONFLICT(user_id) DO UPDATE SET points_balance = excluded.points_balance, "
                            "g2a_balance = excluded.g2a_balance, nft_count = excluded.nft_count, updated_at = "
                            "excluded.updated_at" + guard("balances"));
  SQLite::Statement session(db,
                            "INSERT INTO sessions(id, user_id, status, created_at, updated_at, last_active_at, "
                            "expire_at, ended_at) VALUES (?,?,?,?,?,?,?,?) ON CONFLICT(id) DO UPDATE SET user_id = "
                            "excluded.user_id, status = excluded.status, created_at = excluded.created_at, updated_at "
                            "= excluded.updated_at, last_active_at = excluded.last_active_at, expire_at = "
                            "excluded.expire_at, ended_at = excluded.ended_at WHERE (sessions.status NOT IN " + terminal +
                                " AND (excluded.status IN " + terminal +
                                " OR excluded.updated_at >= sessions.updated_at)) OR (sessions.status IN " + terminal +
                                " AND excluded.status IN " + terminal + " AND excluded.updated_at > sessions.updated_at)");
  std::vector<SQLite::Statement> tombstones;
  for (const char* t : {"users(id", "referrals(user_id", "balances(user_id"}) {
    const std::string table = std::string(t).substr(0, std::string(t).find('('));
    // A deleted user holds no referral code: it stays named, as pending.
    const std::string gives_up = table == "referrals" ? ", pending_referral_code = coalesce(referrals.pending_referral_code, "
                                                        "referrals.referral_code), referral_code = NULL"
                                                      : "";
    tombstones.emplace_back(db, "INSERT INTO " + std::string(t) + ", deleted_at) VALUES (?, ?) ON CONFLICT DO UPDATE SET "
                                "deleted_at = excluded.deleted_at" + gives_up + " WHERE " + table + ".deleted_at IS NULL");
  }

  const auto t0 = std::chrono::steady_clock::now();
  const std::clock_t cpu0 = std::clock();
  std::size_t i = 0;
  // scripts/bench instructions counts this loop alone under callgrind (the
  // floor of its `apply` case); a no-op otherwise.
  CALLGRIND_TOGGLE_COLLECT;
  while (i < events.size()) {
    SQLite::Transaction tx(db, SQLite::TransactionBehavior::IMMEDIATE);
    for (std::size_t n = 0; n < batch && i < events.size(); ++n, ++i) {
      auto decoded = ev::decode(events[i].body);
      auto* e = std::get_if<ev::clerk_event>(&decoded);
      if (!e) continue;
      if (auto* d = std::get_if<ev::user_deleted>(&e->data)) {
        for (std::size_t k = 0; k < tombstones.size(); ++k) {
          if (!(k == 0 ? w_users : k == 1 ? w_referrals : w_balances)) continue;
          auto& st = tombstones[k];
          st.bind(1, d->id);
          st.bind(2, e->timestamp_ms);
          st.exec();
          st.reset();
        }
        continue;
      }
      const ev::user* u = std::get_if<ev::user>(&e->data);
      if (auto* s = std::get_if<ev::session>(&e->data)) {
        if (s->embedded_user) u = &*s->embedded_user;
        if (w_sessions) {
          const auto r = pj::map_session(*s);
          session.bind(1, r.id);
          session.bind(2, r.user_id);
          session.bind(3, r.status);
          bind_opt(session, 4, r.created_at);
          session.bind(5, r.updated_at);
          bind_opt(session, 6, r.last_active_at);
          bind_opt(session, 7, r.expire_at);
          bind_opt(session, 8, r.ended_at);
          session.exec();
          session.reset();
        }
      }
      if (!u) continue;
      if (w_users) {
        const auto ur = pj::map_user(*u);
        user.bind(1, ur.id);
        bind_opt(user, 2, ur.email);
        bind_opt(user, 3, ur.first_name);
        bind_opt(user, 4, ur.last_name);
        bind_opt(user, 5, ur.username);
        bind_opt(user, 6, ur.image_url);
        user.bind(7, ur.role);
        user.bind(8, ur.banned ? 1 : 0);
        bind_opt(user, 9, ur.created_at);
        user.bind(10, ur.updated_at);
        bind_opt(user, 11, ur.last_sign_in_at);
        user.exec();
        user.reset();
      }
      if (w_referrals) {
        const auto mapped = pj::map_referral(*u);
        const auto& rr = std::get<pj::referral_row>(mapped);  // the bench's events all map
        referral.bind(1, rr.user_id);
        bind_opt(referral, 2, rr.referral_code);
        bind_opt(referral, 3, rr.referrer_id);
        referral.bind(4, rr.updated_at);
        referral.exec();
        referral.reset();
      }
      if (!w_balances) continue;
      const auto br = pj::map_balance(*u);
      if (const auto* b = std::get_if<pj::balance_row>(&br)) {
        balance.bind(1, b->user_id);
        balance.bind(2, b->points_balance);
        balance.bind(3, b->g2a_balance);
        balance.bind(4, b->nft_count);
        balance.bind(5, b->updated_at);
        balance.exec();
        balance.reset();
      }
    }
    tx.commit();
  }
  CALLGRIND_TOGGLE_COLLECT;
  const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  const double cpu = static_cast<double>(std::clock() - cpu0) / CLOCKS_PER_SEC;
  std::printf("ceiling_events=%zu ceiling_seconds=%.3f ceiling_cpu_seconds=%.3f ceiling_events_per_s=%.0f\n",
              events.size(), secs, cpu, static_cast<double>(events.size()) / secs);
  if (argc == 7) {
    const auto ceiling = dump(argv[1]);
    const auto consumer = dump(argv[6]);
    const bool same = ceiling == consumer;
    std::printf("same_rows=%s\n", same ? "yes" : "no");
    if (!same) {
      // The first row that differs, with its table's columns: what the
      // ceiling's SQL no longer does as the applier does.
      std::size_t at = 0;
      while (at < ceiling.size() && at < consumer.size() && ceiling[at] == consumer[at]) ++at;
      std::string columns;
      for (std::size_t j = 0; j <= at && j < ceiling.size(); ++j)
        if (ceiling[j].starts_with("columns of ")) columns = ceiling[j];
      std::fprintf(stderr, "bench-consumer-ceiling: the final rows differ first at row %zu\n  columns  %s\n  ceiling  %s\n  consumer %s\n",
                   at, columns.c_str(), at < ceiling.size() ? ceiling[at].c_str() : "(none)",
                   at < consumer.size() ? consumer[at].c_str() : "(none)");
    }
    return same ? 0 : 1;
  }
  return 0;
}
