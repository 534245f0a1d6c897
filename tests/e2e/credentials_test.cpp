// Wrong Kafka credentials and denied ACLs, against a real broker with a
// SASL listener of the test's own (PLAIN and SCRAM-SHA-256): the receiver
// never answers 2xx and says why at level=error, the consumer applies
// nothing and says why, the operator's tool fails within seconds naming the
// cause, for a wrong password of either mechanism and for a mechanism the
// listener does not offer; the right credentials publish and consume. No
// password appears in any line.
#include <doctest/doctest.h>

#include <chrono>
#include <csignal>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <map>
#include <memory>
#include <random>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "consumer/harness.hpp"
#include "kafka/admin.hpp"
#include "kafka/replica_watch.hpp"
#include "receiver/harness.hpp"
#include "e2e/ctl_run.hpp"
#include "e2e/refused_receiver.hpp"
#include "support/own_broker.hpp"
#include "support/process.hpp"
#include "support/support.hpp"

namespace test = clerk_sync::test;
namespace kafka = clerk_sync::kafka;
using namespace std::chrono_literals;
using test::run_ctl;
using test::line_with;

namespace {

std::string random_password() {
  std::random_device rd;
  std::ostringstream out;
  for (int i = 0; i < 4; ++i) out << std::hex << rd();
  return "test-" + out.str();
}

// A single node with two client listeners: PLAINTEXT (scripts/kafka-local's
// readiness check, and the test's own topic, ACL and SCRAM set-up, as the
// superuser ANONYMOUS) and SASL_PLAINTEXT with PLAIN users and SCRAM-SHA-256
// (`clerk` only, with a password of its own), behind Kafka's
// StandardAuthorizer: `clerk` may do anything, `stranger` may only write
// idempotently (no topic, no group; later, describe the topic), `nobody`
// may do nothing.
class sasl_broker {
 public:
  sasl_broker()
      : port_(test::free_port()),
        cport_(test::free_port()),
        sasl_port_(test::free_port()),
        clerk_password_(random_password()),
        stranger_password_(random_password()),
        nobody_password_(random_password()),
        scram_password_(random_password()),
        broker_(extra_config(), port_, cport_) {
    // SCRAM credentials live in the cluster's metadata, not in a JAAS line.
    // Added in the background while the PLAIN cases run: a JVM takes
    // seconds to start on a loaded host.
    scram_user_ = std::make_unique<test::process>(
        "/usr/bin/env",
        std::vector<std::string>{"java", "-cp", test::kafka_libs() + "/*", "kafka.admin.ConfigCommand",
                                 "--bootstrap-server", plain_address(), "--alter", "--add-config",
                                 "SCRAM-SHA-256=[password=" + scram_password_ + "]", "--entity-type", "users",
                                 "--entity-name", "clerk"});
  }

  [[nodiscard]] std::string plain_address() const { return broker_.address(); }
  [[nodiscard]] std::string sasl_address() const { return "127.0.0.1:" + std::to_string(sasl_port_); }
  [[nodiscard]] const std::string& clerk_password() const { return clerk_password_; }
  // `clerk`'s SCRAM-SHA-256 password, once await_scram_user() returned.
  [[nodiscard]] const std::string& scram_password() const { return scram_password_; }
  [[nodiscard]] std::vector<std::string> passwords() const {
    return {clerk_password_, stranger_password_, nobody_password_, scram_password_};
  }

  void await_scram_user() {
    const auto status = scram_user_->wait(60s);
    auto out = scram_user_->stdout_text() + scram_user_->stderr_text();
    // Kafka's tool repeats a value it cannot parse.
    for (auto at = out.find(scram_password_); at != std::string::npos; at = out.find(scram_password_))
      out.replace(at, scram_password_.size(), "***");
    REQUIRE_MESSAGE(status == 0, out);
  }

  // A librdkafka properties file for `user` with `password`, as an operator
  // writes it for a managed cluster.
  [[nodiscard]] std::string properties(const std::string& user, const std::string& password,
                                       const std::string& mechanism = "PLAIN") const {
    const auto path = broker_.dir() / (user + "-" + std::to_string(files_++) + ".properties");
    std::ofstream(path) << "security.protocol=SASL_PLAINTEXT\nsasl.mechanisms=" << mechanism
                        << "\nsasl.username=" << user << "\nsasl.password=" << password << "\n";
    return path.string();
  }
  [[nodiscard]] std::string stranger_properties() const { return properties("stranger", stranger_password_); }
  // The same settings for a client of this process.
  [[nodiscard]] kafka::client_config stranger_client() const {
    return {sasl_address(),
            {{"security.protocol", "SASL_PLAINTEXT"},
             {"sasl.mechanisms", "PLAIN"},
             {"sasl.username", "stranger"},
             {"sasl.password", stranger_password_}}};
  }
  [[nodiscard]] std::string nobody_properties() const { return properties("nobody", nobody_password_); }

  // Lets `stranger` acquire an idempotent producer id, and nothing else.
  void allow_idempotent_write() const {
    const auto r = test::run("/usr/bin/env",
                             {"java", "-cp", test::kafka_libs() + "/*", "kafka.admin.AclCommand", "--bootstrap-server",
                              plain_address(), "--add", "--allow-principal", "User:stranger", "--operation",
                              "IdempotentWrite", "--cluster"},
                             {}, 60s);
    REQUIRE_MESSAGE(r.status == 0, r.out << r.err);
  }

  // Lets `stranger` describe `topic` too (but still not write it).
  void allow_describe(const std::string& topic) const {
    const auto r = test::run("/usr/bin/env",
                             {"java", "-cp", test::kafka_libs() + "/*", "kafka.admin.AclCommand", "--bootstrap-server",
                              plain_address(), "--add", "--allow-principal", "User:stranger", "--operation",
                              "Describe", "--topic", topic},
                             {}, 60s);
    REQUIRE_MESSAGE(r.status == 0, r.out << r.err);
  }

 private:
  [[nodiscard]] std::string extra_config() const {
    return test::second_listener(port_, cport_, "SASL_PLAINTEXT", sasl_port_) +
           "sasl.enabled.mechanisms=PLAIN,SCRAM-SHA-256"
           "\nlistener.name.sasl_plaintext.plain.sasl.jaas.config="
           "org.apache.kafka.common.security.plain.PlainLoginModule required user_clerk=\"" +
           clerk_password_ + "\" user_stranger=\"" + stranger_password_ + "\" user_nobody=\"" + nobody_password_ +
           "\";"
           "\nlistener.name.sasl_plaintext.scram-sha-256.sasl.jaas.config="
           "org.apache.kafka.common.security.scram.ScramLoginModule required;"
           "\nauthorizer.class.name=org.apache.kafka.metadata.authorizer.StandardAuthorizer"
           "\nsuper.users=User:ANONYMOUS;User:clerk"
           "\nnum.partitions=1";
  }

  int port_;
  int cport_;
  int sasl_port_;
  std::string clerk_password_;
  std::string stranger_password_;
  std::string nobody_password_;
  std::string scram_password_;
  test::own_broker broker_;  // started once the settings above are made
  std::unique_ptr<test::process> scram_user_;  // after broker_: ended before it stops
  mutable int files_ = 0;
};

// A users consumer with these credentials. `refused`: one the brokers turn
// away, whose not_joined line is wanted within 3 s; a welcome one keeps the
// default deadline, since a fresh broker makes __consumer_offsets during its
// first join, which on a loaded host takes seconds.
std::unique_ptr<test::process> start_consumer(const std::string& brokers, const std::string& topic,
                                              const std::string& db, const std::string& properties, bool refused) {
  std::vector<std::string> args{"--projection", "users", "--topic", topic, "--db", db, "--group-prefix",
                                test::unique_name("sasl"), "--kafka-properties-file", properties};
  if (refused) args.insert(args.end(), {"--join-deadline-s", "3"});
  return test::start_consumer_on(brokers, args);
}

}  // namespace

TEST_CASE("against a SASL broker, a wrong password and denied ACLs are never silent, and the right password works") {
  sasl_broker broker;
  kafka::client_config admin;
  admin.brokers = broker.plain_address();
  const auto topic = test::unique_name("sasl");
  REQUIRE(kafka::create_topic(admin, {.name = topic, .partitions = 1, .replication_factor = 1, .configs = {}}, 30s) == kafka::create_outcome::created);
  const auto secret = test::random_secret();
  const auto wrong = broker.properties("clerk", "wrong-" + broker.clerk_password());
  test::temp_dir dir;
  std::vector<std::string> outputs;  // every line any process wrote, for the password check

  // A wrong password: the receiver, a consumer and the operator's tool at once.
  {
    test::receiver r(broker.sasl_address(), topic, secret,
                     {"--kafka-properties-file", wrong, "--unready-deadline-s", "3", "--publish-deadline-ms", "4000"});
    const auto db = (dir / "wrong.db").string();
    auto c = start_consumer(broker.sasl_address(), topic, db, wrong, true);
    REQUIRE_MESSAGE(c->wait_for_log("msg=ready", 15s), c->stderr_text());  // its database exists

    test::check_receiver_refused(r, topic, "authentication_failed", "sasl_plaintext://" + broker.sasl_address(),
                                 secret);

    // The operator's tool: exit 1 within seconds (not its 15 s timeout), naming the cause.
    const auto status = run_ctl({"status", "--topic", topic, "--db", db}, broker.sasl_address(), wrong);
    const auto ensure = run_ctl({"topic", "ensure", "--topic", topic}, broker.sasl_address(), wrong);
    const auto replay = run_ctl({"replay", "--topic", topic, "--db", (dir / "replay.db").string(), "--projection",
                                 "users"},
                                broker.sasl_address(), wrong);
    for (const auto* ctl : {&status, &ensure, &replay}) {
      CHECK_MESSAGE(ctl->status == 1, ctl->err);
      CHECK_MESSAGE(ctl->took < 8s, ctl->took.count() << " ms: " << ctl->err);
      const auto failed = line_with(ctl->err, "level=error msg=failed program=clerk-sync-ctl");
      CHECK_MESSAGE(failed.find("authentication failed") != std::string::npos, ctl->err);
      CHECK_MESSAGE(failed.find("Authentication failed: Invalid username or password") != std::string::npos, ctl->err);
      outputs.push_back(ctl->err);
    }
    CHECK_FALSE(std::filesystem::exists(dir / "replay.db"));

    // The consumer: not_joined with the brokers' reason, nothing applied.
    CHECK_MESSAGE(c->wait_for_log("Kafka refused the credentials", 20s), c->stderr_text());
    const auto not_joined = line_with(c->stderr_text(), "msg=not_joined");
    CHECK_MESSAGE(not_joined.starts_with("ts="), c->stderr_text());
    CHECK_MESSAGE(not_joined.find("level=error msg=not_joined projection=users topic=" + topic) != std::string::npos,
                  not_joined);
    CHECK_MESSAGE(not_joined.find("reason=\"sasl_plaintext://" + broker.sasl_address() +
                                  "/bootstrap: SASL authentication error: Authentication failed") != std::string::npos,
                  not_joined);
    c->signal(SIGTERM);
    CHECK(c->wait(30s) == 0);
    CHECK(test::query_int(db, "SELECT count(*) FROM users") == 0);
    CHECK(test::query_int(db, "SELECT count(*) FROM kafka_offsets") == 0);

    r.proc().signal(SIGTERM);
    CHECK(r.proc().wait(30s) == 0);
    const auto err = r.proc().stderr_text();
    CHECK_MESSAGE(err.find("level=error msg=kafka_error client=rdkafka#producer-1 error=_AUTHENTICATION") !=
                      std::string::npos,
                  err);
    CHECK(err.find("msg=published") == std::string::npos);
    outputs.push_back(err);
    outputs.push_back(c->stderr_text());
  }

  // SCRAM, as managed clusters use it: its wrong password is named like
  // PLAIN's, in SCRAM's words; and so is a mechanism the listener does not
  // offer, refused before any password is sent.
  broker.await_scram_user();
  {
    const auto scram_wrong = broker.properties("clerk", "wrong-" + broker.scram_password(), "SCRAM-SHA-256");
    const std::string reason = "sasl_plaintext://" + broker.sasl_address() +
                               "/bootstrap: SASL authentication error: Authentication failed during authentication "
                               "due to invalid credentials with SASL mechanism SCRAM-SHA-256";
    const auto db = (dir / "scram-wrong.db").string();
    auto c = start_consumer(broker.sasl_address(), topic, db, scram_wrong, true);
    test::receiver r(broker.sasl_address(), topic, secret,
                     {"--kafka-properties-file", scram_wrong, "--unready-deadline-s", "3", "--publish-deadline-ms",
                      "4000"});
    test::check_receiver_refused(r, topic, "authentication_failed", reason, secret);

    const auto status = run_ctl({"status", "--topic", topic, "--db", db}, broker.sasl_address(), scram_wrong);
    const auto mechanism = run_ctl({"status", "--topic", topic, "--db", db}, broker.sasl_address(),
                                   broker.properties("clerk", broker.scram_password(), "SCRAM-SHA-512"));
    for (const auto& [ctl, cause] :
         {std::pair{&status, reason},
          std::pair{&mechanism,
                    std::string("SASL SCRAM-SHA-512 mechanism handshake failed: Broker: Unsupported SASL mechanism")}}) {
      CHECK_MESSAGE(ctl->status == 1, ctl->err);
      CHECK_MESSAGE(ctl->took < 8s, ctl->took.count() << " ms: " << ctl->err);
      const auto failed = line_with(ctl->err, "level=error msg=failed program=clerk-sync-ctl");
      CHECK_MESSAGE(failed.find("authentication failed (check sasl.username, sasl.password, sasl.mechanism): ") !=
                        std::string::npos,
                    ctl->err);
      CHECK_MESSAGE(failed.find(cause) != std::string::npos, ctl->err);
      outputs.push_back(ctl->err);
    }

    CHECK_MESSAGE(c->wait_for_log("Kafka refused the credentials", 20s), c->stderr_text());
    CHECK_MESSAGE(line_with(c->stderr_text(), "level=error msg=not_joined").find(reason) != std::string::npos,
                  c->stderr_text());
    c->signal(SIGTERM);
    CHECK(c->wait(30s) == 0);
    CHECK(test::query_int(db, "SELECT count(*) FROM users") == 0);
    r.proc().signal(SIGTERM);
    CHECK(r.proc().wait(30s) == 0);
    outputs.push_back(r.proc().stderr_text());
    outputs.push_back(c->stderr_text());
  }

  // ACLs: `stranger` may not describe or write the topic, `nobody` may not
  // even acquire a producer id or use a group.
  broker.allow_idempotent_write();
  {
    test::receiver r(broker.sasl_address(), topic, secret,
                     {"--kafka-properties-file", broker.stranger_properties(), "--unready-deadline-s", "3"});
    // Not "topic_missing": the topic exists, these credentials may not see it.
    CHECK_MESSAGE(r.proc().wait_for_log("level=error msg=topic_unauthorized topic=" + topic, 15s),
                  r.proc().stderr_text());
    CHECK(test::send_http(r.port(), "GET", "/readyz", {}, "", 5s).body == R"({"status":"topic_unauthorized"})");
    const auto answer =
        test::post_event(r.port(), test::sign_event(secret, test::user_event_body("user_stranger")), 20s);
    CHECK(answer.status == 503);
    CHECK_MESSAGE(r.proc().wait_for_log("error=\"Broker: Topic authorization failed\"", 10s), r.proc().stderr_text());
    CHECK_MESSAGE(line_with(r.proc().stderr_text(), "Topic authorization failed").find("level=error msg=unavailable") !=
                      std::string::npos,
                  r.proc().stderr_text());
    r.proc().signal(SIGTERM);
    CHECK(r.proc().wait(30s) == 0);
    outputs.push_back(r.proc().stderr_text());

    // The receiver's replica watch, for a partition short of replicas
    // (which one broker cannot show), with credentials that may not read
    // the topic's min.insync.replicas: a warning that says so.
    {
      CHECK_THROWS_AS((void)kafka::describe_topic(broker.stranger_client(), topic, 10s), kafka::authorization_error);
      // Left out of a listing of all topics, the topic is asked for alone:
      // not taken for a missing one.
      const auto denied = "may not describe topic " + topic;
      CHECK_THROWS_WITH_AS((void)kafka::describe_cluster(broker.stranger_client(), topic, 10s),
                           doctest::Contains(denied.c_str()), kafka::authorization_error);
      const test::capture_stderr cap;
      kafka::replica_watch watch(broker.stranger_client(), topic);
      watch.update({{0, 1, 0}});
      const auto line = line_with(cap.text(), "msg=min_insync_unknown");
      CHECK_MESSAGE(line.find("level=warn") != std::string::npos, cap.text());
      CHECK_MESSAGE(line.find("Topic authorization failed") != std::string::npos, cap.text());
      CHECK_MESSAGE(line.find("allow them DescribeConfigs on the topic") != std::string::npos, cap.text());
      outputs.push_back(cap.text());
    }

    // A producer id refused is fatal for the idempotent producer: exit 3, one line naming it.
    test::process nobody(test::binary_path("app/receiver/clerk-sync-receiver"),
                         {"--listen", "127.0.0.1:" + std::to_string(test::free_port()), "--brokers",
                          broker.sasl_address(), "--topic", topic, "--kafka-properties-file",
                          broker.nobody_properties()},
                         {{"CLERK_WEBHOOK_SECRET", secret}, {"CLERK_WEBHOOK_SECRET_FILE", ""}, {"NOTIFY_SOCKET", ""}});
    CHECK(nobody.wait(30s) == 3);
    CHECK_MESSAGE(line_with(nobody.stderr_text(), "level=error msg=producer_fatal").find("Cluster authorization failed") !=
                      std::string::npos,
                  nobody.stderr_text());
    outputs.push_back(nobody.stderr_text());

    const auto db = (dir / "nobody.db").string();
    auto c = start_consumer(broker.sasl_address(), topic, db, broker.nobody_properties(), true);
    CHECK_MESSAGE(c->wait_for_log("level=error msg=kafka_error", 15s), c->stderr_text());
    CHECK_MESSAGE(c->wait_for_log("error=GROUP_AUTHORIZATION_FAILED", 15s), c->stderr_text());
    c->signal(SIGTERM);
    CHECK(c->wait(30s) == 0);
    CHECK(test::query_int(db, "SELECT count(*) FROM users") == 0);
    outputs.push_back(c->stderr_text());
  }

  // Credentials that may describe the topic but not write it: the probe's
  // metadata request says ready, and every publish is refused. After three
  // in a row /readyz says publish_failing, so that a balancer stops sending.
  broker.allow_describe(topic);
  {
    test::receiver r(broker.sasl_address(), topic, secret, {"--kafka-properties-file", broker.stranger_properties()});
    REQUIRE_MESSAGE(r.wait_ready(30s), r.proc().stderr_text());
    for (int i = 0; i < 3; ++i) {
      const auto answer = test::post_event(
          r.port(), test::sign_event(secret, test::user_event_body("user_no_write_" + std::to_string(i))), 20s);
      CHECK(answer.status == 503);
    }
    const auto readyz = test::send_http(r.port(), "GET", "/readyz", {}, "", 5s);
    CHECK(readyz.status == 503);
    CHECK(readyz.body == R"({"status":"publish_failing"})");
    const auto line = line_with(r.proc().stderr_text(), "msg=publish_failing");
    CHECK_MESSAGE(line.find("level=error msg=publish_failing topic=" + topic + " failed=3") != std::string::npos,
                  r.proc().stderr_text());
    CHECK_MESSAGE(line.find("Topic authorization failed") != std::string::npos, line);
    r.proc().signal(SIGTERM);
    CHECK(r.proc().wait(30s) == 0);
    outputs.push_back(r.proc().stderr_text());
  }

  // The right passwords, PLAIN's and SCRAM's: each receiver's event
  // published, both consumed by a consumer of each mechanism, and status
  // exits 0.
  {
    const auto right = broker.properties("clerk", broker.clerk_password());
    const auto scram = broker.properties("clerk", broker.scram_password(), "SCRAM-SHA-256");
    test::receiver r(broker.sasl_address(), topic, secret, {"--kafka-properties-file", right});
    test::receiver rs(broker.sasl_address(), topic, secret, {"--kafka-properties-file", scram});
    REQUIRE_MESSAGE(r.wait_ready(30s), r.proc().stderr_text());
    REQUIRE_MESSAGE(rs.wait_ready(30s), rs.proc().stderr_text());
    const auto answer = test::post_event(r.port(), test::sign_event(secret, test::user_event_body("user_right")), 20s);
    CHECK_MESSAGE(answer.status == 200, r.proc().stderr_text());
    const auto scram_answer =
        test::post_event(rs.port(), test::sign_event(secret, test::user_event_body("user_scram")), 20s);
    CHECK_MESSAGE(scram_answer.status == 200, rs.proc().stderr_text());
    const auto db = (dir / "right.db").string();
    const auto scram_db = (dir / "scram-right.db").string();
    auto c = start_consumer(broker.sasl_address(), topic, db, right, false);
    auto cs = start_consumer(broker.sasl_address(), topic, scram_db, scram, false);
    for (const auto& [consumer, file] : {std::pair{c.get(), db}, std::pair{cs.get(), scram_db}}) {
      CHECK_MESSAGE(test::wait_caught_up(file, topic, {"users"}, 2, 60s), consumer->stderr_text());
      CHECK(test::query_int(file, "SELECT count(*) FROM users WHERE id IN ('user_right', 'user_scram')") == 2);
      consumer->signal(SIGTERM);
      CHECK(consumer->wait(30s) == 0);
    }
    const auto status = run_ctl({"status", "--topic", topic, "--db", db}, broker.sasl_address(), right);
    CHECK_MESSAGE(status.status == 0, status.err);
    for (auto* receiver : {&r, &rs}) {
      receiver->proc().signal(SIGTERM);
      CHECK(receiver->proc().wait(30s) == 0);
    }
    for (const auto& out : {r.proc().stderr_text(), rs.proc().stderr_text(), c->stderr_text(), cs->stderr_text(),
                            status.err}) {
      CHECK_MESSAGE(out.find("level=error") == std::string::npos, out);
      outputs.push_back(out);
    }
  }

  for (const auto& out : outputs)
    for (const auto& password : broker.passwords()) CHECK(out.find(password) == std::string::npos);
}
