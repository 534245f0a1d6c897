#include "receiver/harness.hpp"

#include <doctest/doctest.h>

#include <csignal>
#include <thread>

#include "kafka/mock_cluster.hpp"
#include "support/support.hpp"

namespace test = clerk_sync::test;
namespace kafka = clerk_sync::kafka;
using namespace std::chrono_literals;

TEST_CASE("a fatal producer error stops intake and exits 3, with a 503 for the event it could not publish") {
  kafka::mock_cluster mock(1);
  const std::string topic = "clerk.events.fatal";
  mock.create_topic(topic, 1);
  const auto secret = test::random_secret();
  test::receiver r(mock.bootstrap_servers(), topic, secret, {"--publish-deadline-ms", "2500", "--kafka-property", "enable.gapless.guarantee=true"});
  REQUIRE(test::post_event(r.port(), test::sign_event(secret, test::user_event_body("user_a"))).status == 200);
  // With the gapless guarantee, a sequence the broker refuses is a fatal
  // idempotence error: the producer cannot go on.
  mock.fail_next_produce_requests(1, 45 /* OUT_OF_ORDER_SEQUENCE_NUMBER */);
  const auto res = test::post_event(r.port(), test::sign_event(secret, test::user_event_body("user_b")));
  CHECK(res.status == 503);
  CHECK(r.proc().wait(20s) == 3);
  const auto logs = r.proc().stderr_text();
  CHECK(logs.find("msg=producer_fatal") != std::string::npos);
  CHECK(logs.find("msg=flushed") != std::string::npos);
}

TEST_CASE("a fatal producer error during the shutdown's drain still exits 3") {
  kafka::mock_cluster mock(1);
  const std::string topic = "clerk.events.fatal_drain";
  mock.create_topic(topic, 1);
  const auto secret = test::random_secret();
  test::receiver r(mock.bootstrap_servers(), topic, secret,
                   {"--publish-deadline-ms", "5000", "--kafka-property", "enable.gapless.guarantee=true"});
  REQUIRE(test::post_event(r.port(), test::sign_event(secret, test::user_event_body("user_a"))).status == 200);
  // The next produce request is slow and then refused with a sequence
  // error (fatal under the gapless guarantee); SIGTERM arrives meanwhile,
  // so the error comes while the receiver drains.
  mock.set_round_trip(1, 1500ms);
  mock.fail_next_produce_requests(1, 45 /* OUT_OF_ORDER_SEQUENCE_NUMBER */);
  int status = 0;
  std::thread in_flight([&] {
    status = test::post_event(r.port(), test::sign_event(secret, test::user_event_body("user_b"))).status;
  });
  std::this_thread::sleep_for(300ms);
  r.proc().signal(SIGTERM);
  in_flight.join();
  CHECK(status == 503);
  CHECK(r.proc().wait(20s) == 3);
  CHECK(r.proc().stderr_text().find("msg=producer_fatal") != std::string::npos);
}

namespace {

// A receiver on a one-broker mock cluster, stopping with one request in
// flight: Kafka answers after 10 s, and the first SIGTERM has been sent.
struct stopping_with_a_request_held {
  kafka::mock_cluster mock{1};
  std::string secret = test::random_secret();
  test::receiver r;
  int status = -1;  // the held request's answer; 0: none
  std::thread in_flight;

  stopping_with_a_request_held(const std::string& topic, const std::string& grace_ms)
      : r(make_receiver(mock, topic, secret, grace_ms)) {
    REQUIRE(test::post_event(r.port(), test::sign_event(secret, test::user_event_body("user_a"))).status == 200);
    mock.set_round_trip(1, 10000ms);
    in_flight = std::thread([this] {
      status = test::post_event(r.port(), test::sign_event(secret, test::user_event_body("user_b"))).status;
    });
    std::this_thread::sleep_for(300ms);
    r.proc().signal(SIGTERM);
  }
  ~stopping_with_a_request_held() {
    if (in_flight.joinable()) in_flight.join();
  }
  stopping_with_a_request_held(const stopping_with_a_request_held&) = delete;
  stopping_with_a_request_held& operator=(const stopping_with_a_request_held&) = delete;

  // Signals again while it still runs; its exit code (none within `limit`)
  // and how long it took to come.
  std::pair<std::optional<int>, std::chrono::steady_clock::duration> signal_again(std::chrono::milliseconds limit) {
    REQUIRE(r.proc().running());
    const auto at = std::chrono::steady_clock::now();
    r.proc().signal(SIGTERM);
    const auto code = r.proc().wait(limit);
    const auto took = std::chrono::steady_clock::now() - at;
    in_flight.join();
    return {code, took};
  }

 private:
  static test::receiver make_receiver(kafka::mock_cluster& mock, const std::string& topic, const std::string& secret,
                                      const std::string& grace_ms) {
    mock.create_topic(topic, 1);
    return test::receiver(mock.bootstrap_servers(), topic, secret,
                          {"--publish-deadline-ms", "12000", "--shutdown-grace-ms", grace_ms});
  }
};

}  // namespace

TEST_CASE("a second SIGTERM ends the wait for requests in flight: no answer, exit 0 at once") {
  // Within the 15 s grace the first SIGTERM would wait for the request.
  stopping_with_a_request_held s("clerk.events.second_signal", "15000");
  std::this_thread::sleep_for(300ms);
  const auto [code, took] = s.signal_again(5s);
  CHECK(code == 0);
  CHECK(took < 3s);      // the wait, then a flush of at most 1 s: not the 10 s round trip
  CHECK(s.status == 0);  // no answer: the connection closed, so Svix retries
  const auto logs = s.r.proc().stderr_text();
  CHECK(logs.find("signal while stopping") != std::string::npos);
  CHECK(logs.find("msg=grace_expired") == std::string::npos);
  CHECK(logs.find("msg=shutdown_grace_short") == std::string::npos);  // 15 s against a 12 s deadline
  // The record Kafka has not acknowledged is dropped at exit: said at warn.
  CHECK(logs.find("level=warn msg=flushed outcome=incomplete in_flight=1") != std::string::npos);
}

TEST_CASE("a signal during the final flush ends the process at once, by the signal's default action") {
  // The 3 s grace runs out with the request unanswered; the flush then waits
  // up to 3 s more for Kafka.
  stopping_with_a_request_held s("clerk.events.flush_signal", "3000");
  // Said at start: a grace shorter than the deadline leaves this request.
  CHECK(test::line_with(s.r.proc().stderr_text(), "msg=shutdown_grace_short")
            .find("level=warn msg=shutdown_grace_short shutdown_grace_ms=3000 publish_deadline_ms=12000") !=
        std::string::npos);
  REQUIRE(s.r.proc().wait_for_log("msg=grace_expired", 6s));
  std::this_thread::sleep_for(300ms);
  const auto [code, took] = s.signal_again(2s);
  CHECK(code == 128 + SIGTERM);
  CHECK(took < 1s);
  CHECK(s.status == 0);  // never acknowledged: Svix retries it
}
