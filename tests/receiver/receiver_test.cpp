#include "receiver/harness.hpp"

#include <doctest/doctest.h>

#include <csignal>
#include <thread>

#include "kafka/admin.hpp"
#include "kafka/client.hpp"
#include "support/support.hpp"

namespace test = clerk_sync::test;
namespace kafka = clerk_sync::kafka;
using namespace std::chrono_literals;

TEST_CASE("an accepted event is in the topic byte-exact with key and headers - an ignored type is not") {
  const auto brokers = test::broker().brokers;
  const auto topic = test::fresh_topic("recv", 3);
  const auto secret = test::random_secret();
  test::receiver r(brokers, topic, secret);

  const auto user_body = test::read_file(test::source_path("tests/fixtures/svix/bodies/real_user_created.json"));
  const auto session_body = test::read_file(test::source_path("tests/fixtures/svix/bodies/session.created.json"));
  const auto user = test::sign_event(secret, user_body);
  const auto session = test::sign_event(secret, session_body);
  const auto other = test::sign_event(secret, R"({"type":"organization.created","data":{"id":"org_1"}})");

  const auto before_ms = std::chrono::duration_cast<std::chrono::milliseconds>(
                             std::chrono::system_clock::now().time_since_epoch())
                             .count();
  const auto a = test::post_event(r.port(), user);
  REQUIRE_MESSAGE(a.status == 200, a.body);
  const auto at = test::published_at(a.body);
  REQUIRE(at.has_value());
  const auto b = test::post_event(r.port(), session);
  REQUIRE_MESSAGE(b.status == 200, b.body);
  const auto c = test::post_event(r.port(), other);
  CHECK(c.status == 200);
  CHECK(c.body == R"({"status":"ignored"})");

  const auto records = test::read_topic(brokers, topic);
  REQUIRE(records.size() == 2);  // the ignored type is not there
  const auto it = std::find_if(records.begin(), records.end(), [&](const auto& m) { return m.value == user_body; });
  REQUIRE(it != records.end());
  CHECK(it->partition == at->first);
  CHECK(it->offset == at->second);
  CHECK(it->key == "user_2vX11zP5ojq7cTRY58xT6oJqmRG");
  CHECK(kafka::find_header(it->headers, "svix-id") == user.id);
  CHECK(kafka::find_header(it->headers, "svix-timestamp") == user.timestamp);
  CHECK(kafka::find_header(it->headers, "clerk-event-type") == "user.created");
  const auto received = kafka::find_header(it->headers, "received-at");
  REQUIRE(received.has_value());
  CHECK(std::stoll(std::string(*received)) >= before_ms);
  const auto s = std::find_if(records.begin(), records.end(), [&](const auto& m) { return m.value == session_body; });
  REQUIRE(s != records.end());
  CHECK(s->key == "user_2g7np7Hrk0SN6kj5EDMLDaKNL0S");  // data.user_id
  CHECK(kafka::find_header(s->headers, "clerk-event-type") == "session.created");

  // Logs: one line per request with the stable keys, never the signature or
  // the secret. Info lines are flushed in blocks: wait for the last one.
  REQUIRE(r.proc().wait_for_log("msg=ignored svix_id=" + other.id, std::chrono::seconds(5)));
  const auto logs = r.proc().stderr_text();
  CHECK(logs.find("msg=published svix_id=" + user.id + " type=user.created user=user_2vX11zP5ojq7cTRY58xT6oJqmRG") !=
        std::string::npos);
  CHECK(logs.find("msg=ignored svix_id=" + other.id) != std::string::npos);
  CHECK(logs.find(user.headers.at("svix-signature").substr(3)) == std::string::npos);
  CHECK(logs.find(secret.substr(6)) == std::string::npos);
}

TEST_CASE("every error status of the design table, over HTTP") {
  const auto brokers = test::broker().brokers;
  const auto topic = test::fresh_topic("recv_err", 1);
  const auto secret = test::random_secret();
  test::receiver r(brokers, topic, secret, {"--body-limit", "4096", "--header-limit", "2048"});
  REQUIRE(r.wait_ready(15s));
  CHECK(test::send_http(r.port(), "GET", "/healthz", {}, "").status == 200);

  const auto good = test::sign_event(secret, test::user_event_body("user_err"));
  auto missing = good;
  missing.headers.erase("svix-id");
  CHECK(test::post_event(r.port(), missing).status == 400);
  CHECK(test::post_event(r.port(), test::sign_event(secret, "not json")).status == 400);
  CHECK(test::post_event(r.port(), test::sign_event(secret, R"({"type":"user.created","data":{}})")).status == 400);
  CHECK(test::post_event(r.port(), test::sign_event(test::random_secret(), good.body)).status == 401);
  CHECK(test::post_event(r.port(), test::sign_event(secret, good.body, 1'600'000'000)).status == 401);
  auto tampered = good;
  tampered.body.back() = ' ';
  CHECK(test::post_event(r.port(), tampered).status == 401);
  const auto big = test::sign_event(secret, test::user_event_body("user_" + std::string(5000, 'x')));
  CHECK(test::post_event(r.port(), big).status == 413);
  auto fat_headers = good;
  fat_headers.headers["x-padding"] = std::string(4000, 'p');
  CHECK(test::post_event(r.port(), fat_headers).status == 431);
  CHECK(test::send_http(r.port(), "GET", "/webhooks/clerk", {}, "").status == 405);
  CHECK(test::send_http(r.port(), "POST", "/other", good.headers, good.body).status == 404);

  // webhook-* header names work like svix-*.
  auto webhook = test::sign_event(secret, test::user_event_body("user_wh"));
  webhook.headers = {{"webhook-id", webhook.headers.at("svix-id")},
                     {"webhook-timestamp", webhook.headers.at("svix-timestamp")},
                     {"webhook-signature", webhook.headers.at("svix-signature")}};
  CHECK(test::post_event(r.port(), webhook).status == 200);
  CHECK(test::post_event(r.port(), good).status == 200);
  CHECK(test::read_topic(brokers, topic).size() == 2);  // nothing rejected was published
}

TEST_CASE("bad configuration: one line on stderr, exit 2, the secret never echoed") {
  const auto exe = test::binary_path("app/receiver/clerk-sync-receiver");
  const std::string secret = test::random_secret();
  struct bad_case {
    std::vector<std::string> args;
    std::map<std::string, std::string> env;
  };
  const std::vector<bad_case> cases{
      {{}, {{"CLERK_WEBHOOK_SECRET", ""}, {"CLERK_WEBHOOK_SECRET_FILE", ""}}},
      {{}, {{"CLERK_WEBHOOK_SECRET", "whsec_"}}},
      {{}, {{"CLERK_WEBHOOK_SECRET", secret + "!"}}},
      {{"--listen", "localhost:http"}, {{"CLERK_WEBHOOK_SECRET", secret}}},
      {{"--publish-deadline-ms", "20000"}, {{"CLERK_WEBHOOK_SECRET", secret}}},
      {{"--no-such-flag"}, {{"CLERK_WEBHOOK_SECRET", secret}}},
      // The benchmark's acknowledge-without-Kafka mode lives in its own
      // binary (tests/bench): the shipped receiver must not know the flag.
      {{"--bench-ack-immediately"}, {{"CLERK_WEBHOOK_SECRET", secret}}},
  };
  for (const auto& c : cases) {
    const auto res = test::run(exe, c.args, c.env, 20s);
    CAPTURE(res.err);
    CHECK(res.status == 2);
    CHECK(std::count(res.err.begin(), res.err.end(), '\n') == 1);
    CHECK(res.err.find(secret.substr(6)) == std::string::npos);
  }
  // An address another process holds, or one not on this host (yet): exit
  // 1, which systemd restarts within its start limit, not 2.
  const test::held_port taken;
  for (const auto& listen : {"127.0.0.1:" + std::to_string(taken.port()), std::string("192.0.2.1:8080")}) {
    const auto res = test::run(exe, {"--listen", listen}, {{"CLERK_WEBHOOK_SECRET", secret}}, 20s);
    CAPTURE(res.err);
    CHECK(res.status == 1);
    CHECK(res.err.find("msg=listen_failed") != std::string::npos);
    CHECK(res.err.find(secret.substr(6)) == std::string::npos);
  }
}

TEST_CASE("readyz stays 503 while the events topic does not exist, and turns 200 once it is created") {
  const auto cfg = clerk_sync::test::broker();
  const auto topic = clerk_sync::test::unique_name("not-yet");
  const auto secret = clerk_sync::test::random_secret();
  clerk_sync::test::receiver recv(cfg.brokers, topic, secret, {"--unready-deadline-s", "2"});
  REQUIRE(recv.proc().wait_for_log("msg=topic_missing", std::chrono::seconds(15)));
  CHECK(clerk_sync::test::send_http(recv.port(), "GET", "/readyz", {}, "").status == 503);
  // Missing past the deadline: every webhook got 503, and that is an error.
  CHECK_MESSAGE(recv.proc().wait_for_log("level=error msg=not_ready topic=" + topic + " status=topic_missing waited_s=",
                                         std::chrono::seconds(15)),
                recv.proc().stderr_text());

  // Made by someone else, with a broker's defaults (as a broker creating it
  // for another client would): room for 1 MiB, and 7 days' retention (Kafka's
  // default, which the test broker turns off, given here).
  clerk_sync::kafka::topic_spec spec{topic, 1, 1, {{"retention.ms", "604800000"}}};
  REQUIRE(clerk_sync::kafka::create_topic(cfg, spec, std::chrono::seconds(15)) ==
          clerk_sync::kafka::create_outcome::created);
  CHECK(recv.wait_ready(std::chrono::seconds(15)));
  const auto res = clerk_sync::test::post_event(
      recv.port(), clerk_sync::test::sign_event(secret, clerk_sync::test::user_event_body("user_ready")));
  CHECK(res.status == 200);
  // Webhooks are taken, and the receiver's log says what is wrong with the
  // topic, as ctl status would: once, not each second.
  REQUIRE_MESSAGE(recv.proc().wait_for_log("level=warn msg=topic_settings topic=" + topic, 15s),
                  recv.proc().stderr_text());
  const auto line = clerk_sync::test::line_with(recv.proc().stderr_text(), "msg=topic_settings ");
  CHECK(line.find("retention.ms=604800000") != std::string::npos);
  CHECK(line.find("max.message.bytes=") != std::string::npos);
  std::this_thread::sleep_for(3s);
  CHECK(clerk_sync::test::count_of(recv.proc().stderr_text(), "msg=topic_settings ") == 1);
}

TEST_CASE("a topic of one copy with min.insync.replicas=2 takes acks=all writes on the test broker, which caps it at the copies") {
  // Kafka 3.7 and later read min(min.insync.replicas, replicas)
  // (KAFKA-15583); topic ensure's warning and the README say what each
  // broker does, and this pins what the broker the tests run does.
  const auto cfg = clerk_sync::test::broker();
  const auto topic = clerk_sync::test::unique_name("min-insync-capped");
  clerk_sync::kafka::topic_spec spec{topic, 1, 1, {{"min.insync.replicas", "2"}}};
  REQUIRE(clerk_sync::kafka::create_topic(cfg, spec, std::chrono::seconds(15)) ==
          clerk_sync::kafka::create_outcome::created);
  const auto secret = clerk_sync::test::random_secret();
  clerk_sync::test::receiver recv(cfg.brokers, topic, secret);
  REQUIRE(recv.wait_ready(std::chrono::seconds(15)));
  const auto res = clerk_sync::test::post_event(
      recv.port(), clerk_sync::test::sign_event(secret, clerk_sync::test::user_event_body("user_capped")));
  CHECK_MESSAGE(res.status == 200, res.body);
}

TEST_CASE("a broker throttling the receiver under a quota is a warning naming it, not only slow answers") {
  // librdkafka 2.0.2 keeps throttle times in its statistics alone: the
  // webhooks got 503 for "Message timed out", with no word of the quota.
  const auto secret = test::random_secret();
  const auto client = test::unique_name("throttled");
  const auto quota = test::run("/usr/bin/env",
                               {"java", "-cp", test::kafka_libs() + "/*", "kafka.admin.ConfigCommand",
                                "--bootstrap-server", test::broker().brokers, "--alter", "--add-config",
                                "producer_byte_rate=1", "--entity-type", "clients", "--entity-name", client},
                               {}, 60s);
  REQUIRE_MESSAGE(quota.status == 0, quota.out << quota.err);
  test::receiver r(test::broker().brokers, test::fresh_topic("recv_throttled", 1), secret,
                   {"--kafka-property", "client.id=" + client});
  REQUIRE(r.wait_ready(15s));
  (void)test::post_event(r.port(), test::sign_event(secret, test::user_event_body("user_throttled")), 20s);
  const bool said = r.proc().wait_for_log("level=warn msg=kafka_throttled client=" + client, 20s);
  MESSAGE(test::line_with(r.proc().stderr_text(), "msg=kafka_throttled"));
  CHECK_MESSAGE(said,
                r.proc().stderr_text());
}
