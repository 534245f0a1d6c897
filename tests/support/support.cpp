#include "support/support.hpp"

#include <SQLiteCpp/SQLiteCpp.h>
#include <doctest/doctest.h>
#include <unistd.h>

#include <atomic>
#include <cstdlib>
#include <fstream>
#include <future>
#include <random>
#include <sstream>
#include <stdexcept>
#include <thread>

#include "kafka/admin.hpp"
#include "kafka/producer.hpp"
#include "store/database.hpp"

namespace clerk_sync::test {

kafka::client_config broker() {
  const char* b = std::getenv("CLERK_SYNC_TEST_BROKERS");
  REQUIRE_MESSAGE(b != nullptr, "CLERK_SYNC_TEST_BROKERS is not set: run through scripts/test, which starts a broker");
  kafka::client_config cfg;
  cfg.brokers = b;
  return cfg;
}

std::string unique_name(const std::string& prefix) {
  static std::atomic<int> counter{0};
  const auto t = std::chrono::steady_clock::now().time_since_epoch().count();
  return prefix + "-" + std::to_string(::getpid()) + "-" + std::to_string(counter++) + "-" +
         std::to_string(t % 1'000'000'007);
}

std::string fresh_topic(const std::string& prefix, int partitions) {
  const std::string name = unique_name(prefix);
  kafka::topic_spec spec{name, partitions, 1, {{"retention.ms", "-1"}}};
  REQUIRE(kafka::create_topic(broker(), spec, std::chrono::seconds(15)) == kafka::create_outcome::created);
  return name;
}

void recreate_topic(const std::string& topic) {
  kafka::delete_topic(broker(), topic, std::chrono::seconds(30));
  bool created = false;
  for (int i = 0; i < 120 && !created; ++i) {
    try {
      created = kafka::create_topic(broker(), {.name = topic, .partitions = 1, .replication_factor = 1, .configs = {}},
                                    std::chrono::seconds(10)) == kafka::create_outcome::created;
    } catch (const kafka::fatal_error&) {  // NOLINT(bugprone-empty-catch): still being deleted; tried again
    }
    if (!created) std::this_thread::sleep_for(std::chrono::milliseconds(500));
  }
  REQUIRE(created);
}

temp_dir::temp_dir() {
  std::string tmpl = (std::filesystem::temp_directory_path() / "clerk-sync-test-XXXXXX").string();
  REQUIRE(::mkdtemp(tmpl.data()) != nullptr);
  path_ = tmpl;
}

temp_dir::~temp_dir() {
  std::error_code ec;
  std::filesystem::remove_all(path_, ec);
}

std::filesystem::path source_path(const std::string& relative) {
  return std::filesystem::path(CLERK_SYNC_SOURCE_DIR) / relative;
}

std::filesystem::path binary_path(const std::string& relative) {
  return std::filesystem::path(CLERK_SYNC_BINARY_DIR) / relative;
}

std::string kafka_libs() {
  const char* env = std::getenv("KAFKA_LOCAL_LIBS");
  return env && *env ? std::string(env) : source_path(".local/kafka-libs").string();
}

std::string read_file(const std::filesystem::path& p) {
  std::ifstream in(p, std::ios::binary);
  // An exception, not REQUIRE: this runs inside lazily evaluated INFO()
  // messages, where a nested doctest context would corrupt doctest's own state.
  if (!in.good()) throw std::runtime_error("cannot read " + p.string());
  std::ostringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

std::int64_t query_int(const std::string& db_path, const std::string& sql) {
  SQLite::Database db(db_path, SQLite::OPEN_READONLY);
  db.setBusyTimeout(5'000);
  return db.execAndGet(sql).getInt64();
}

std::vector<std::string> lines_of(const std::string& text) {
  std::vector<std::string> out;
  std::istringstream in(text);
  for (std::string line; std::getline(in, line);) out.push_back(line);
  return out;
}

std::string line_with(const std::string& text, const std::string& needle) {
  for (const auto& line : lines_of(text))
    if (line.find(needle) != std::string::npos) return line;
  return "";
}

std::size_t count_of(const std::string& text, const std::string& needle) {
  std::size_t n = 0;
  for (auto at = text.find(needle); at != std::string::npos; at = text.find(needle, at + 1)) ++n;
  return n;
}

void store_offset(const std::string& db_path, const stored_offset& o) {
  SQLite::Database db(db_path, SQLite::OPEN_READWRITE);
  db.setBusyTimeout(5'000);
  SQLite::Statement upsert(db,
                           "INSERT INTO kafka_offsets(projection, topic, partition, next_offset, updated_at, "
                           "last_svix_id) VALUES (?, ?, ?, ?, 0, NULLIF(?, '')) ON CONFLICT DO UPDATE SET "
                           "next_offset = excluded.next_offset, last_svix_id = excluded.last_svix_id");
  upsert.bind(1, o.projection);
  upsert.bind(2, o.topic);
  upsert.bind(3, o.partition);
  upsert.bind(4, o.next_offset);
  upsert.bind(5, o.last_svix_id);
  upsert.exec();
}

void mark_finished_replay(const std::string& db_path) {
  SQLite::Database db(db_path, SQLite::OPEN_READWRITE);
  db.setBusyTimeout(5'000);
  db.exec("PRAGMA application_id = " + std::to_string(store::finished_replay_id));
}

void file_at_schema(const std::string& path, int version) {
  SQLite::Database c(path, SQLite::OPEN_READWRITE | SQLite::OPEN_CREATE);
  for (const auto& m : store::embedded_migrations()) {
    if (m.version > version) break;
    c.exec(std::string(m.sql));
    c.exec("PRAGMA user_version = " + std::to_string(m.version));
  }
}

two_leader_topic make_two_leader_topic(kafka::mock_cluster& mock, const std::string& topic) {
  mock.create_topic(topic, 2, 2);
  mock.set_partition_leader(topic, 0, 1);
  mock.set_partition_leader(topic, 1, 2);
  two_leader_topic out;
  kafka::producer prod({mock.bootstrap_servers(), {}}, {});
  for (int i = 0; out.first_svix_id.size() < 2 && i < 64; ++i) {
    std::promise<kafka::delivery_report> done;
    const auto id = "msg_" + std::to_string(i);
    REQUIRE(prod.produce({topic, "user_" + std::to_string(i), "{}", {{"svix-id", id}}},
                         [&done](const kafka::delivery_report& r) { done.set_value(r); }) ==
            kafka::enqueue_status::queued);
    const auto r = done.get_future().get();
    REQUIRE_MESSAGE(r.ok, r.error);
    if (r.offset == 0) out.first_svix_id[r.partition] = id;
    out.end[r.partition] = r.offset + 1;
  }
  REQUIRE(out.first_svix_id.size() == 2);
  return out;
}

capture_stderr::capture_stderr() {
  std::fflush(stderr);
  saved_ = dup(2);
  file_ = std::tmpfile();
  REQUIRE(file_ != nullptr);
  dup2(fileno(file_), 2);
}

capture_stderr::~capture_stderr() {
  std::fflush(stderr);
  dup2(saved_, 2);
  close(saved_);
  std::fclose(file_);
}

std::string capture_stderr::text() const {
  std::fflush(stderr);
  std::string out;
  std::rewind(file_);
  char buf[4096];
  for (std::size_t n; (n = std::fread(buf, 1, sizeof buf, file_)) > 0;) out.append(buf, n);
  return out;
}

}  // namespace clerk_sync::test
