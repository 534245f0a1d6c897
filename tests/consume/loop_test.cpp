// The consume loop in-process, without the binary: on the real broker, with
// real database files.
#include "consume/loop.hpp"

#include <doctest/doctest.h>

#include <SQLiteCpp/SQLiteCpp.h>

#include <thread>

#include "consumer/harness.hpp"
#include "kafka/admin.hpp"
#include "kafka/mock_cluster.hpp"
#include "support/support.hpp"

using namespace std::chrono_literals;
namespace t = clerk_sync::test;
namespace cs = clerk_sync;

namespace {

// The loop on its own thread; stop() sets the flag and returns the exit code.
class running_loop {
 public:
  explicit running_loop(cs::consume::loop_config cfg) : cfg_(std::move(cfg)) {
    thread_ = std::thread([this] { (void)cs::consume::run_loop(cfg_, stop_, state_); });
  }
  ~running_loop() {
    stop_ = true;
    if (thread_.joinable()) thread_.join();
  }
  running_loop(const running_loop&) = delete;
  running_loop& operator=(const running_loop&) = delete;
  int stop() {
    stop_ = true;
    thread_.join();
    return state_.exit_code.load();
  }
  // Waits for the loop to end on its own; nullopt when it did not within `timeout`.
  std::optional<int> wait_done(std::chrono::milliseconds timeout) {
    const auto deadline = std::chrono::steady_clock::now() + timeout;
    while (!state_.done.load() && std::chrono::steady_clock::now() < deadline) std::this_thread::sleep_for(50ms);
    if (!state_.done.load()) return std::nullopt;
    thread_.join();
    return state_.exit_code.load();
  }
  const cs::consume::loop_state& state() const { return state_; }

 private:
  cs::consume::loop_config cfg_;
  std::atomic<bool> stop_{false};
  cs::consume::loop_state state_;
  std::thread thread_;
};

cs::consume::loop_config config_for(const std::string& topic, const std::string& db, cs::projection::kind k) {
  cs::consume::loop_config cfg;
  cfg.kafka = t::broker();
  cfg.topic = topic;
  cfg.db_path = db;
  cfg.group_prefix = t::unique_name("loop");
  cfg.projection = k;
  cfg.batch_size = 50;
  return cfg;
}

}  // namespace

TEST_CASE("the loop applies a topic in batches with its offsets and stops cleanly") {
  const auto topic = t::fresh_topic("loop-apply", 2);
  t::temp_dir dir;
  const auto db = (dir / "loop.db").string();
  const auto events = t::generate_events({.users = 20, .events = 300, .seed = 21});
  t::produce_events(t::broker(), topic, events);
  running_loop loop(config_for(topic, db, cs::projection::kind::users));
  REQUIRE(t::wait_caught_up(db, topic, {"users"}, static_cast<std::int64_t>(events.size()), 60s));
  CHECK(loop.state().subscribed.load());
  CHECK(loop.stop() == 0);
  CHECK(t::query_int(db, "SELECT count(*) FROM users") == 20);
}

TEST_CASE("a batch the database refuses is retried under the policy, then the loop gives up with exit 3") {
  const auto topic = t::fresh_topic("loop-retry", 1);
  t::temp_dir dir;
  const auto db = (dir / "loop.db").string();
  { const cs::store::database create(db); }
  SQLite::Database holder(db, SQLite::OPEN_READWRITE);
  holder.exec("BEGIN IMMEDIATE");
  t::produce_events(t::broker(), topic, t::generate_events({.users = 3, .events = 10, .seed = 22}));
  auto cfg = config_for(topic, db, cs::projection::kind::users);
  cfg.busy_timeout = 50ms;
  cfg.retry.budget = 1500ms;
  running_loop loop(cfg);
  const auto code = loop.wait_done(60s);
  REQUIRE(code.has_value());
  CHECK(*code == cs::consume::exit_db_failed);
  holder.exec("ROLLBACK");
  CHECK(t::stored_totals(db, topic).empty());
}

TEST_CASE("a stop cuts the retries of a batch the database refuses to 10 s, not the budget") {
  // The budget may be up to 240 s, past systemd's TimeoutStopSec: a stop
  // waiting it out was killed without its last lines.
  const auto topic = t::fresh_topic("loop-retry-stop", 1);
  t::temp_dir dir;
  const auto db = (dir / "loop.db").string();
  { const cs::store::database create(db); }
  SQLite::Database holder(db, SQLite::OPEN_READWRITE);
  holder.exec("BEGIN IMMEDIATE");
  t::produce_events(t::broker(), topic, t::generate_events({.users = 3, .events = 10, .seed = 23}));
  auto cfg = config_for(topic, db, cs::projection::kind::users);
  cfg.busy_timeout = 50ms;
  cfg.retry.budget = 120s;
  const t::capture_stderr log;
  running_loop loop(cfg);
  // Retrying: the batch was read and refused at least once.
  const auto deadline = std::chrono::steady_clock::now() + 60s;
  while (log.text().find("msg=db_retry") == std::string::npos && std::chrono::steady_clock::now() < deadline)
    std::this_thread::sleep_for(100ms);
  REQUIRE(log.text().find("msg=db_retry") != std::string::npos);
  const auto asked = std::chrono::steady_clock::now();
  CHECK(loop.stop() == cs::consume::exit_db_failed);  // the batch was not written, and says so
  CHECK(std::chrono::steady_clock::now() - asked < 30s);  // about 10 s of retries once stopped
  holder.exec("ROLLBACK");
  CHECK(t::stored_totals(db, topic).empty());
}

TEST_CASE("a log start the broker cannot tell is a Kafka failure (exit 4, restarted), not a stored offset gone (exit 5)") {
  // A partition with no stored offset starts at the log's first record,
  // which librdkafka asks the broker for (ListOffsets). When that fails
  // for good (UNKNOWN_TOPIC_OR_PART: a topic being deleted or just
  // recreated), auto.offset.reset=error reports it as an offset reset of
  // offset -2: nothing stored is out of range, and exit 5 would wait for
  // an operator to rebuild what a restart fixes. The mock cluster injects it.
  cs::kafka::mock_cluster mock(1);
  mock.create_topic("loop-listoffsets", 1);
  mock.fail_next_requests(2 /* ListOffsets */, 20, 3 /* UNKNOWN_TOPIC_OR_PART */);
  t::temp_dir dir;
  const auto db = (dir / "loop.db").string();
  auto cfg = config_for("loop-listoffsets", db, cs::projection::kind::users);
  cfg.kafka = {mock.bootstrap_servers(), {}};
  running_loop loop(cfg);
  const auto code = loop.wait_done(60s);
  REQUIRE(code.has_value());
  CHECK(*code == cs::consume::exit_kafka_failed);
  CHECK(t::stored_totals(db, "loop-listoffsets").empty());
}

TEST_CASE("a stored offset beyond the log ends the loop with exit 5 and leaves the offset alone") {
  const auto topic = t::fresh_topic("loop-range", 1);
  t::temp_dir dir;
  const auto db = (dir / "loop.db").string();
  t::produce_events(t::broker(), topic, t::generate_events({.users = 3, .events = 10, .seed = 23}));
  { const cs::store::database create(db); }
  t::store_offset(db, {.topic = topic, .next_offset = 1000});
  running_loop loop(config_for(topic, db, cs::projection::kind::users));
  const auto code = loop.wait_done(60s);
  REQUIRE(code.has_value());
  CHECK(*code == cs::consume::exit_offset_out_of_range);
  CHECK(t::stored_totals(db, topic)["users"] == 1000);
}
