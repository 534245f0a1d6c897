#pragma once
// Shared test helpers: the real broker scripts/test started, unique topics
// on it, temporary folders, and paths of the built binaries.

#include <chrono>
#include <cstdint>
#include <cstdio>
#include <filesystem>
#include <map>
#include <string>
#include <vector>

#include "kafka/client.hpp"
#include "kafka/mock_cluster.hpp"

namespace clerk_sync::test {

// The broker from CLERK_SYNC_TEST_BROKERS; fails the test (never skips) when
// it is not set, so a run without a broker cannot pass silently.
[[nodiscard]] kafka::client_config broker();

// Creates a fresh topic with a unique name on the test broker and returns its name.
[[nodiscard]] std::string fresh_topic(const std::string& prefix, int partitions = 3);

// Deletes `topic` on the test broker and creates it again, empty, with one
// partition (the broker finishes a deletion in the background: the creation
// is retried for up to a minute).
void recreate_topic(const std::string& topic);

// A unique name (prefix + pid + counter + time), for topics and groups.
[[nodiscard]] std::string unique_name(const std::string& prefix);

// A temporary folder removed when the object goes away.
class temp_dir {
 public:
  temp_dir();
  ~temp_dir();
  temp_dir(const temp_dir&) = delete;
  temp_dir& operator=(const temp_dir&) = delete;
  [[nodiscard]] const std::filesystem::path& path() const { return path_; }
  [[nodiscard]] std::filesystem::path operator/(const std::string& name) const { return path_ / name; }

 private:
  std::filesystem::path path_;
};

// Path of a file in the source tree, e.g. source_path("tests/fixtures/x.json").
[[nodiscard]] std::filesystem::path source_path(const std::string& relative);
// Path of a built file, e.g. binary_path("app/receiver/clerk-sync-receiver").
[[nodiscard]] std::filesystem::path binary_path(const std::string& relative);
// The Kafka jars scripts/kafka-local runs the broker from (KAFKA_LOCAL_LIBS,
// else .local/kafka-libs), for Kafka's own tools: java -cp <this>/* <class>.
[[nodiscard]] std::string kafka_libs();

[[nodiscard]] std::string read_file(const std::filesystem::path& p);

// Log text: its lines; the first line holding `needle` (or ""); how often
// `needle` occurs in it.
[[nodiscard]] std::vector<std::string> lines_of(const std::string& text);
[[nodiscard]] std::string line_with(const std::string& text, const std::string& needle);
[[nodiscard]] std::size_t count_of(const std::string& text, const std::string& needle);

// Runs a query returning one integer on a SQLite file, read-only, waiting
// up to 5 s for a writer's lock.
[[nodiscard]] std::int64_t query_int(const std::string& db_path, const std::string& sql);

// A consumer's stored position: the next offset of `projection` in
// topic/partition and the svix-id of the record before it ("" leaves it NULL).
struct stored_offset {
  std::string projection = "users";
  std::string topic = "clerk.events";
  std::int32_t partition = 0;
  std::int64_t next_offset = 0;
  std::string last_svix_id = "";
};
// Writes it into an existing clerk-sync file, over the row already there.
void store_offset(const std::string& db_path, const stored_offset& o);

// Gives a file the mark a finished `ctl replay` gives its own.
void mark_finished_replay(const std::string& db_path);

// A clerk-sync file at schema version `version`, made with the binary's own
// migrations up to it (what an older consumer left, for migration tests).
void file_at_schema(const std::string& path, int version);

// A topic of two partitions on a two-broker mock cluster, partition 0 led
// by broker 1 and partition 1 by broker 2, so that a test can fail one
// leader; records are produced until each partition holds one (at most 64).
struct two_leader_topic {
  std::map<std::int32_t, std::string> first_svix_id;  // partition -> svix-id of its record at offset 0
  std::map<std::int32_t, std::int64_t> end;           // partition -> its high watermark
};
[[nodiscard]] two_leader_topic make_two_leader_topic(kafka::mock_cluster& mock, const std::string& topic);

// Sends this process's stderr (where lib/log writes) to a temporary file
// while it lives; text() reads what was written so far.
class capture_stderr {
 public:
  capture_stderr();
  ~capture_stderr();
  capture_stderr(const capture_stderr&) = delete;
  capture_stderr& operator=(const capture_stderr&) = delete;
  [[nodiscard]] std::string text() const;

 private:
  int saved_ = -1;
  std::FILE* file_ = nullptr;
};

}  // namespace clerk_sync::test
