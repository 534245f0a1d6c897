#include "receiver/harness.hpp"

#include <doctest/doctest.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <csignal>
#include <thread>

#include "support/support.hpp"

namespace test = clerk_sync::test;
using namespace std::chrono_literals;

using test::raw_conn;

TEST_CASE("connection cap, idle timeout and a half-sent request are bounded") {
  const auto brokers = test::broker().brokers;
  const auto topic = test::fresh_topic("recv_limits", 1);
  const auto secret = test::random_secret();
  test::receiver r(brokers, topic, secret, {"--max-connections", "3", "--idle-timeout-ms", "600", "--read-timeout-ms", "800"});
  {
    // Every connection in a request: a fourth is refused at once.
    raw_conn x(r.port()), y(r.port()), z(r.port());
    for (auto* c : {&x, &y, &z}) c->send("POST /webhooks/clerk HTTP/1.1\r\nHost: x\r\n");  // never finished
    std::this_thread::sleep_for(100ms);
    raw_conn over(r.port());
    CHECK(over.closed_within(1500ms));
    CHECK(x.closed_within(2000ms));  // cut at the read timeout
  }
  CHECK(r.proc().wait_for_log("msg=refused outcome=max_connections", 5s));
  std::this_thread::sleep_for(300ms);  // the cut connections are gone
  raw_conn b(r.port());
  raw_conn slow(r.port());
  slow.send("POST /webhooks/clerk HTTP/1.1\r\nHost: x\r\n");  // never finished
  CHECK(b.closed_within(3000ms));  // idle past the timeout
  CHECK(slow.closed_within(1000ms));
  CHECK(test::send_http(r.port(), "GET", "/healthz", {}, "").status == 200);  // room again
}

TEST_CASE("at the connection cap, the connection idle longest makes room for a new one") {
  const auto secret = test::random_secret();
  test::receiver r(test::broker().brokers, test::fresh_topic("recv_evict", 1), secret,
                   {"--max-connections", "3", "--idle-timeout-ms", "60000"});
  raw_conn a(r.port());
  std::this_thread::sleep_for(100ms);
  raw_conn b(r.port());
  std::this_thread::sleep_for(100ms);
  raw_conn c(r.port());  // the newest: the likeliest to be about to send
  std::this_thread::sleep_for(100ms);
  raw_conn over(r.port());
  CHECK(a.closed_within(1000ms));  // the longest idle, long before the idle timeout
  CHECK_FALSE(b.closed_within(200ms));
  CHECK_FALSE(c.closed_within(200ms));
  CHECK(over.send("GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n"));
  CHECK(test::status_of(over.read_until("\r\n\r\n", 2s)) == 200);
  CHECK(r.proc().wait_for_log("msg=idle_closed outcome=max_connections", 5s));
}

TEST_CASE("at the connection cap, a request read for over a second makes room: trickling clients cannot hold it") {
  const auto secret = test::random_secret();
  test::receiver r(test::broker().brokers, test::fresh_topic("recv_evict_slow", 1), secret,
                   {"--max-connections", "3", "--read-timeout-ms", "10000", "--idle-timeout-ms", "60000"});
  REQUIRE(r.wait_ready(15s));
  // Requests begun and not finished, one in its body and two in their
  // headers: each would hold its place for the read timeout, and for ever by
  // sending a byte now and then and a new request after each answer.
  raw_conn a(r.port());
  REQUIRE(a.send("POST /webhooks/clerk HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n" + test::forged_header_lines() +
                 "\r\n{\"type\""));
  std::this_thread::sleep_for(100ms);
  raw_conn b(r.port());
  REQUIRE(b.send("POST /webhooks/clerk HTTP/1.1\r\nHost: x\r\n"));
  std::this_thread::sleep_for(100ms);
  raw_conn c(r.port());
  REQUIRE(c.send("POST /webhooks/clerk HTTP/1.1\r\n"));
  std::this_thread::sleep_for(1200ms);
  // A delivery: the request read longest makes room.
  const auto answer =
      test::post_event(r.port(), test::sign_event(secret, test::user_event_body("user_evict_slow")), 20s);
  CHECK_MESSAGE(answer.status == 200, r.proc().stderr_text());
  CHECK(a.closed_within(1000ms));
  CHECK_FALSE(b.closed_within(200ms));
  CHECK_FALSE(c.closed_within(200ms));
  CHECK_MESSAGE(r.proc().wait_for_log("level=warn msg=slow_closed outcome=max_connections connections=3", 5s),
                r.proc().stderr_text());
}

TEST_CASE("at the connection cap, an answer its client does not read makes room: non-readers cannot hold it") {
  // Clients that send request after request on one connection and read no
  // answer: once their window is shut, each answer's write waits for the
  // read timeout, then they connect again. The answer's write was on no
  // list the cap takes from, so two such clients held a cap of two.
  const auto secret = test::random_secret();
  test::receiver r(test::broker().brokers, test::fresh_topic("recv_evict_unread", 1), secret,
                   {"--max-connections", "2", "--read-timeout-ms", "10000", "--idle-timeout-ms", "60000"});
  REQUIRE(r.wait_ready(15s));
  // Each sends from a thread of its own until the receiver reads no more
  // (its send times out), at most 20 s; the thread is joined and the socket
  // closed however the test ends.
  struct non_reader {
    int fd = -1;
    std::atomic<bool> shut{false};  // the receiver stopped reading its requests
    std::jthread sender;
    ~non_reader() {
      if (sender.joinable()) {
        sender.request_stop();
        sender.join();
      }
      if (fd >= 0) ::close(fd);
    }
  };
  const auto start = [&](non_reader& c) {
    c.fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    REQUIRE(c.fd >= 0);
    const int small = 4096;  // before connect, so that the windows start small
    REQUIRE(::setsockopt(c.fd, SOL_SOCKET, SO_RCVBUF, &small, sizeof small) == 0);
    REQUIRE(::setsockopt(c.fd, SOL_SOCKET, SO_SNDBUF, &small, sizeof small) == 0);
    const timeval wait{0, 200'000};
    REQUIRE(::setsockopt(c.fd, SOL_SOCKET, SO_SNDTIMEO, &wait, sizeof wait) == 0);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_port = htons(static_cast<std::uint16_t>(r.port()));
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    REQUIRE(::connect(c.fd, reinterpret_cast<sockaddr*>(&a), sizeof a) == 0);
    c.sender = std::jthread([&c](std::stop_token stop) {
      std::string requests;
      for (int i = 0; i < 1000; ++i) requests += "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n";
      const auto until = std::chrono::steady_clock::now() + 20s;
      while (!stop.stop_requested() && std::chrono::steady_clock::now() < until) {
        const auto n = ::send(c.fd, requests.data(), requests.size(), MSG_NOSIGNAL);
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
          c.shut = true;  // the receiver reads no more: its answer's write waits
          while (!stop.stop_requested()) std::this_thread::sleep_for(20ms);
          return;
        }
        if (n <= 0) return;  // closed
      }
    });
  };
  non_reader a, b;
  start(a);
  start(b);
  const auto until = std::chrono::steady_clock::now() + 20s;
  while (!(a.shut && b.shut) && std::chrono::steady_clock::now() < until) std::this_thread::sleep_for(50ms);
  REQUIRE(a.shut);
  REQUIRE(b.shut);
  std::this_thread::sleep_for(1200ms);  // both answers wait for over a second
  // A delivery: the answer waiting longest makes room.
  const auto answer =
      test::post_event(r.port(), test::sign_event(secret, test::user_event_body("user_evict_unread")), 20s);
  CHECK_MESSAGE(answer.status == 200, r.proc().stderr_text());
  CHECK_MESSAGE(r.proc().wait_for_log("level=warn msg=slow_closed outcome=max_connections connections=2 stage=answer", 5s),
                r.proc().stderr_text());
}

TEST_CASE("a 200 its client is gone for is said, the event in Kafka: a retry is a duplicate, not a mystery") {
  // The log said published status=200 before the answer was written, and
  // nothing when the write failed.
  const auto secret = test::random_secret();
  const auto topic = test::fresh_topic("recv_answer_failed", 1);
  test::receiver r(test::broker().brokers, topic, secret);
  REQUIRE(r.wait_ready(15s));
  const auto e = test::sign_event(secret, test::user_event_body("user_gone"));
  std::string request = "POST /webhooks/clerk HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n";
  for (const auto& [k, v] : e.headers) request += k + ": " + v + "\r\n";
  request += "Content-Length: " + std::to_string(e.body.size()) + "\r\n\r\n" + e.body;
  {
    raw_conn c(r.port());
    REQUIRE(c.send(request));
    // Gone at once, with a reset (no lingering close): the answer's write,
    // after Kafka's acknowledgement, meets it.
    const linger reset{1, 0};
    REQUIRE(::setsockopt(c.fd(), SOL_SOCKET, SO_LINGER, &reset, sizeof reset) == 0);
  }
  CHECK_MESSAGE(r.proc().wait_for_log("level=warn msg=answer_failed svix_id=" + e.id + " status=200 error=", 20s),
                r.proc().stderr_text());
  CHECK(test::line_with(r.proc().stderr_text(), "msg=published").find("svix_id=" + e.id) != std::string::npos);
  const auto records = test::read_topic(test::broker().brokers, topic);
  CHECK(records.size() == 1);
}

TEST_CASE("on SIGTERM idle connections are closed at once, a request in flight is still answered") {
  test::receiver r(test::broker().brokers, test::fresh_topic("recv_stop_idle", 1), test::random_secret(),
                   {"--idle-timeout-ms", "300000", "--shutdown-grace-ms", "20000"});
  REQUIRE(r.wait_ready(15s));
  raw_conn silent(r.port());  // never sends a byte
  raw_conn kept(r.port());    // idle again after a keep-alive answer
  REQUIRE(kept.send("GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n"));
  REQUIRE(test::status_of(kept.read_until("\r\n\r\n", 5000ms)) == 200);
  raw_conn half(r.port());  // a request whose header is not finished yet
  REQUIRE(half.send("GET /healthz HTTP/1.1\r\nHost: x\r\n"));
  std::this_thread::sleep_for(200ms);  // the receiver has read what was sent
  r.proc().signal(SIGTERM);
  // Nothing in flight on the idle two: closed at once, not after the grace.
  CHECK(silent.closed_within(5000ms));
  CHECK(kept.closed_within(1000ms));
  // The busy one is not cut off: its request, once finished, is answered.
  CHECK_FALSE(half.closed_within(200ms));
  REQUIRE(half.send("\r\n"));
  CHECK(test::status_of(half.read_until("\r\n\r\n", 5000ms)) == 200);
  CHECK(r.proc().wait(15s) == 0);
  CHECK(r.proc().stderr_text().find("msg=grace_expired") == std::string::npos);
}
