#pragma once
// Deterministic generator of realistic Clerk event streams for the kill test
// and the consumer benchmark: user.created/updated/deleted and session.*
// bodies with increasing updated_at per user, plus duplicates (same svix-id
// delivered twice) and out-of-order (older update after a newer one).
// Pure; records come out in publish order (per-user order kept).

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

namespace clerk_sync::test {

struct generated_event {
  std::string key;      // the Clerk user id, as the receiver sets it
  std::string svix_id;
  std::string type;
  std::string body;
};

struct generator_options {
  int users = 200;
  long events = 10'000;  // approximate total (at most one more), duplicates included
  std::uint64_t seed = 42;
};

[[nodiscard]] std::vector<generated_event> generate_events(const generator_options& opts);

// The same stream, handed to `sink` one event at a time (for streams too
// large to hold: scripts/bench-scale).
void generate_events(const generator_options& opts, const std::function<void(const generated_event&)>& sink);

}  // namespace clerk_sync::test
