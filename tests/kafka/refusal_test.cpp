#include "kafka/handle.hpp"

#include <doctest/doctest.h>

#include <pwd.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include <array>
#include <cstring>
#include <memory>
#include <string>

namespace kafka = clerk_sync::kafka;
using kind = kafka::refusal::kind;
using kafka::detail::refusal_in;

// librdkafka 2.0.2's FAIL lines (and error reasons) as clerk-sync's clients
// see them; the handshake's own come from a real SSL listener
// (tests/e2e/tls_test.cpp).
TEST_CASE("a failed TLS handshake is a refusal, and so is a refused login") {
  CHECK(refusal_in("ssl://127.0.0.1:19701/bootstrap: SSL handshake failed: error:0A000086:SSL routines::certificate "
                   "verify failed: broker certificate could not be verified, verify that ssl.ca.location is correctly "
                   "configured or root CA certificates are installed (install ca-certificates package) (after 4ms in "
                   "state SSL_HANDSHAKE)") == kind::tls);
  // The same failure on a write: __TRANSPORT, OpenSSL's words alone.
  CHECK(refusal_in("ssl://127.0.0.1:19712/bootstrap: error:0A000086:SSL routines::certificate verify failed (after "
                   "18ms in state SSL_HANDSHAKE)") == kind::tls);
  CHECK(refusal_in("[thrd:ssl://127.0.0.1:19701/bootstrap]: ssl://127.0.0.1:19701/bootstrap: SSL handshake failed: "
                   "error:0A00010B:SSL routines::wrong version number (after 1ms in state SSL_HANDSHAKE)") == kind::tls);
  CHECK(refusal_in("sasl_ssl://b-1.example:9096/bootstrap: SSL handshake failed: error:0A000410:SSL routines::sslv3 "
                   "alert handshake failure: SSL alert number 40 (after 20ms in state SSL_HANDSHAKE)") == kind::tls);
  CHECK(refusal_in("ssl://b-1.example:9094/1: Failed to verify broker certificate: unable to get local issuer "
                   "certificate (after 30ms in state SSL_HANDSHAKE)") == kind::tls);
  CHECK(refusal_in("ssl://b-1.example:9094/1: Broker did not provide a certificate (after 3ms in state "
                   "SSL_HANDSHAKE)") == kind::tls);
  // A broker that requires a client certificate and got none (TLS 1.3):
  // its alert comes with the first request, after the handshake.
  CHECK(refusal_in("[thrd:ssl://127.0.0.1:45301/bootstrap]: ssl://127.0.0.1:45301/bootstrap: Receive failed: "
                   "error:0A000412:SSL routines::sslv3 alert bad certificate: SSL alert number 42 (after 2ms in state "
                   "APIVERSION_QUERY)") == kind::tls);
  CHECK(refusal_in("sasl_plaintext://127.0.0.1:19702/bootstrap: SASL authentication error: Authentication failed: "
                   "Invalid username or password (after 3ms in state AUTH_REQ)") == kind::authentication);
  // SCRAM words a wrong password (or an unknown user) otherwise.
  CHECK(refusal_in("[thrd:sasl_plaintext://127.0.0.1:19512/bootstrap]: sasl_plaintext://127.0.0.1:19512/bootstrap: "
                   "SASL authentication error: Authentication failed during authentication due to invalid credentials "
                   "with SASL mechanism SCRAM-SHA-256 (after 313ms in state AUTH_REQ)") == kind::authentication);
}

// A sasl.mechanism the listener does not enable fails before any password
// is sent (state AUTH_HANDSHAKE, not AUTH_REQ); the fix is the same file.
TEST_CASE("a SASL mechanism the brokers do not offer is a refused login") {
  CHECK(refusal_in("sasl_plaintext://127.0.0.1:19512/bootstrap: SASL PLAIN mechanism handshake failed: Broker: "
                   "Unsupported SASL mechanism: broker's supported mechanisms: SCRAM-SHA-256 (after 302ms in state "
                   "AUTH_HANDSHAKE)") == kind::authentication);
  CHECK(refusal_in("sasl_plaintext://127.0.0.1:19513/bootstrap: SASL SCRAM-SHA-256 mechanism handshake failed: Broker: "
                   "Unsupported SASL mechanism: broker's supported mechanisms: PLAIN (after 302ms in state "
                   "AUTH_HANDSHAKE)") == kind::authentication);
  CHECK(refusal_in("[thrd:sasl_plaintext://127.0.0.1:19512/bootstrap]: sasl_plaintext://127.0.0.1:19512/bootstrap: SASL "
                   "SCRAM-SHA-512 mechanism handshake failed: Broker: Unsupported SASL mechanism: broker's supported "
                   "mechanisms: SCRAM-SHA-256 (after 301ms in state AUTH_HANDSHAKE, 1 identical error(s) suppressed)") ==
        kind::authentication);
}

TEST_CASE("an ordinary disconnect, during a handshake or not, is no refusal") {
  // A broker that stops or resets the connection meanwhile: librdkafka
  // words these "SSL handshake failed" too.
  CHECK_FALSE(refusal_in("ssl://127.0.0.1:19701/bootstrap: SSL handshake failed: Disconnected: connecting to a "
                         "PLAINTEXT broker listener? (after 2ms in state SSL_HANDSHAKE)"));
  CHECK_FALSE(refusal_in("ssl://127.0.0.1:19701/bootstrap: SSL handshake failed: error:0A000126:SSL routines::"
                         "unexpected eof while reading (after 3ms in state SSL_HANDSHAKE)"));
  // TLS to a PLAINTEXT listener gets no more than that.
  CHECK_FALSE(refusal_in("ssl://127.0.0.1:19710/bootstrap: error:0A000126:SSL routines::unexpected eof while "
                         "reading (after 8ms in state SSL_HANDSHAKE)"));
  CHECK_FALSE(refusal_in("ssl://127.0.0.1:19701/bootstrap: SSL handshake failed: SSL transport error: Connection "
                         "timed out (after 30000ms in state SSL_HANDSHAKE)"));
  CHECK_FALSE(refusal_in("ssl://127.0.0.1:19701/bootstrap: SSL handshake failed: error:8000006B:system library::"
                         "Connection reset by peer (after 1ms in state SSL_HANDSHAKE)"));
  CHECK_FALSE(refusal_in("ssl://127.0.0.1:19701/bootstrap: SSL handshake failed: No further error information "
                         "available (after 1ms in state SSL_HANDSHAKE)"));
  CHECK_FALSE(refusal_in("ssl://127.0.0.1:19701/bootstrap: Connect to ipv4#127.0.0.1:19701 failed: Connection "
                         "refused (after 0ms in state CONNECT)"));
  CHECK_FALSE(refusal_in("ssl://127.0.0.1:19701/1: Disconnected (after 600012ms in state UP)"));
  CHECK_FALSE(refusal_in("ssl://127.0.0.1:19701/1: error:0A000126:SSL routines::unexpected eof while reading (after "
                         "600012ms in state UP)"));
  // An alert on a connection long up (a broker, or a proxy in front of it,
  // restarting) is not about this client's certificate.
  CHECK_FALSE(refusal_in("ssl://127.0.0.1:19701/1: Receive failed: error:0A000438:SSL routines::tlsv1 alert internal "
                         "error: SSL alert number 80 (after 600012ms in state UP)"));
  // librdkafka's guesses at a disconnect, whatever it may mean.
  CHECK_FALSE(refusal_in("127.0.0.1:19712/bootstrap: Disconnected while requesting ApiVersion: might be caused by "
                         "incorrect security.protocol configuration (connecting to a SSL listener?) or broker version "
                         "is < 0.10 (see api.version.request) (after 1ms in state APIVERSION_QUERY)"));
  CHECK_FALSE(refusal_in("127.0.0.1:19702/1: Disconnected: verify that security.protocol is correctly configured, "
                         "broker might require SASL authentication (after 12ms in state UP)"));
  CHECK_FALSE(refusal_in("1/1 brokers are down"));
  // A login cut short on our side (a coordinator connection closed as its
  // client stops, or lost mid-login): librdkafka words it as an
  // authentication error, but the brokers refused nothing.
  CHECK_FALSE(refusal_in("[thrd:GroupCoordinator]: GroupCoordinator: SASL authentication error: "
                         "SaslAuthenticateRequest failed: Local: Broker transport failure (after 0ms in state DOWN)"));
  CHECK_FALSE(refusal_in("sasl_plaintext://127.0.0.1:19702/bootstrap: SASL authentication error: "
                         "SaslAuthenticateRequest failed: Local: Broker handle destroyed (after 2ms in state AUTH_REQ)"));
}

TEST_CASE("the error callback notes a refused login for its client, not one cut short on our side") {
  std::array<char, 256> err{};
  const std::unique_ptr<rd_kafka_t, kafka::detail::handle_deleter> rk(
      rd_kafka_new(RD_KAFKA_PRODUCER, rd_kafka_conf_new(), err.data(), err.size()));
  REQUIRE(rk);
  kafka::detail::log_error(rk.get(), RD_KAFKA_RESP_ERR__AUTHENTICATION,
                           "sasl_plaintext://127.0.0.1:1/bootstrap: SASL authentication error: SaslAuthenticateRequest "
                           "failed: Local: Broker transport failure (after 0ms in state DOWN)");
  CHECK_FALSE(kafka::detail::refusal_of(rk.get()));
  const std::string refused = "sasl_plaintext://127.0.0.1:1/bootstrap: SASL authentication error: Authentication "
                              "failed: Invalid username or password (after 302ms in state AUTH_REQ)";
  kafka::detail::log_error(rk.get(), RD_KAFKA_RESP_ERR__AUTHENTICATION, refused.c_str());
  const auto noted = kafka::detail::refusal_of(rk.get());
  REQUIRE(noted);
  CHECK(noted->what == kind::authentication);
  CHECK(noted->reason == refused);
  // What a request or a record that failed says then: the refusal, also
  // for a record whose delivery report says only that it timed out.
  for (const auto failed : {RD_KAFKA_RESP_ERR__MSG_TIMED_OUT, RD_KAFKA_RESP_ERR__TIMED_OUT, RD_KAFKA_RESP_ERR__TRANSPORT})
    CHECK(kafka::detail::failure_text(rk.get(), failed) ==
          "authentication failed (check sasl.username, sasl.password, sasl.mechanism): " + refused);
  CHECK(kafka::detail::failure_text(rk.get(), RD_KAFKA_RESP_ERR_MSG_SIZE_TOO_LARGE) ==
        rd_kafka_err2str(RD_KAFKA_RESP_ERR_MSG_SIZE_TOO_LARGE));
  kafka::detail::connection_accepted(rk.get());
  CHECK_FALSE(kafka::detail::refusal_of(rk.get()));
  CHECK(kafka::detail::failure_text(rk.get(), RD_KAFKA_RESP_ERR__MSG_TIMED_OUT) == "Local: Message timed out");
}

TEST_CASE("a client whose thread cannot start is a failure to restart on, not a bad setting") {
  // librdkafka returns no handle when it cannot start its main thread
  // (systemd's TasksMax=, no memory), as it does for a bad property. Taken
  // for one, it was exit 2, which the units never restart. A child process
  // runs it as a user allowed one process (RLIMIT_NPROC binds all but root):
  // no thread starts.
  const pid_t child = ::fork();
  REQUIRE(child >= 0);
  if (child == 0) {
    if (::getuid() == 0) {
      const passwd* nobody = ::getpwnam("nobody");
      if (nobody == nullptr || ::setgid(nobody->pw_gid) != 0 || ::setuid(nobody->pw_uid) != 0) ::_exit(10);
    }
    const rlimit one{1, 1};
    if (::setrlimit(RLIMIT_NPROC, &one) != 0) ::_exit(11);
    try {
      (void)kafka::detail::make_handle(RD_KAFKA_PRODUCER,
                                       kafka::detail::make_conf({"127.0.0.1:9", {}}, {}, kafka::detail::property_list{}));
      ::_exit(12);  // a thread started after all: the test proves nothing
    } catch (const kafka::config_error&) {
      ::_exit(2);
    } catch (const kafka::fatal_error& e) {
      ::_exit(std::strstr(e.what(), "Failed to create thread") != nullptr ? 0 : 13);
    } catch (...) {
      ::_exit(14);
    }
  }
  int status = 0;
  REQUIRE(::waitpid(child, &status, 0) == child);
  REQUIRE(WIFEXITED(status));
  // 2: taken for a bad setting; 10-14: the set-up or the check went wrong.
  CHECK(WEXITSTATUS(status) == 0);
}
