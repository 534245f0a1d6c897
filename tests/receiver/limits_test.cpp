#include "receiver/harness.hpp"

#include <doctest/doctest.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <csignal>

#include "support/support.hpp"

namespace test = clerk_sync::test;
using namespace std::chrono_literals;

namespace {

// A raw TCP connection, for holding sockets open or sending half a request.
class raw_conn {
 public:
  explicit raw_conn(int port) : fd_(::socket(AF_INET, SOCK_STREAM, 0)) {
    REQUIRE(fd_ >= 0);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_port = htons(static_cast<std::uint16_t>(port));
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    REQUIRE(::connect(fd_, reinterpret_cast<sockaddr*>(&a), sizeof a) == 0);
  }
  ~raw_conn() { ::close(fd_); }
  raw_conn(const raw_conn&) = delete;
  raw_conn& operator=(const raw_conn&) = delete;
  void send(const std::string& s) { REQUIRE(::send(fd_, s.data(), s.size(), MSG_NOSIGNAL) == static_cast<ssize_t>(s.size())); }
  // True when the server closed the connection within `timeout`.
  bool closed_within(std::chrono::milliseconds timeout) {
    pollfd p{fd_, POLLIN, 0};
    if (::poll(&p, 1, static_cast<int>(timeout.count())) <= 0) return false;
    char buf[512];
    for (int i = 0; i < 100; ++i) {
      const auto n = ::recv(fd_, buf, sizeof buf, MSG_DONTWAIT);
      if (n == 0 || (n < 0 && errno != EAGAIN)) return true;
      if (n < 0) return false;
    }
    return false;
  }

 private:
  int fd_;
};

}  // namespace

TEST_CASE("connection cap, idle timeout and a half-sent request are bounded") {
  const auto brokers = test::broker().brokers;
  const auto topic = test::fresh_topic("recv_limits", 1);
  const auto secret = test::random_secret();
  test::receiver r(brokers, topic, secret, {"--max-connections", "3", "--idle-timeout-ms", "600"});
  raw_conn a(r.port()), b(r.port());
  raw_conn slow(r.port());
  slow.send("POST /webhooks/clerk HTTP/1.1\r\nHost: x\r\n");  // never finished
  raw_conn over(r.port());
  CHECK(over.closed_within(1500ms));  // the fourth is refused at once
  CHECK_FALSE(a.closed_within(100ms));
  CHECK(a.closed_within(3000ms));  // idle past the timeout
  CHECK(b.closed_within(1000ms));
  CHECK(slow.closed_within(1000ms));
  CHECK(test::send_http(r.port(), "GET", "/healthz", {}, "").status == 200);  // room again
  CHECK(r.proc().wait_for_log("msg=refused outcome=max_connections", 5s));  // info lines flush in blocks
}
