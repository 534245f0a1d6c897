#include "http/publish_health.hpp"

#include <string>
#include <vector>

#include "log/log.hpp"

namespace clerk_sync::http {

void publish_health::acknowledged() {
  if (said_)
    limiter_.write("publish_recovered", log::level::info, "publish_recovered",
                   {{"topic", topic_}, {"failed", in_row_}, {"readyz", "ready"}});
  in_row_ = 0;
  last_failure_.reset();
  said_ = false;
}

void publish_health::failed(std::string_view outcome, std::string_view error, clock::time_point now) {
  // Tripping again after a hold that let the receiver back in is a new line.
  const bool was = failing(now);
  ++in_row_;
  last_failure_ = now;
  if (was || !failing(now)) return;
  const auto readyz =
      "publish_failing until a webhook is published, or none fails for " + std::to_string(hold.count()) + " s";
  std::vector<log::field> f{{"topic", topic_}, {"failed", in_row_}, {"last_outcome", outcome}};
  if (!error.empty()) f.emplace_back("error", error);
  f.emplace_back("readyz", readyz);
  limiter_.write("publish_failing", log::level::error, "publish_failing", f, now);
  said_ = true;
}

bool publish_health::failing(clock::time_point now) const {
  return may_be_failing() && last_failure_ && now - *last_failure_ < hold;
}

}  // namespace clerk_sync::http
