#pragma once
// Whether the receiver's publishing fails as a whole while the cluster still
// answers the readiness probe: credentials that may describe the topic but
// not write it, a producer id refused, a partition short of its in-sync
// replicas. Each webhook then gets a 503 and an error line, but a probe
// that only asks for metadata said ready, and a load balancer watching
// /readyz kept sending. After `trip_after` publishes in a row failed (none
// acknowledged between them), /readyz answers 503 publish_failing until a
// publish is acknowledged, or until none has failed for `hold` (a balancer
// that took the receiver out sends nothing more, and nothing else would
// ever bring it back: it is let in again to try). One error line when it
// trips, one info line when a publish is acknowledged again (rate-limited).
// One thread (the server's).

#include <chrono>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <utility>

#include "log/log.hpp"

namespace clerk_sync::http {

class publish_health {
 public:
  using clock = std::chrono::steady_clock;
  static constexpr int trip_after = 3;
  static constexpr std::chrono::seconds hold{30};

  explicit publish_health(std::string topic) : topic_(std::move(topic)) {}

  // A publish acknowledged by Kafka.
  void acknowledged();
  // A publish not acknowledged: its outcome (deadline, not_acknowledged,
  // queue_full, ...) and librdkafka's reason, when there is one.
  void failed(std::string_view outcome, std::string_view error, clock::time_point now);
  [[nodiscard]] bool failing(clock::time_point now) const;
  // failing() can be true (no clock read: asked on every request).
  [[nodiscard]] bool may_be_failing() const { return in_row_ >= trip_after; }

 private:
  std::string topic_;
  std::int64_t in_row_ = 0;  // failures since the last acknowledgement
  std::optional<clock::time_point> last_failure_;
  bool said_ = false;  // the last line said publish_failing
  // Tripping and recovering in turn (a flapping cluster) makes one line of
  // each a minute at most, with `repeated`.
  log::rate_limiter limiter_;
};

}  // namespace clerk_sync::http
