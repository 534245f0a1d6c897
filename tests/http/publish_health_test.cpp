// The receiver's judgement that publishing fails as a whole, on a clock of
// the test's own: when it trips, what it says, and what lets the receiver
// back in.
#include <doctest/doctest.h>

#include <chrono>
#include <string>

#include "http/publish_health.hpp"
#include "support/support.hpp"

namespace http = clerk_sync::http;
namespace test = clerk_sync::test;
using namespace std::chrono_literals;

using test::count_of;

TEST_CASE("publish_failing after three failures in a row, said once, until one is acknowledged") {
  const test::capture_stderr cap;
  http::publish_health h("clerk-events");
  const auto t0 = std::chrono::steady_clock::time_point{} + 1h;

  h.failed("not_acknowledged", "Broker: Topic authorization failed", t0);
  h.acknowledged();  // an acknowledgement between failures: not in a row
  h.failed("deadline", "", t0 + 1s);
  h.failed("not_acknowledged", "Broker: Topic authorization failed", t0 + 2s);
  CHECK_FALSE(h.failing(t0 + 2s));
  CHECK(cap.text().find("publish_failing") == std::string::npos);

  h.failed("not_acknowledged", "Broker: Topic authorization failed", t0 + 3s);
  CHECK(h.failing(t0 + 3s));
  h.failed("deadline", "", t0 + 4s);
  h.failed("queue_full", "", t0 + 5s);
  CHECK(h.failing(t0 + 5s));
  const auto text = cap.text();
  CHECK_MESSAGE(count_of(text, "msg=publish_failing") == 1, text);
  CHECK_MESSAGE(text.find("level=error msg=publish_failing topic=clerk-events failed=3 last_outcome=not_acknowledged "
                          "error=\"Broker: Topic authorization failed\"") != std::string::npos,
                text);

  h.acknowledged();
  CHECK_FALSE(h.failing(t0 + 6s));
  CHECK_MESSAGE(cap.text().find("level=info msg=publish_recovered topic=clerk-events failed=5") != std::string::npos,
                cap.text());
  // Back to needing three in a row, and nothing more to say.
  h.failed("deadline", "", t0 + 7s);
  h.acknowledged();
  CHECK(count_of(cap.text(), "msg=publish_") == 2);
}

TEST_CASE("publish_failing lets the receiver back in after 30 s without a failure, and trips again at the next") {
  const test::capture_stderr cap;
  http::publish_health h("clerk-events");
  const auto t0 = std::chrono::steady_clock::time_point{} + 1h;
  for (int i = 0; i < 3; ++i) h.failed("not_acknowledged", "", t0 + std::chrono::seconds(i));
  CHECK(h.failing(t0 + 2s + http::publish_health::hold - 1ms));
  CHECK_FALSE(h.failing(t0 + 2s + http::publish_health::hold));

  // A balancer sends again: one more failure takes it out again, with a
  // line (a minute later: one a minute at most).
  const auto later = t0 + 2s + 61s;
  CHECK_FALSE(h.failing(later));
  h.failed("not_acknowledged", "", later);
  CHECK(h.failing(later));
  CHECK_MESSAGE(count_of(cap.text(), "msg=publish_failing") == 2, cap.text());
  CHECK(cap.text().find("failed=4") != std::string::npos);
}
