#include "ops/swap.hpp"

#include <SQLiteCpp/SQLiteCpp.h>

#include <set>

#include "kafka/consumer.hpp"
#include "store/database.hpp"

namespace clerk_sync::ops {
namespace {

std::set<std::string> topics_of(SQLite::Database& db, const std::string& schema, const std::string& projection) {
  SQLite::Statement st(db, "SELECT DISTINCT topic FROM " + schema + ".kafka_offsets WHERE projection = ?");
  st.bind(1, projection);
  std::set<std::string> out;
  while (st.executeStep()) out.insert(st.getColumn(0).getString());
  return out;
}

// Replaces main's rows of `table` (those of `projection` when `where` names
// its column) with the rebuilt file's; the number of rows copied.
int replace_rows(SQLite::Database& db, const std::string& table, const std::string& columns, const std::string& where,
                 const std::string& projection) {
  const std::string filter = where.empty() ? "" : " WHERE " + where + " = ?";
  SQLite::Statement del(db, "DELETE FROM main." + table + filter);
  if (!where.empty()) del.bind(1, projection);
  del.exec();
  const std::string target = columns == "*" ? "" : " (" + columns + ")";
  SQLite::Statement ins(db, "INSERT INTO main." + table + target + " SELECT " + columns + " FROM rebuilt." + table +
                                filter);
  if (!where.empty()) ins.bind(1, projection);
  return ins.exec();
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

std::vector<swapped> swap_in(const std::string& from, const std::string& live,
                             const std::vector<projection::kind>& projections) {
  int from_version = 0;
  try {
    SQLite::Database rebuilt(from, SQLite::OPEN_READONLY);
    from_version = rebuilt.execAndGet("PRAGMA user_version").getInt();
  } catch (const SQLite::Exception& e) {
    throw store::open_error(from + ": " + e.what());
  }
  store::database db(live, {.keep_wal_files = true});  // the consumers' and auth's WAL files stay
  if (from_version != db.schema_version())
    throw swap_error(from + " is at schema version " + std::to_string(from_version) + ", " + live + " at " +
                     std::to_string(db.schema_version()) + ": replay again with this version of clerk-sync");
  std::vector<swapped> out;
  try {
    auto& c = db.native();
    const attached guard(c, from);
    for (const auto k : projections) {
      const std::string p(projection::name(k));
      const auto rebuilt_topics = topics_of(c, "rebuilt", p);
      if (rebuilt_topics.empty())
        throw swap_error(from + " holds no stored offsets for " + p + ": it is not a replay of that projection");
      const auto live_topics = topics_of(c, "main", p);
      if (!live_topics.empty() && live_topics != rebuilt_topics)
        throw swap_error(from + " was replayed from " + *rebuilt_topics.begin() + ", " + live + "'s " + p +
                         " reads " + *live_topics.begin());
    }
    SQLite::Transaction tx(c, SQLite::TransactionBehavior::IMMEDIATE);
    for (const auto k : projections) {
      const std::string p(projection::name(k));
      swapped s{k};
      // Same schema version: the same columns in the same order.
      s.rows = replace_rows(c, p, "*", "", p);
      s.ledger_rows = replace_rows(c, "applied_events", "*", "projection", p);
      s.offsets = replace_rows(c, "kafka_offsets", "*", "projection", p);
      // Their ids are the live file's own.
      s.dead_letters = replace_rows(
          c, "dead_letters",
          "projection, topic, partition, \"offset\", svix_id, type, reason, payload, created_at, resolved_at",
          "projection", p);
      out.push_back(s);
    }
    tx.commit();
  } catch (const SQLite::Exception& e) {
    throw store::db_error(e.what());
  }
  return out;
}

std::vector<std::string> running_consumers(const kafka::client_config& cfg, const std::string& prefix,
                                           const std::vector<projection::kind>& projections,
                                           std::chrono::milliseconds timeout) {
  std::vector<std::string> out;
  for (const auto k : projections) {
    const std::string group = prefix + "." + std::string(projection::name(k));
    // A handle with the group's id that never subscribes: it asks, never joins.
    const kafka::consumer asker(cfg, group);
    for (const auto& m : asker.other_members(timeout)) out.push_back(group + ": " + m.client_id + "@" + m.host);
  }
  return out;
}

}  // namespace clerk_sync::ops
