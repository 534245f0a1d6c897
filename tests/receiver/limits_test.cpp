#include "receiver/harness.hpp"

#include <doctest/doctest.h>

#include <csignal>

#include "support/support.hpp"

namespace test = clerk_sync::test;
using namespace std::chrono_literals;

using test::raw_conn;

TEST_CASE("connection cap, idle timeout and a half-sent request are bounded") {
  const auto brokers = test::broker().brokers;
  const auto topic = test::fresh_topic("recv_limits", 1);
  const auto secret = test::random_secret();
  test::receiver r(brokers, topic, secret, {"--max-connections", "3", "--idle-timeout-ms", "600", "--read-timeout-ms", "800"});
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
