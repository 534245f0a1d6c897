// A failed TLS handshake, against a real broker with an SSL listener of the
// test's own that requires a client certificate (a CA, the broker's and a
// client's certificates made with openssl at run time, in a temporary
// folder): a client that trusts another CA gets the receiver's tls_failed
// and a 503, a consumer's not_joined naming the handshake and nothing
// applied, and clerk-sync-ctl's exit 1 within seconds naming it; so do a
// broker name its certificate does not hold and a missing client
// certificate; the right CA and certificate get a 200 that is consumed.
#include <doctest/doctest.h>

#include <chrono>
#include <csignal>
#include <filesystem>
#include <fstream>
#include <memory>
#include <string>
#include <vector>

#include "consumer/harness.hpp"
#include "kafka/admin.hpp"
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

void openssl(const std::vector<std::string>& args) {
  const auto r = test::run("/usr/bin/openssl", args, {}, 30s);
  REQUIRE_MESSAGE(r.status == 0, "openssl " << args.front() << ": " << r.out << r.err);
}

// A CA of its own (P-256: quick to make), its certificate in `name`.pem.
void make_ca(const std::filesystem::path& dir, const std::string& name) {
  openssl({"req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes", "-keyout",
           (dir / (name + ".key")).string(), "-out", (dir / (name + ".pem")).string(), "-days", "1", "-subj",
           "/CN=clerk-sync test " + name});
}

// Key material, made before the broker starts: the CA the broker's and the
// client's certificates are signed by (ca.pem), another one (other-ca.pem),
// the broker's key and certificate (for 127.0.0.1, as librdkafka checks the
// name) in a PKCS#12 store, and the client's (client.key, client.pem).
class tls_material {
 public:
  tls_material() {
    make_ca(dir_.path(), "ca");
    make_ca(dir_.path(), "other-ca");
    const auto d = dir_.path();
    openssl({"req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes", "-keyout",
             (d / "broker.key").string(), "-out", (d / "broker.csr").string(), "-subj", "/CN=127.0.0.1"});
    std::ofstream(d / "broker.ext") << "subjectAltName=IP:127.0.0.1\n";
    openssl({"x509", "-req", "-in", (d / "broker.csr").string(), "-CA", (d / "ca.pem").string(), "-CAkey",
             (d / "ca.key").string(), "-set_serial", "2", "-days", "1", "-extfile", (d / "broker.ext").string(),
             "-out", (d / "broker.pem").string()});
    openssl({"pkcs12", "-export", "-in", (d / "broker.pem").string(), "-inkey", (d / "broker.key").string(),
             "-name", "broker", "-out", store().string(), "-passout", std::string("pass:") + store_password});
    openssl({"req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes", "-keyout",
             (d / "client.key").string(), "-out", (d / "client.csr").string(), "-subj", "/CN=clerk-sync"});
    openssl({"x509", "-req", "-in", (d / "client.csr").string(), "-CA", (d / "ca.pem").string(), "-CAkey",
             (d / "ca.key").string(), "-set_serial", "3", "-days", "1", "-out", (d / "client.pem").string()});
  }
  [[nodiscard]] std::filesystem::path store() const { return dir_.path() / "broker.p12"; }
  [[nodiscard]] std::filesystem::path ca() const { return dir_.path() / "ca.pem"; }
  [[nodiscard]] std::filesystem::path other_ca() const { return dir_.path() / "other-ca.pem"; }
  [[nodiscard]] const std::filesystem::path& dir() const { return dir_.path(); }

  // Not a secret: the store lives and dies with the test's folder.
  static constexpr const char* store_password = "clerk-sync-test";

 private:
  test::temp_dir dir_;
};

// A single node with two client listeners: PLAINTEXT (scripts/kafka-local's
// readiness check, and the test's topic set-up) and SSL, which requires a
// client certificate signed by the CA.
class tls_broker {
 public:
  tls_broker() : port_(test::free_port()), cport_(test::free_port()), ssl_port_(test::free_port()),
                 broker_(extra_config(), port_, cport_) {}

  [[nodiscard]] std::string plain_address() const { return broker_.address(); }
  [[nodiscard]] std::string ssl_address() const { return "127.0.0.1:" + std::to_string(ssl_port_); }

  // A librdkafka properties file that trusts `ca`, as an operator writes
  // it, with the client's certificate or without.
  [[nodiscard]] std::string properties(const std::filesystem::path& ca, bool client_certificate = true) const {
    const auto& d = material_.dir();
    const auto path = d / (ca.stem().string() + (client_certificate ? "" : "-no-cert") + ".properties");
    std::ofstream out(path);
    out << "security.protocol=SSL\nssl.ca.location=" << ca.string() << "\n";
    if (client_certificate)
      out << "ssl.certificate.location=" << (d / "client.pem").string()
          << "\nssl.key.location=" << (d / "client.key").string() << "\n";
    return path.string();
  }
  [[nodiscard]] const tls_material& material() const { return material_; }

 private:
  [[nodiscard]] std::string extra_config() const {
    return test::second_listener(port_, cport_, "SSL", ssl_port_) +
           "ssl.keystore.type=PKCS12"
           "\nssl.keystore.location=" +
           material_.store().string() + "\nssl.keystore.password=" + tls_material::store_password +
           "\nssl.key.password=" + tls_material::store_password +
           "\nssl.client.auth=required\nssl.truststore.type=PEM\nssl.truststore.location=" + material_.ca().string() +
           "\nnum.partitions=1";
  }

  tls_material material_;  // first: the broker reads it at start
  int port_;
  int cport_;
  int ssl_port_;
  test::own_broker broker_;  // last: started once the settings above are made
};

}  // namespace

TEST_CASE("against an SSL listener, a CA that does not verify the broker is named as a failed TLS handshake") {
  tls_broker broker;
  kafka::client_config admin;
  admin.brokers = broker.plain_address();
  const auto topic = test::unique_name("tls");
  REQUIRE(kafka::create_topic(admin, {.name = topic, .partitions = 1, .replication_factor = 1, .configs = {}}, 30s) ==
          kafka::create_outcome::created);
  const auto secret = test::random_secret();
  test::temp_dir dir;
  // librdkafka's reason starts with the broker's name; then "SSL handshake
  // failed: error:0A000086:SSL routines::certificate verify failed: ..." or,
  // for a handshake that failed on a write, OpenSSL's words alone.
  const auto handshake = "ssl://" + broker.ssl_address() + "/bootstrap: ";

  // Another CA: the receiver, a consumer and the operator's tool at once.
  {
    const auto wrong = broker.properties(broker.material().other_ca());
    test::receiver r(broker.ssl_address(), topic, secret,
                     {"--kafka-properties-file", wrong, "--unready-deadline-s", "3", "--publish-deadline-ms", "4000"});
    const auto db = (dir / "wrong.db").string();
    auto c = test::start_consumer_on(broker.ssl_address(),
                                     {"--projection", "users", "--topic", topic, "--db", db, "--group-prefix",
                                      test::unique_name("tls"), "--kafka-properties-file", wrong,
                                      "--join-deadline-s", "3"});
    REQUIRE_MESSAGE(c->wait_for_log("msg=ready", 15s), c->stderr_text());  // its database exists

    test::check_receiver_refused(r, topic, "tls_failed", handshake, secret);
    CHECK_MESSAGE(line_with(r.proc().stderr_text(), "msg=tls_failed").find("certificate verify failed") !=
                      std::string::npos,
                  r.proc().stderr_text());
    CHECK_MESSAGE(line_with(r.proc().stderr_text(), "msg=not_ready").find("reason=\"" + handshake) !=
                      std::string::npos,
                  r.proc().stderr_text());

    // The operator's tool: exit 1 within seconds (not its 15 s timeout), naming the handshake.
    const auto status = run_ctl({"status", "--topic", topic, "--db", db}, broker.ssl_address(), wrong);
    CHECK_MESSAGE(status.status == 1, status.err);
    CHECK_MESSAGE(status.took < 8s, status.took.count() << " ms: " << status.err);
    const auto failed = line_with(status.err, "level=error msg=failed program=clerk-sync-ctl");
    CHECK_MESSAGE(failed.find("TLS handshake failed (check ssl.ca.location") != std::string::npos, status.err);
    CHECK_MESSAGE(failed.find("certificate verify failed") != std::string::npos, status.err);

    // A broker name the certificate does not hold (it holds 127.0.0.1):
    // the same check fails, with the right CA.
    const auto port = broker.ssl_address().substr(broker.ssl_address().rfind(':'));
    const auto misnamed =
        run_ctl({"topic", "ensure", "--topic", topic, "--partitions", "1"}, "localhost" + port,
                broker.properties(broker.material().ca()));
    CHECK_MESSAGE(misnamed.status == 1, misnamed.err);
    CHECK_MESSAGE(misnamed.took < 8s, misnamed.took.count() << " ms: " << misnamed.err);
    CHECK_MESSAGE(line_with(misnamed.err, "level=error msg=failed program=clerk-sync-ctl")
                          .find("TLS handshake failed (check ssl.ca.location") != std::string::npos,
                  misnamed.err);

    // No client certificate: under TLS 1.3 the broker's alert comes after
    // the handshake, with the first request; it once took ctl its whole
    // 15 s to say "Broker transport failure".
    const auto anonymous = run_ctl({"topic", "ensure", "--topic", topic, "--partitions", "1"}, broker.ssl_address(),
                                   broker.properties(broker.material().ca(), false));
    CHECK_MESSAGE(anonymous.status == 1, anonymous.err);
    CHECK_MESSAGE(anonymous.took < 8s, anonymous.took.count() << " ms: " << anonymous.err);
    const auto refused = line_with(anonymous.err, "level=error msg=failed program=clerk-sync-ctl");
    CHECK_MESSAGE(refused.find("TLS handshake failed (check ssl.ca.location") != std::string::npos, anonymous.err);
    CHECK_MESSAGE(refused.find("alert bad certificate") != std::string::npos, anonymous.err);

    // The consumer: not_joined naming the handshake, with the reason; nothing applied.
    CHECK_MESSAGE(c->wait_for_log("the TLS handshake with Kafka failed", 20s), c->stderr_text());
    const auto not_joined = line_with(c->stderr_text(), "msg=not_joined");
    CHECK_MESSAGE(not_joined.find("level=error msg=not_joined projection=users topic=" + topic) != std::string::npos,
                  not_joined);
    CHECK_MESSAGE(not_joined.find("reason=\"" + handshake) != std::string::npos, not_joined);
    CHECK_MESSAGE(not_joined.find("certificate verify failed") != std::string::npos, not_joined);
    c->signal(SIGTERM);
    CHECK(c->wait(30s) == 0);
    CHECK(test::query_int(db, "SELECT count(*) FROM users") == 0);
    CHECK(test::query_int(db, "SELECT count(*) FROM kafka_offsets") == 0);

    r.proc().signal(SIGTERM);
    CHECK(r.proc().wait(30s) == 0);
    CHECK(r.proc().stderr_text().find("msg=published") == std::string::npos);
  }

  // The right CA and client certificate: published, consumed, and status exits 0.
  {
    const auto right = broker.properties(broker.material().ca());
    test::receiver r(broker.ssl_address(), topic, secret, {"--kafka-properties-file", right});
    REQUIRE_MESSAGE(r.wait_ready(30s), r.proc().stderr_text());
    const auto answer = test::post_event(r.port(), test::sign_event(secret, test::user_event_body("user_right")), 20s);
    CHECK_MESSAGE(answer.status == 200, r.proc().stderr_text());
    const auto db = (dir / "right.db").string();
    auto c = test::start_consumer_on(broker.ssl_address(), {"--projection", "users", "--topic", topic, "--db", db,
                                                           "--group-prefix", test::unique_name("tls"),
                                                           "--kafka-properties-file", right});
    CHECK_MESSAGE(test::wait_caught_up(db, topic, {"users"}, 1, 60s), c->stderr_text());
    CHECK(test::query_int(db, "SELECT count(*) FROM users WHERE id = 'user_right'") == 1);
    c->signal(SIGTERM);
    CHECK(c->wait(30s) == 0);
    const auto status = run_ctl({"status", "--topic", topic, "--db", db}, broker.ssl_address(), right);
    CHECK_MESSAGE(status.status == 0, status.err);
    r.proc().signal(SIGTERM);
    CHECK(r.proc().wait(30s) == 0);
    for (const auto& out : {r.proc().stderr_text(), c->stderr_text(), status.err})
      CHECK_MESSAGE(out.find("level=error") == std::string::npos, out);
  }
}
