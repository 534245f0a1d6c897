// The receiver at the edges: a broker that would create topics on request
// never gets one from us, and request-derived log fields stay bounded,
// escaped and (with --log-format json) parseable.
#include "receiver/harness.hpp"

#include <doctest/doctest.h>

#include <rapidjson/document.h>

#include <csignal>
#include <memory>
#include <thread>

#include "kafka/admin.hpp"
#include "kafka/client.hpp"
#include "kafka/consumer.hpp"
#include "support/own_broker.hpp"
#include "support/support.hpp"

namespace test = clerk_sync::test;
namespace kafka = clerk_sync::kafka;
using namespace std::chrono_literals;
using test::lines_of;

namespace {

// The receiver with --log-format json (the harness waits for a logfmt line).
class json_receiver {
 public:
  json_receiver(const std::string& brokers, const std::string& topic, const std::string& secret,
                const std::vector<std::string>& extra_args = {})
      : port_(test::free_port()) {
    std::vector<std::string> args{"--listen", "127.0.0.1:" + std::to_string(port_), "--brokers", brokers,
                                  "--topic",  topic,     "--log-format", "json"};
    args.insert(args.end(), extra_args.begin(), extra_args.end());
    proc_ = std::make_unique<test::process>(
        test::binary_path("app/receiver/clerk-sync-receiver"), args,
        std::map<std::string, std::string>{
            {"CLERK_WEBHOOK_SECRET", secret}, {"CLERK_WEBHOOK_SECRET_FILE", ""}, {"NOTIFY_SOCKET", ""}});
    REQUIRE_MESSAGE(proc_->wait_for_log("\"msg\":\"listening\"", 15s), proc_->stderr_text());
  }
  [[nodiscard]] int port() const { return port_; }
  [[nodiscard]] test::process& proc() { return *proc_; }
  bool wait_ready(std::chrono::milliseconds timeout) {
    const auto until = std::chrono::steady_clock::now() + timeout;
    while (std::chrono::steady_clock::now() < until) {
      if (test::send_http(port_, "GET", "/readyz", {}, "", 2s).status == 200) return true;
      std::this_thread::sleep_for(100ms);
    }
    return false;
  }

 private:
  int port_;
  std::unique_ptr<test::process> proc_;
};

void check_all_json(const std::string& text) {
  const auto lines = lines_of(text);
  CHECK(!lines.empty());
  for (const auto& line : lines) {
    rapidjson::Document d;
    d.Parse(line.c_str(), line.size());
    CHECK_MESSAGE(!d.HasParseError(), line);
    CHECK_MESSAGE((d.IsObject() && d.HasMember("msg")), line);
  }
}

}  // namespace

TEST_CASE("on a broker that auto-creates topics, no client of ours creates the events topic") {
  // A broker of this test's own with Apache Kafka's default
  // auto.create.topics.enable=true (the shared test broker disables it).
  test::own_broker broker("auto.create.topics.enable=true\nnum.partitions=1");
  REQUIRE(broker.server_properties().find("auto.create.topics.enable=true") != std::string::npos);
  kafka::client_config cfg;
  cfg.brokers = broker.address();
  const std::string topic = "clerk.events.auto";
  const auto secret = test::random_secret();
  // An operator's property cannot turn it back on: it stops start-up (exit 2, one line)...
  const auto refused = test::run(test::binary_path("app/receiver/clerk-sync-receiver"),
                                 {"--brokers", broker.address(), "--topic", topic, "--kafka-property",
                                  "allow.auto.create.topics=true"},
                                 {{"CLERK_WEBHOOK_SECRET", secret}, {"CLERK_WEBHOOK_SECRET_FILE", ""}}, 10s);
  CHECK(refused.status == 2);
  CHECK(refused.err.find("allow.auto.create.topics") != std::string::npos);
  // ... and without it, no probe or produce of ours creates the topic.
  json_receiver r(broker.address(), topic, secret);
  REQUIRE_MESSAGE(r.proc().wait_for_log("\"msg\":\"topic_missing\"", 20s), r.proc().stderr_text());

  const auto e = test::sign_event(secret, test::user_event_body("user_auto"));
  const auto answer = test::post_event(r.port(), e, 30s);
  CHECK(answer.status == 503);
  CHECK(test::send_http(r.port(), "GET", "/readyz", {}, "", 5s).body == R"({"status":"topic_missing"})");

  // A consumer subscribing to it and a reader asking for its partitions do not create it either.
  {
    kafka::consumer c(cfg, test::unique_name("auto"));
    c.subscribe({topic});
    for (int i = 0; i < 20; ++i) (void)c.poll(100ms);
    CHECK(c.partitions_of(topic, 5s).empty());
    c.close();
  }
  std::this_thread::sleep_for(2s);  // several more readiness probes
  const auto ready = test::send_http(r.port(), "GET", "/readyz", {}, "", 5s);
  CHECK(ready.status == 503);
  CHECK(ready.body == R"({"status":"topic_missing"})");
  CHECK_FALSE(kafka::describe_topic(cfg, topic, 10s).has_value());

  r.proc().signal(SIGTERM);
  CHECK(r.proc().wait(30s) == 0);
  check_all_json(r.proc().stderr_text());
}

TEST_CASE("a 15 KB svix-id is cut in the log, and an invalid UTF-8 one still makes a JSON line") {
  const auto secret = test::random_secret();
  const auto topic = test::fresh_topic("edge-log", 1);
  json_receiver r(test::broker().brokers, topic, secret);
  REQUIRE(r.wait_ready(30s));

  auto long_id = test::sign_event(secret, test::user_event_body("user_long"));
  long_id.headers["svix-id"] = "msg_" + std::string(15'000, 'x');
  for (int i = 0; i < 3; ++i) {
    const auto status = test::post_event(r.port(), long_id).status;
    CHECK((status == 400 || status == 401));
  }

  auto bad_utf8 = test::sign_event(secret, test::user_event_body("user_bad"));
  bad_utf8.headers["svix-id"] = "msg_\xff\xfe\xc3";  // obs-text: HTTP lets it through
  const auto status = test::post_event(r.port(), bad_utf8).status;
  CHECK((status == 400 || status == 401));

  r.proc().signal(SIGTERM);
  CHECK(r.proc().wait(30s) == 0);
  const auto err = r.proc().stderr_text();
  check_all_json(err);
  CHECK(err.find(std::string(15'000, 'x')) == std::string::npos);
  CHECK_MESSAGE(err.find("...[cut 14804 bytes]") != std::string::npos, err.substr(0, 4000));
  CHECK_MESSAGE(err.find(R"("svix_id":"msg_\\xff\\xfe\\xc3")") != std::string::npos, err.substr(0, 4000));
  for (const auto& line : lines_of(err)) CHECK(line.size() < 4'000);
}
