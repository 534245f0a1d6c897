// auth::projection_watch over sequences of readings of the two projections'
// stored offsets, one a minute as auth takes them by default.
#include "auth/projection_watch.hpp"

#include <doctest/doctest.h>

#include <chrono>
#include <string>
#include <vector>

namespace auth = clerk_sync::auth;
using namespace std::chrono_literals;

namespace {

// One partition of one topic each, unless said otherwise.
auth::positions at(std::optional<std::int64_t> users, std::optional<std::int64_t> sessions,
                   std::optional<std::int64_t> balances = std::nullopt) {
  auth::positions p;
  if (users) p["users"][{"clerk.events", 0}] = *users;
  if (sessions) p["sessions"][{"clerk.events", 0}] = *sessions;
  if (balances) p["balances"][{"clerk.events", 0}] = *balances;
  return p;
}

// The lines of the readings, a minute apart, as "msg projection[ reason]".
std::vector<std::string> watch(const std::vector<auth::positions>& readings) {
  auth::projection_watch w(120s);
  std::vector<std::string> out;
  auto t = auth::projection_watch::clock::time_point{};
  for (const auto& r : readings) {
    for (const auto& l : w.observe(r, t)) out.push_back(l.msg + " " + l.projection + (l.reason.empty() ? "" : " " + l.reason));
    t += 60s;
  }
  return out;
}

using lines = std::vector<std::string>;
constexpr std::optional<std::int64_t> none;

}  // namespace

TEST_CASE("auth: a projection that never wrote the file while the other does is said once, then its end") {
  CHECK(watch({at(none, none), at(none, none)}).empty());
  CHECK(watch({at(5, none)}).empty());  // one reading: consumers start apart
  CHECK(watch({at(5, none), at(9, none), at(9, none), at(9, 9)}) ==
        lines{"projection_missing sessions", "projection_written sessions"});
  CHECK(watch({at(none, 5), at(none, 5)}) == lines{"projection_missing users"});
}

TEST_CASE("auth: a projection that stops while the other goes on is said stalled, however bursty the topic") {
  // Sessions stops at 100; users gets one event, then the topic is quiet:
  // two readings (and 120 s) without a move, the other moved meanwhile.
  CHECK(watch({at(100, 100), at(101, 100), at(101, 100), at(101, 100), at(101, 100)}) ==
        lines{"projection_stalled sessions"});
  // It moves again: over.
  CHECK(watch({at(100, 100), at(150, 100), at(200, 100), at(200, 100), at(260, 100), at(260, 180)}) ==
        lines{"projection_stalled sessions", "projection_stall_over sessions moved"});
  // The users one, with what is said.
  auth::projection_watch w(120s);
  auto t = auth::projection_watch::clock::time_point{};
  (void)w.observe(at(100, 100), t);
  (void)w.observe(at(100, 150), t += 60s);
  const auto said = w.observe(at(100, 170), t += 60s);
  REQUIRE(said.size() == 1);
  CHECK(said[0].msg == "projection_stalled");
  CHECK(said[0].projection == "users");
  CHECK(said[0].behind == 70);
  CHECK(said[0].outcome.find("stored nothing for 120 s") != std::string::npos);
  CHECK(said[0].outcome.find("users banned or deleted since are let in") != std::string::npos);
}

TEST_CASE("auth: a stall ends with its reason when the other goes back or its offsets are gone") {
  // Users swapped in from an older rebuild, below sessions: not behind.
  CHECK(watch({at(100, 100), at(150, 100), at(200, 100), at(90, 100)}) ==
        lines{"projection_stalled sessions", "projection_stall_over sessions not_behind"});
  // Sessions' offsets deleted: over, then missing once seen twice.
  CHECK(watch({at(100, 100), at(150, 100), at(200, 100), at(250, none), at(300, none)}) ==
        lines{"projection_stalled sessions", "projection_stall_over sessions not_written", "projection_missing sessions"});
}

TEST_CASE("auth: no stall for a quiet topic, a projection catching up, a short pause, or another topic") {
  CHECK(watch({at(100, 100), at(100, 100), at(100, 100), at(100, 100)}).empty());  // both still
  CHECK(watch({at(100, 10), at(150, 60), at(200, 110), at(250, 160)}).empty());    // behind, but moving
  CHECK(watch({at(100, 100), at(150, 100), at(200, 190), at(250, 240)}).empty());  // one reading without a move
  CHECK(watch({at(100, 300), at(150, 300), at(200, 300)}).empty());                // still, but ahead
  // With checks 1 s apart, two readings are not enough: 30 s are needed.
  auth::projection_watch w(30s);
  auto t = auth::projection_watch::clock::time_point{};
  std::vector<std::string> said;
  for (int i = 0; i < 40; ++i, t += 1s)
    for (const auto& l : w.observe(at(100 + i, 100), t)) said.push_back(l.msg + " " + std::to_string(i));
  CHECK(said == lines{"projection_stalled 30"});
  // Sessions also reads an old topic users never had: it is not behind there.
  auth::positions a = at(100, 100), b = at(150, 100), c = at(200, 100);
  for (auto* p : {&a, &b, &c}) (*p)["sessions"][{"clerk.events.old", 0}] = 5'000;
  CHECK(watch({a, b, c}) == lines{"projection_stalled sessions"});
}

TEST_CASE("auth: users and sessions stopping together, or never written, are said while another projection goes on") {
  // One process ran both (--projection users,sessions) and stopped; the
  // balances consumer goes on. Measured against each other, neither was
  // ever behind: nothing was said.
  CHECK(watch({at(100, 100, 100), at(100, 100, 150), at(100, 100, 200), at(100, 100, 260)}) ==
        lines{"projection_stalled users", "projection_stalled sessions"});
  // They start again: over, each.
  CHECK(watch({at(100, 100, 100), at(100, 100, 150), at(100, 100, 200), at(200, 200, 200)}) ==
        lines{"projection_stalled users", "projection_stalled sessions", "projection_stall_over users moved",
              "projection_stall_over sessions moved"});
  // What is said names the one that went on.
  auth::projection_watch w(120s);
  auto t = auth::projection_watch::clock::time_point{};
  (void)w.observe(at(100, 100, 100), t);
  (void)w.observe(at(100, 100, 130), t += 60s);
  const auto said = w.observe(at(100, 100, 170), t += 60s);
  REQUIRE(said.size() == 2);
  CHECK(said[0].behind == 70);
  CHECK(said[1].outcome.find("while the balances one went on") != std::string::npos);
  // Neither ever written, while balances writes: both missing.
  CHECK(watch({at(none, none, 5), at(none, none, 9)}) ==
        lines{"projection_missing users", "projection_missing sessions"});
}
