#pragma once
// What a receiver whose brokers refuse it must show, shared by the e2e
// tests of refused connections (credentials, TLS): never "unreachable", but
// the reason an operator acts on, at level=error, and no 2xx.

#include <doctest/doctest.h>

#include <chrono>
#include <string>

#include "receiver/harness.hpp"
#include "support/process.hpp"
#include "support/support.hpp"

namespace clerk_sync::test {

// `state` (authentication_failed, tls_failed) in its error line with
// librdkafka's reason, which starts with `reason`; /readyz 503 naming it; a
// webhook answered 503, and a not_ready line naming it once the receiver's
// --unready-deadline-s (the caller's, a few seconds) has passed.
inline void check_receiver_refused(receiver& r, const std::string& topic, const std::string& state,
                                   const std::string& reason, const std::string& secret) {
  using namespace std::chrono_literals;
  CHECK_MESSAGE(r.proc().wait_for_log("level=error msg=" + state + " topic=" + topic + " reason=\"" + reason, 15s),
                r.proc().stderr_text());
  const auto ready = send_http(r.port(), "GET", "/readyz", {}, "", 5s);
  CHECK(ready.status == 503);
  CHECK(ready.body == R"({"status":")" + state + R"("})");
  const auto answer = post_event(r.port(), sign_event(secret, user_event_body("user_refused")), 20s);
  CHECK(answer.status == 503);
  CHECK_MESSAGE(r.proc().wait_for_log("level=error msg=not_ready topic=" + topic + " status=" + state, 15s),
                r.proc().stderr_text());
}

}  // namespace clerk_sync::test
