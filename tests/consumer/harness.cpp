#include "consumer/harness.hpp"

#include <doctest/doctest.h>

#include <SQLiteCpp/SQLiteCpp.h>

#include <atomic>
#include <thread>

#include "kafka/producer.hpp"
#include "projection/applier.hpp"
#include "store/database.hpp"
#include "support/support.hpp"

namespace clerk_sync::test {

std::vector<kafka::delivery_report> produce_events(const kafka::client_config& cfg, const std::string& topic,
                                                   const std::vector<generated_event>& events) {
  kafka::producer prod(cfg, {.message_timeout = std::chrono::seconds(30), .linger = std::chrono::milliseconds(5)});
  std::atomic<int> ok{0}, failed{0};
  std::vector<kafka::delivery_report> landed(events.size());  // each written by its own report only
  const auto received_at = std::to_string(
      std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::system_clock::now().time_since_epoch()).count());
  for (std::size_t i = 0; i < events.size(); ++i) {
    const auto& e = events[i];
    const kafka::outgoing_record rec{topic, e.key, e.body,
                                     {{"svix-id", e.svix_id},
                                      {"svix-timestamp", received_at.substr(0, received_at.size() - 3)},
                                      {"clerk-event-type", e.type},
                                      {"received-at", received_at}}};
    for (int attempt = 0;; ++attempt) {
      const auto st = prod.produce(rec, [&, i](const kafka::delivery_report& r) {
        landed[i] = r;
        (r.ok ? ok : failed)++;
      });
      if (st == kafka::enqueue_status::queued) break;
      REQUIRE(st == kafka::enqueue_status::queue_full);
      REQUIRE(attempt < 3000);
      std::this_thread::sleep_for(std::chrono::milliseconds(5));
    }
  }
  REQUIRE(prod.flush(std::chrono::seconds(60)));
  REQUIRE(failed.load() == 0);
  REQUIRE(ok.load() == static_cast<int>(events.size()));
  return landed;
}

std::unique_ptr<process> start_consumer(const std::vector<std::string>& args) {
  return start_consumer_on(broker().brokers, args);
}

std::unique_ptr<process> start_consumer_on(const std::string& brokers, const std::vector<std::string>& args) {
  return std::make_unique<process>(binary_path("app/consumer/clerk-sync-consumer"), args,
                                   std::map<std::string, std::string>{{"KAFKA_BROKERS", brokers},
                                                                      {"NOTIFY_SOCKET", ""}});
}

std::map<std::string, std::int64_t> stored_totals(const std::string& db_path, const std::string& topic) {
  std::map<std::string, std::int64_t> out;
  try {
    SQLite::Database db(db_path, SQLite::OPEN_READONLY);
    db.setBusyTimeout(1000);
    if (!db.tableExists("kafka_offsets")) return out;
    SQLite::Statement st(db, "SELECT projection, sum(next_offset) FROM kafka_offsets WHERE topic = ? GROUP BY projection");
    st.bind(1, topic);
    while (st.executeStep()) out[st.getColumn(0).getString()] = st.getColumn(1).getInt64();
  } catch (const SQLite::Exception&) {  // not created yet, or busy: the caller polls again
  }
  return out;
}

bool wait_caught_up(const std::string& db_path, const std::string& topic, const std::vector<std::string>& projections,
                    std::int64_t total, std::chrono::milliseconds timeout) {
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  while (std::chrono::steady_clock::now() < deadline) {
    const auto totals = stored_totals(db_path, topic);
    bool all = true;
    for (const auto& p : projections) {
      const auto it = totals.find(p);
      all = all && it != totals.end() && it->second == total;
    }
    if (all) return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  return false;
}

std::string reference_tables(const std::vector<generated_event>& events, const std::string& db_path,
                             const std::vector<projection::kind>& kinds) {
  store::database db(db_path);
  projection::applier ap(db, kinds);
  std::vector<projection::envelope> batch;
  std::int64_t offset = 0;
  for (const auto& e : events) batch.push_back({"reference", 0, offset++, e.svix_id, e.type, e.body});
  (void)ap.apply(batch);
  return dump_tables(db_path);
}

std::string dump_tables(const std::string& db_path) {
  SQLite::Database db(db_path, SQLite::OPEN_READONLY);
  std::string out;
  for (const char* sql : {"SELECT * FROM users ORDER BY id", "SELECT * FROM referrals ORDER BY user_id",
                          "SELECT * FROM balances ORDER BY user_id", "SELECT * FROM sessions ORDER BY id"}) {
    SQLite::Statement st(db, sql);
    out += sql;
    out += '\n';
    while (st.executeStep()) {
      for (int i = 0; i < st.getColumnCount(); ++i) {
        out += st.getColumn(i).isNull() ? "NULL" : st.getColumn(i).getString();
        out += '|';
      }
      out += '\n';
    }
  }
  return out;
}

}  // namespace clerk_sync::test
