#include "support/process.hpp"

#include <doctest/doctest.h>
#include <signal.h>

using namespace std::chrono_literals;
using clerk_sync::test::process;

TEST_CASE("process: exit status, captured output and environment reach the test") {
  const auto r = clerk_sync::test::run("/bin/sh", {"-c", "echo out; echo \"err $X\" >&2; exit 3"}, {{"X", "set"}});
  CHECK(r.status == 3);
  CHECK(r.out == "out\n");
  CHECK(r.err == "err set\n");
}

TEST_CASE("process: a killed child reports 128+signal and logs can be awaited") {
  process p("/bin/sh", {"-c", "echo ready >&2; sleep 30"});
  REQUIRE(p.wait_for_log("ready", 5s));
  p.signal(SIGKILL);
  CHECK(p.wait(5s) == 128 + SIGKILL);
}
