#include "receiver/harness.hpp"

#include <doctest/doctest.h>

#include <csignal>
#include <future>
#include <mutex>
#include <thread>

#include "kafka/admin.hpp"
#include "kafka/client.hpp"
#include "kafka/mock_cluster.hpp"
#include "projection/applier.hpp"
#include "store/database.hpp"
#include "support/own_broker.hpp"
#include "support/support.hpp"

namespace test = clerk_sync::test;
namespace kafka = clerk_sync::kafka;
using namespace std::chrono_literals;

namespace {

struct answered {
  std::string svix_id;
  int status = 0;
  std::string body;
  std::chrono::milliseconds took{0};
};

answered post_timed(int port, const test::signed_event& e) {
  const auto t0 = std::chrono::steady_clock::now();
  const auto r = test::post_event(port, e, 30s);
  return {e.id, r.status, r.body,
          std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now() - t0)};
}

// The core promise: every 2xx for a published event names a (partition,
// offset) that holds exactly that event.
void check_every_200_is_held(const std::vector<answered>& answers, const std::vector<kafka::message>& records) {
  std::map<std::pair<std::int32_t, std::int64_t>, std::string> held;
  for (const auto& m : records) held[{m.partition, m.offset}] = std::string(*kafka::find_header(m.headers, "svix-id"));
  int ok = 0;
  for (const auto& a : answers) {
    if (a.status < 200 || a.status > 299) continue;
    ++ok;
    const auto at = test::published_at(a.body);
    REQUIRE_MESSAGE(at.has_value(), a.body);
    const auto it = held.find(*at);
    REQUIRE_MESSAGE(it != held.end(), "a 2xx for an event Kafka does not hold: " << a.svix_id);
    CHECK(it->second == a.svix_id);
  }
  CHECK(ok > 0);
}

}  // namespace

TEST_CASE("kafka stopped mid-run: 503 with Retry-After within the deadline, then 200 once it is back") {
  test::own_broker broker;
  kafka::client_config cfg;
  cfg.brokers = broker.address();
  const std::string topic = "clerk.events.stop";
  (void)kafka::create_topic(cfg, {topic, 1, 1, {{"retention.ms", "-1"}}}, 30s);
  const auto secret = test::random_secret();
  test::receiver r(broker.address(), topic, secret, {"--publish-deadline-ms", "3000"});

  const auto first = test::sign_event(secret, test::user_event_body("user_before"));
  REQUIRE(test::post_event(r.port(), first).status == 200);

  broker.control("stop");
  const auto during = test::sign_event(secret, test::user_event_body("user_during"));
  const auto t0 = std::chrono::steady_clock::now();
  const auto refused = test::post_event(r.port(), during, 15s);
  const auto took = std::chrono::steady_clock::now() - t0;
  CHECK(refused.status == 503);
  CHECK(refused.headers.count("retry-after") == 1);
  CHECK(took < 4500ms);  // the deadline (3 s) plus slack, well inside Svix's 15 s
  CHECK(test::send_http(r.port(), "GET", "/healthz", {}, "").status == 200);
  int ready = 200;
  for (int i = 0; i < 50 && ready == 200; ++i) {
    ready = test::send_http(r.port(), "GET", "/readyz", {}, "", 5s).status;
    if (ready == 200) std::this_thread::sleep_for(100ms);
  }
  CHECK(ready == 503);  // not ready while the cluster is unreachable, alive all the same

  broker.control("start");
  // Svix retries the same message (same id, timestamp and signature).
  test::http_result retried;
  for (int i = 0; i < 60 && retried.status != 200; ++i) {
    retried = test::post_event(r.port(), during, 15s);
    if (retried.status != 200) std::this_thread::sleep_for(500ms);
  }
  REQUIRE(retried.status == 200);
  CHECK(r.wait_ready(10s));

  const auto records = test::read_topic(broker.address(), topic);
  int firsts = 0, durings = 0;
  for (const auto& m : records) {
    const auto id = kafka::find_header(m.headers, "svix-id");
    firsts += id == first.id;
    durings += id == during.id;
  }
  CHECK(firsts == 1);
  CHECK(durings >= 1);  // a duplicate is acceptable (the consumers deduplicate), a gap is not
  r.proc().signal(SIGTERM);
  CHECK(r.proc().wait(20s) == 0);
}

TEST_CASE("mock cluster faults (produce errors, slow round trips, broker loss): never a 2xx for an unacknowledged event") {
  kafka::mock_cluster mock(1);
  const std::string topic = "clerk.events.mock";
  mock.create_topic(topic, 2);
  const auto secret = test::random_secret();
  test::receiver r(mock.bootstrap_servers(), topic, secret, {"--publish-deadline-ms", "2500"});
  std::vector<answered> answers;
  auto send = [&](const std::string& user) {
    answers.push_back(post_timed(r.port(), test::sign_event(secret, test::user_event_body(user))));
    return answers.back();
  };

  for (int i = 0; i < 5; ++i) CHECK(send("user_ok_" + std::to_string(i)).status == 200);

  // Retriable errors: the idempotent producer retries inside the deadline.
  mock.fail_next_produce_requests(3, 7 /* REQUEST_TIMED_OUT */);
  CHECK(send("user_retried").status == 200);

  // A permanent error for the record: never 2xx. Too large is final, so 413
  // (a 503 would make Svix retry it for days), and the producer lives on.
  mock.fail_next_produce_requests(1, 10 /* MESSAGE_TOO_LARGE */);
  const auto rejected = send("user_rejected");
  CHECK(rejected.status == 413);

  // Round trips slower than the deadline: 503 in time, not a late 200.
  mock.set_round_trip(1, 4000ms);
  const auto slow = send("user_slow");
  CHECK(slow.status == 503);
  CHECK(slow.took < 3000ms);
  mock.set_round_trip(1, 0ms);

  // Broker loss: 503 while down, 200 again once it is back.
  mock.set_broker_down(1);
  const auto down = send("user_down");
  CHECK(down.status == 503);
  CHECK(down.took < 3000ms);
  mock.set_broker_up(1);
  int status = 0;
  for (int i = 0; i < 40 && status != 200; ++i) {
    status = send("user_back_" + std::to_string(i)).status;
    if (status != 200) std::this_thread::sleep_for(250ms);
  }
  CHECK(status == 200);

  check_every_200_is_held(answers, test::read_topic(mock.bootstrap_servers(), topic));
  r.proc().signal(SIGTERM);
  CHECK(r.proc().wait(20s) == 0);
}

TEST_CASE("a partition without a leader is an error line naming it, and one when it has one again") {
  // With the only copy of a partition on a broker that is down, its
  // webhooks get 503 while the others' are published and /readyz stays
  // ready; no replica count is short, so nothing else says why.
  kafka::mock_cluster mock(1);
  const std::string topic = "clerk.events.leaderless";
  mock.create_topic(topic, 3);
  test::receiver r(mock.bootstrap_servers(), topic, test::random_secret());
  REQUIRE(r.wait_ready(15s));
  mock.set_partition_leader(topic, 2, -1);
  CHECK_MESSAGE(r.proc().wait_for_log("level=error msg=partitions_leaderless topic=" + topic + " partitions=2 ", 10s),
                r.proc().stderr_text());
  CHECK(test::send_http(r.port(), "GET", "/readyz", {}, "", 5s).status == 200);  // the other two take events
  mock.set_partition_leader(topic, 2, 1);
  CHECK_MESSAGE(r.proc().wait_for_log("level=info msg=partitions_led topic=" + topic, 10s), r.proc().stderr_text());
  CHECK(test::count_of(r.proc().stderr_text(), "msg=partitions_leaderless") == 1);
  r.proc().signal(SIGTERM);
  CHECK(r.proc().wait(20s) == 0);
}

TEST_CASE("SIGKILLed after Kafka appended an event but before answering: no answer, the event is held, and "
          "Svix's retry is a duplicate the users projection's applier takes once") {
  // The mock cluster appends a record when the request arrives and delays
  // only the answer, so the receiver is killed between the two.
  kafka::mock_cluster mock(1);
  const std::string topic = "clerk.events.killed";
  mock.create_topic(topic, 1);
  const auto secret = test::random_secret();
  const std::vector<std::string> args{"--publish-deadline-ms", "12000"};
  auto first = std::make_unique<test::receiver>(mock.bootstrap_servers(), topic, secret, args);
  REQUIRE(first->wait_ready(15s));
  REQUIRE(test::post_event(first->port(), test::sign_event(secret, test::user_event_body("user_before"))).status == 200);

  const auto body = test::user_event_body("user_killed");
  const auto delivery = test::sign_event(secret, body);
  mock.delay_next_produce_answer(1, 20000ms);
  auto answer = std::async(std::launch::async, [&] { return test::post_event(first->port(), delivery, 30s); });
  // Until the produce request is in (its record appended, its answer held).
  for (int i = 0; i < 300 && mock.produce_requests_delayed(1) != 0; ++i) std::this_thread::sleep_for(50ms);
  REQUIRE(mock.produce_requests_delayed(1) == 0);
  REQUIRE(answer.wait_for(0s) == std::future_status::timeout);
  first->proc().signal(SIGKILL);
  CHECK(first->proc().wait(10s) == 128 + SIGKILL);
  const auto killed = answer.get();
  CHECK_MESSAGE((killed.status < 200 || killed.status > 299), killed.body);  // Svix will retry
  const auto count_of = [&](const std::vector<kafka::message>& records) {
    return std::count_if(records.begin(), records.end(),
                         [&](const kafka::message& m) { return kafka::find_header(m.headers, "svix-id") == delivery.id; });
  };
  CHECK(count_of(test::read_topic(mock.bootstrap_servers(), topic)) == 1);  // held though never acknowledged

  // Svix's retry: the same svix-id and body, signed anew, to the restarted receiver.
  test::receiver second(mock.bootstrap_servers(), topic, secret, args);
  REQUIRE(second.wait_ready(15s));
  const auto retry = test::sign_event(secret, body, std::nullopt, delivery.id);
  CHECK(test::post_event(second.port(), retry).status == 200);
  const auto records = test::read_topic(mock.bootstrap_servers(), topic);
  REQUIRE(count_of(records) == 2);

  // Both copies through the users projection: applied once, then a duplicate.
  test::temp_dir dir;
  clerk_sync::store::database db((dir / "users.db").string());
  clerk_sync::projection::applier users(db, {clerk_sync::projection::kind::users});
  std::vector<clerk_sync::projection::outcome> outcomes;
  for (const auto& m : records) {
    if (kafka::find_header(m.headers, "svix-id") != delivery.id) continue;
    const clerk_sync::projection::envelope e{m.topic, m.partition, m.offset, delivery.id,
                                             std::string(*kafka::find_header(m.headers, "clerk-event-type")), m.value};
    for (const auto& r : users.apply({&e, 1})) outcomes.push_back(r.result);
  }
  CHECK(outcomes == std::vector{clerk_sync::projection::outcome::applied, clerk_sync::projection::outcome::duplicate});
  second.proc().signal(SIGTERM);
  CHECK(second.proc().wait(20s) == 0);
}

TEST_CASE("graceful shutdown under load loses no acknowledged event") {
  const auto brokers = test::broker().brokers;
  const auto topic = test::fresh_topic("recv_stop", 3);
  const auto secret = test::random_secret();
  test::receiver r(brokers, topic, secret);
  REQUIRE(r.wait_ready(15s));

  std::mutex m;
  std::vector<answered> answers;
  std::atomic<bool> stop{false};
  std::atomic<int> ok{0};
  std::vector<std::thread> clients;
  for (int c = 0; c < 8; ++c)
    clients.emplace_back([&, c] {
      for (int i = 0; i < 2000 && !stop; ++i) {
        auto a = post_timed(r.port(), test::sign_event(secret, test::user_event_body(
                                                                 "user_" + std::to_string(c) + "_" + std::to_string(i))));
        if (a.status == 200) ++ok;
        const bool refused = a.status == 0;
        std::lock_guard lock(m);
        answers.push_back(std::move(a));
        if (refused) break;  // the receiver stopped accepting
      }
    });
  for (int i = 0; i < 200 && ok < 100; ++i) std::this_thread::sleep_for(25ms);
  r.proc().signal(SIGTERM);
  const auto code = r.proc().wait(30s);
  stop = true;
  for (auto& t : clients) t.join();
  CHECK(code == 0);
  CHECK(ok >= 100);
  const auto logs = r.proc().stderr_text();
  CHECK(logs.find("msg=stopping") != std::string::npos);
  CHECK(logs.find("msg=flushed outcome=complete") != std::string::npos);
  check_every_200_is_held(answers, test::read_topic(brokers, topic));
}
