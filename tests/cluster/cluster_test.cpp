// Three real brokers (scripts/kafka-local, KAFKA_LOCAL_NODES=3), the real
// receiver and consumer binaries, and a Svix-like sender at a steady rate:
// the leader of a partition is killed (-9) and restarted, then two nodes at
// once. Nothing answered 2xx may be lost, nothing applied twice, and while
// fewer replicas than min.insync.replicas live, nothing may be answered 200.
// The test starts and stops its own cluster (CLERK_SYNC_TEST_CLUSTER_PORT,
// default 19192, and the next five ports; state in the build folder).

#include <doctest/doctest.h>

#include <algorithm>
#include <atomic>
#include <csignal>
#include <cstdlib>
#include <fstream>
#include <functional>
#include <future>
#include <iostream>
#include <map>
#include <mutex>
#include <optional>
#include <set>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "consumer/generator.hpp"
#include "consumer/harness.hpp"
#include "kafka/admin.hpp"
#include "projection/applier.hpp"
#include "receiver/harness.hpp"
#include "store/database.hpp"
#include "support/process.hpp"
#include "support/support.hpp"
#include "verify/svix.hpp"

using namespace std::chrono_literals;
namespace cs = clerk_sync;
namespace test = clerk_sync::test;
using clock_type = std::chrono::steady_clock;

namespace {

const std::vector<std::string> all_projections{"users", "referrals", "balances", "sessions"};

// The cluster of this test; stopped (every node, no process left) when the
// object goes away, whatever the test's outcome.
class cluster {
 public:
  cluster() : dir_(test::binary_path("test-cluster")) {
    const char* p = std::getenv("CLERK_SYNC_TEST_CLUSTER_PORT");
    port_ = p && *p ? std::stoi(p) : 19192;
    (void)script({"stop"}, 120s);  // a previous run killed before its clean-up
    std::filesystem::remove_all(dir_);
    const auto r = script({"start"}, 300s);
    REQUIRE_MESSAGE(r.status == 0, "kafka-local start: " << r.err);
    std::istringstream lines(r.out);
    for (std::string line; std::getline(lines, line);)
      if (!line.empty()) brokers_ = line;
  }
  ~cluster() { (void)script({"stop"}, 120s); }
  cluster(const cluster&) = delete;
  cluster& operator=(const cluster&) = delete;

  [[nodiscard]] const std::string& brokers() const { return brokers_; }
  [[nodiscard]] cs::kafka::client_config config() const {
    cs::kafka::client_config c;
    c.brokers = brokers_;
    return c;
  }
  // SIGKILL: a crash, not a clean shutdown.
  void kill_node(int n) const {
    const auto r = script({"stop-node", std::to_string(n)}, 60s, true);
    REQUIRE_MESSAGE(r.status == 0, "stop-node " << n << ": " << r.err);
  }
  void start_node(int n) const {
    const auto r = script({"start-node", std::to_string(n)}, 300s);
    REQUIRE_MESSAGE(r.status == 0, "start-node " << n << ": " << r.err);
  }

 private:
  test::run_result script(const std::vector<std::string>& args, std::chrono::milliseconds timeout,
                          bool kill = false) const {
    return test::run(test::source_path("scripts/kafka-local"), args,
                     {{"KAFKA_LOCAL_NODES", "3"},
                      {"KAFKA_LOCAL_PORT", std::to_string(port_)},
                      {"KAFKA_LOCAL_DIR", dir_.string()},
                      {"KAFKA_LOCAL_KILL", kill ? "1" : "0"}},
                     timeout);
  }

  std::filesystem::path dir_;
  int port_ = 19192;
  std::string brokers_;
};

// Waits until every partition of `topic` has all three replicas in sync.
bool wait_full_isr(const cs::kafka::client_config& cfg, const std::string& topic, std::chrono::seconds timeout) {
  const auto until = clock_type::now() + timeout;
  while (clock_type::now() < until) {
    try {
      const auto layout = cs::kafka::describe_cluster(cfg, topic, 10s);
      const bool full = !layout.partitions.empty() &&
                        std::all_of(layout.partitions.begin(), layout.partitions.end(),
                                    [](const auto& p) { return p.leader >= 0 && p.isr.size() == 3; });
      if (full) return true;
    } catch (const std::exception&) {
      // A node still joining: ask again.
    }
    std::this_thread::sleep_for(500ms);
  }
  return false;
}

// One HTTP attempt as the sender saw it.
struct attempt {
  std::size_t event = 0;  // index into the generated events
  clock_type::time_point sent;
  clock_type::time_point answered;
  int status = 0;
  std::string body;
};

// Svix-like: events are due at a steady rate; each lane owns a share of the
// users and delivers their events in order, retrying a non-2xx after a short
// backoff until it is accepted (Svix retries for days; here, 3 minutes).
class sender {
 public:
  sender(int port, std::string secret, const std::vector<test::generated_event>& events, double per_second,
         std::size_t lanes)
      : port_(port), secret_(secret), events_(events), per_second_(per_second) {
    std::vector<std::vector<std::size_t>> owned(lanes);
    for (std::size_t i = 0; i < events.size(); ++i) owned[std::hash<std::string>{}(events[i].key) % lanes].push_back(i);
    start_ = clock_type::now();
    for (auto& own : owned) threads_.emplace_back([this, own] { run_lane(own); });
  }
  // A test that failed half-way does not wait for retries to succeed.
  ~sender() {
    abort_ = true;
    finish();
  }
  sender(const sender&) = delete;
  sender& operator=(const sender&) = delete;

  // No new event is started; those started are delivered (or given up).
  void finish() {
    stop_ = true;
    for (auto& t : threads_)
      if (t.joinable()) t.join();
  }
  [[nodiscard]] std::vector<attempt> attempts() const {
    const std::lock_guard lock(mutex_);
    return attempts_;
  }
  [[nodiscard]] std::set<std::size_t> started() const {
    const std::lock_guard lock(mutex_);
    return started_;
  }
  [[nodiscard]] std::set<std::size_t> given_up() const {
    const std::lock_guard lock(mutex_);
    return given_up_;
  }

 private:
  void run_lane(const std::vector<std::size_t>& own) {
    for (const auto i : own) {
      const auto due = start_ + std::chrono::duration_cast<clock_type::duration>(
                                    std::chrono::duration<double>(static_cast<double>(i) / per_second_));
      while (!stop_ && clock_type::now() < due) std::this_thread::sleep_for(5ms);
      if (stop_) return;
      {
        const std::lock_guard lock(mutex_);
        started_.insert(i);
      }
      if (!deliver(i)) {
        const std::lock_guard lock(mutex_);
        given_up_.insert(i);
        return;  // later events of these users would overtake it
      }
    }
  }

  bool deliver(std::size_t i) {
    const auto& e = events_[i];
    const auto give_up = clock_type::now() + 180s;
    while (!abort_ && clock_type::now() < give_up) {
      const auto s = test::sign_event(secret_, e.body, std::nullopt, e.svix_id);
      attempt a;
      a.event = i;
      a.sent = clock_type::now();
      const auto res = test::post_event(port_, s, 30s);
      a.answered = clock_type::now();
      a.status = res.status;
      a.body = res.body;
      {
        const std::lock_guard lock(mutex_);
        attempts_.push_back(a);
      }
      if (res.status >= 200 && res.status < 300) return true;
      std::this_thread::sleep_for(500ms);
    }
    return false;
  }

  int port_;
  std::string secret_;
  const std::vector<test::generated_event>& events_;
  double per_second_;
  clock_type::time_point start_;
  std::atomic<bool> stop_{false};
  std::atomic<bool> abort_{false};
  mutable std::mutex mutex_;
  std::vector<attempt> attempts_;
  std::set<std::size_t> started_;
  std::set<std::size_t> given_up_;
  std::vector<std::thread> threads_;
};


std::string field_of(const std::string& line, const std::string& key) {
  const auto at = line.find(" " + key + "=");
  if (at == std::string::npos) return {};
  const auto from = at + key.size() + 2;
  return line.substr(from, line.find(' ', from) - from);
}

// The longest run of consecutive non-2xx attempts (in order of sending)
// sent and answered inside [from, to]: how many, and from the first sent to
// the last answered.
struct stretch {
  std::size_t count = 0;
  double seconds = 0;
  clock_type::time_point first;  // sent
  clock_type::time_point last;   // answered
};
stretch longest_refusals(std::vector<attempt> all, clock_type::time_point from, clock_type::time_point to) {
  std::sort(all.begin(), all.end(), [](const auto& a, const auto& b) { return a.sent < b.sent; });
  stretch best;
  std::size_t run = 0;
  clock_type::time_point first{};
  for (const auto& a : all) {
    if (a.sent < from || a.answered > to) continue;
    if (a.status >= 200 && a.status < 300) {
      run = 0;
      continue;
    }
    if (run++ == 0) first = a.sent;
    if (run > best.count) best = {run, std::chrono::duration<double>(a.answered - first).count(), first, a.answered};
  }
  return best;
}

}  // namespace

TEST_CASE("three brokers with a leader killed and then two nodes down keep every 2xx event and apply none twice") {
  cluster kafka;
  const auto cfg = kafka.config();
  const auto ctl = test::binary_path("app/ctl/clerk-sync-ctl");
  const std::map<std::string, std::string> ctl_env{{"KAFKA_BROKERS", kafka.brokers()}};

  // topic ensure on three brokers: replication factor 3, min.insync.replicas=2 by default.
  const auto topic = test::unique_name("cluster");
  const auto created = test::run(ctl, {"topic", "ensure", "--topic", topic, "--partitions", "3", "--strict"}, ctl_env);
  INFO(created.err);
  REQUIRE(created.status == 0);
  CHECK(created.err.find("replication_factor=3") != std::string::npos);
  CHECK(created.err.find("min_insync_replicas=2") != std::string::npos);
  // Once every broker knows the topic (creation is announced asynchronously).
  REQUIRE(wait_full_isr(cfg, topic, 60s));
  // Any broker may answer DescribeConfigs, one that has not heard of it yet too.
  auto described = cs::kafka::describe_topic(cfg, topic, 10s);
  for (int i = 0; i < 60 && !described; ++i) {
    std::this_thread::sleep_for(500ms);
    described = cs::kafka::describe_topic(cfg, topic, 10s);
  }
  REQUIRE(described);
  CHECK(described->at("min.insync.replicas") == "2");

  // An existing topic whose acks=all can be met by the leader alone.
  const auto weak = test::unique_name("cluster-weak");
  REQUIRE(cs::kafka::create_topic(cfg, {weak, 1, 3, {{"retention.ms", "-1"}}}, 10s) ==
          cs::kafka::create_outcome::created);
  REQUIRE(wait_full_isr(cfg, weak, 60s));
  const auto lax = test::run(ctl, {"topic", "ensure", "--topic", weak}, ctl_env);
  INFO(lax.err);
  CHECK(lax.status == 0);
  CHECK(lax.err.find("topic not durable") != std::string::npos);
  const auto strict = test::run(ctl, {"topic", "ensure", "--topic", weak, "--strict"}, ctl_env);
  INFO(strict.err);
  CHECK(strict.status == 1);
  CHECK(strict.err.find("min.insync.replicas=1") != std::string::npos);

  // A topic that needs all three replicas in sync: one broker lost, and
  // Kafka refuses its writes (NOT_ENOUGH_REPLICAS).
  const auto all_three = test::unique_name("cluster-isr");
  REQUIRE(cs::kafka::create_topic(cfg, {all_three, 1, 3, {{"retention.ms", "-1"}, {"min.insync.replicas", "3"}}},
                                  10s) == cs::kafka::create_outcome::created);
  REQUIRE(wait_full_isr(cfg, all_three, 60s));

  const auto secret = test::random_secret();
  test::temp_dir dir;
  const std::string live = (dir / "live.db").string();
  test::receiver recv(kafka.brokers(), topic, secret, {"--publish-deadline-ms", "8000"});
  REQUIRE(recv.wait_ready(60s));
  std::optional<test::receiver> recv_three(std::in_place, kafka.brokers(), all_three, secret);
  REQUIRE(recv_three->wait_ready(60s));
  test::process consumer(test::binary_path("app/consumer/clerk-sync-consumer"),
                         {"--projection", "users,referrals,balances,sessions", "--db", live, "--topic", topic,
                          "--batch-latency-ms", "20"},
                         {{"KAFKA_BROKERS", kafka.brokers()}, {"NOTIFY_SOCKET", ""}});
  REQUIRE_MESSAGE(consumer.wait_for_log("msg=assigned", 60s), consumer.stderr_text());

  // More events than the run can send at 20/s: the sender is stopped when
  // the scenario is over, and the oracle is what it started.
  const auto events = test::generate_events({.users = 60, .events = 20'000, .seed = 2026});
  sender load(recv.port(), secret, events, 20.0, 16);
  const auto t0 = clock_type::now();
  const auto since = [&t0](clock_type::time_point t) { return std::chrono::duration<double>(t - t0).count(); };
  std::this_thread::sleep_for(8s);

  // 1. The leader of partition 0 crashes, then comes back.
  const auto layout = cs::kafka::describe_cluster(cfg, topic, 10s);
  REQUIRE(!layout.partitions.empty());
  const int leader = layout.partitions.front().leader;
  REQUIRE(leader >= 1);
  const auto kill1 = clock_type::now();
  kafka.kill_node(leader);
  // ctl status while a leader is gone says so within its timeout; it
  // waited for that broker to come back before (librdkafka 2.0.2's
  // watermark query ignores its timeout).
  const auto asked = clock_type::now();
  const auto status = test::run(ctl, {"status", "--db", live, "--topic", topic, "--timeout-ms", "3000"}, ctl_env, 60s);
  const auto status_s = std::chrono::duration<double>(clock_type::now() - asked).count();
  CHECK_MESSAGE(status_s < 14, "ctl status took " << status_s << " s: " << status.err);
  // The receiver says why its webhooks for that topic get 503 (their
  // reports say only "Message timed out"), once, and once when it is over.
  CHECK_MESSAGE(recv_three->proc().wait_for_log("msg=not_enough_replicas", 25s), recv_three->proc().stderr_text());
  CHECK(recv_three->proc().stderr_text().find("partitions=0 in_sync=2 min_insync_replicas=3") != std::string::npos);
  // topic ensure meanwhile: the cluster lists two brokers once the lost one
  // is fenced, and the default for two would create a topic of one copy.
  for (int i = 0; i < 30 && cs::kafka::describe_cluster(cfg, topic, 10s).brokers.size() != 2; ++i)
    std::this_thread::sleep_for(500ms);
  const auto while_down = test::run(ctl, {"topic", "ensure", "--topic", test::unique_name("cluster-down")}, ctl_env);
  CHECK(while_down.status == 1);
  CHECK_MESSAGE(while_down.err.find("--replication-factor") != std::string::npos, while_down.err);
  std::this_thread::sleep_until(kill1 + 15s);
  kafka.start_node(leader);
  const auto back1 = clock_type::now();
  REQUIRE_MESSAGE(wait_full_isr(cfg, topic, 120s), "node " << leader << " did not rejoin the ISR");
  REQUIRE(wait_full_isr(cfg, all_three, 60s));
  CHECK_MESSAGE(recv_three->proc().wait_for_log("msg=replicas_in_sync", 10s), recv_three->proc().stderr_text());
  recv_three.reset();
  std::this_thread::sleep_for(5s);

  // 2. Two nodes at once: one replica left, below min.insync.replicas=2 and
  // without a controller quorum. Nothing may be acknowledged.
  const int a = leader == 1 ? 2 : 1;
  const int b = leader == 3 ? 2 : 3;
  const auto kill2 = clock_type::now();
  {
    auto ka = std::async(std::launch::async, [&] { kafka.kill_node(a); });
    auto kb = std::async(std::launch::async, [&] { kafka.kill_node(b); });
    ka.get();
    kb.get();
  }
  const auto down2 = clock_type::now();
  std::this_thread::sleep_for(15s);
  const auto up2 = clock_type::now();
  {
    auto sa = std::async(std::launch::async, [&] { kafka.start_node(a); });
    auto sb = std::async(std::launch::async, [&] { kafka.start_node(b); });
    sa.get();
    sb.get();
  }
  const auto back2 = clock_type::now();
  REQUIRE_MESSAGE(wait_full_isr(cfg, topic, 120s), "nodes " << a << " and " << b << " did not rejoin the ISR");
  std::this_thread::sleep_for(8s);
  load.finish();
  const auto end = clock_type::now();

  const auto attempts = load.attempts();
  const auto started = load.started();
  REQUIRE(load.given_up().empty());
  std::size_t ok = 0;
  std::size_t unavailable = 0;
  std::size_t other = 0;
  std::size_t ok_while_two_down = 0;
  std::size_t sent_while_two_down = 0;
  for (const auto& at : attempts) {
    if (at.status >= 200 && at.status < 300)
      ++ok;
    else if (at.status == 503)
      ++unavailable;
    else
      ++other;
    // Sent after both kills completed, before either restart began.
    if (at.sent >= down2 && at.sent <= up2) {
      ++sent_while_two_down;
      if (at.status == 200) ++ok_while_two_down;
    }
  }
  CHECK(ok_while_two_down == 0);
  CHECK(sent_while_two_down > 0);
  CHECK(other == 0);  // only 2xx or 503: never a 500, a dropped connection or a 4xx
  CHECK(ok == started.size());

  // Every 2xx is in the topic at the partition and offset it named.
  const auto records = test::read_topic(kafka.brokers(), topic, 60s);
  std::map<std::pair<std::int32_t, std::int64_t>, std::string> at_offset;
  std::set<std::string> in_topic;
  for (const auto& m : records) {
    std::string id;
    for (const auto& [k, v] : m.headers)
      if (k == "svix-id") id = v;
    at_offset[{m.partition, m.offset}] = id;
    in_topic.insert(id);
  }
  std::size_t missing = 0;
  for (const auto& at : attempts) {
    if (at.status < 200 || at.status >= 300) continue;
    const auto where = test::published_at(at.body);
    REQUIRE_MESSAGE(where, at.body);
    const auto it = at_offset.find(*where);
    if (it == at_offset.end() || it->second != events[at.event].svix_id) ++missing;
  }
  CHECK(missing == 0);
  std::vector<test::generated_event> sent;
  for (const auto i : started) sent.push_back(events[i]);  // std::set: generation order
  for (const auto& e : sent) CHECK_MESSAGE(in_topic.contains(e.svix_id), e.svix_id);

  // The consumers reach the end of the topic; their tables equal the oracle.
  REQUIRE_MESSAGE(test::wait_caught_up(live, topic, all_projections, static_cast<std::int64_t>(records.size()), 180s),
                  consumer.stderr_text());
  consumer.signal(SIGTERM);
  CHECK(consumer.wait(30s) == 0);
  CHECK(test::dump_tables(live) == test::reference_tables(sent, (dir / "reference.db").string()));

  // No svix-id applied twice in any projection, by the consumer's own account.
  std::map<std::pair<std::string, std::string>, int> applied;
  std::size_t redeliveries = 0;
  std::istringstream log(consumer.stderr_text());
  for (std::string line; std::getline(log, line);) {
    if (line.find("msg=event") == std::string::npos) continue;
    const auto outcome = field_of(line, "outcome");
    if (outcome == "duplicate") ++redeliveries;
    if (outcome == "applied") ++applied[{field_of(line, "projection"), field_of(line, "svix_id")}];
  }
  std::size_t twice = 0;
  for (const auto& [k, n] : applied)
    if (n > 1) ++twice;
  CHECK(!applied.empty());
  CHECK(twice == 0);

  // Each change's window runs until the next one begins.
  const auto s1 = longest_refusals(attempts, kill1 - 1s, kill2);
  const auto s2 = longest_refusals(attempts, kill2 - 1s, end);
  std::ostringstream fig;
  fig.setf(std::ios::fixed);
  fig.precision(1);
  fig << "cluster figures: events=" << started.size() << " attempts=" << attempts.size() << " 2xx=" << ok
      << " 503=" << unavailable << " other=" << other << " records_in_topic=" << records.size()
      << " duplicates_in_topic=" << records.size() - in_topic.size() << " duplicate_outcomes=" << redeliveries
      << " run_s=" << since(end) << "\n"
      << "  leader " << leader << " killed at " << since(kill1) << " s, answering again at " << since(back1)
      << " s: longest 503 stretch " << s1.count << " attempts over " << s1.seconds << " s (from "
      << since(s1.first) << " s to " << since(s1.last) << " s)\n"
      << "  nodes " << a << "+" << b << " killed from " << since(kill2) << " s to " << since(down2)
      << " s, restarted at " << since(up2)
      << " s, both answering at " << since(back2)
      << " s: sent while down " << sent_while_two_down << ", 200 while down " << ok_while_two_down
      << ", longest 503 stretch " << s2.count << " attempts over " << s2.seconds << " s (from " << since(s2.first)
      << " s to " << since(s2.last) << " s)\n";
  MESSAGE(fig.str());
  // For a look after the run, beside the brokers' own logs.
  std::ofstream(test::binary_path("test-cluster") / "receiver.log") << recv.proc().stderr_text();
  std::ofstream(test::binary_path("test-cluster") / "consumer.log") << consumer.stderr_text();
  std::cout << fig.str() << std::flush;
}
