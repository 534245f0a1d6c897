#pragma once
// Generated Clerk webhook bodies for `ctl send --generate` and the tests: a
// deterministic mix of user.created/updated/deleted and session.created/
// ended, shaped like Clerk's own examples, with Go2Asia metadata (role,
// referral, balances). Pure: same seed, same events. Thread-safe.

#include <cstdint>
#include <string>
#include <vector>

namespace clerk_sync::ops {

struct generated_event {
  std::string type;     // "user.created", ...
  std::string user_id;  // the Kafka key the receiver will use
  std::string body;     // the JSON body as Clerk would POST it
};

// `count` events over about count/4 users; each user is created before any
// of its other events. Timestamps (ms) start at `start_ms`.
[[nodiscard]] std::vector<generated_event> generate_events(int count, std::uint64_t seed,
                                                           std::int64_t start_ms = 1'716'883'200'000);

// A Svix-like message id: "msg_" and 27 random letters and digits.
[[nodiscard]] std::string random_message_id();

}  // namespace clerk_sync::ops
