// The settings every binary that talks to Kafka shares, as an operator (or a
// unit's environment file) gives them: a broker list the client library
// would read as port 0, or an empty KAFKA_BROKERS or CLERK_SYNC_TOPIC that
// the default would silently replace, stop start-up with exit 2 and one line.
// No broker is needed: each must stop before it dials one.
#include <doctest/doctest.h>

#include <algorithm>
#include <csignal>
#include <fstream>
#include <map>
#include <string>
#include <vector>

#include "support/process.hpp"
#include "support/support.hpp"

using namespace clerk_sync;
using namespace std::chrono_literals;

namespace {

struct binary {
  std::string path;  // under the build folder
  std::vector<std::string> args;
};

// The receiver, a consumer and the operator's tool, each with what it needs
// to get past its other settings.
std::vector<binary> kafka_binaries(const test::temp_dir& dir) {
  return {{"app/receiver/clerk-sync-receiver", {"--listen", "127.0.0.1:" + std::to_string(test::free_port())}},
          {"app/consumer/clerk-sync-consumer", {"--projection", "users", "--db", (dir / "c.db").string()}},
          {"app/ctl/clerk-sync-ctl", {"topic", "ensure", "--timeout-ms", "2000"}}};
}

// Nothing from the developer's shell; an empty value removes the variable.
const std::map<std::string, std::string> clean_env = {
    {"CLERK_WEBHOOK_SECRET", "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"},  // svix's published test key
    {"CLERK_WEBHOOK_SECRET_FILE", ""},
    {"CLERK_SYNC_KAFKA_PROPERTIES_FILE", ""},
    {"CLERK_SYNC_PROJECTIONS", ""},
    {"CLERK_SYNC_DB", ""},
    {"CLERK_SYNC_TOPIC", ""},
    {"KAFKA_BROKERS", ""},
    {"NOTIFY_SOCKET", ""}};

// Runs `b` with `extra_args`, and `env_line` (NAME=value, the value possibly
// empty) set through env(1): the harness drops variables with empty values.
test::run_result run(const binary& b, const std::vector<std::string>& extra_args, const std::string& env_line = {}) {
  std::vector<std::string> args;
  if (!env_line.empty()) args.push_back(env_line);
  args.push_back(test::binary_path(b.path).string());
  args.insert(args.end(), b.args.begin(), b.args.end());
  args.insert(args.end(), extra_args.begin(), extra_args.end());
  return test::run("/usr/bin/env", args, clean_env, 20s);
}

void check_one_line(const test::run_result& r, const std::string& needle) {
  CHECK(r.status == 2);
  CHECK(std::count(r.err.begin(), r.err.end(), '\n') == 1);
  CHECK(r.err.find("msg=bad_setting") != std::string::npos);
  CHECK(r.err.find(needle) != std::string::npos);
}

}  // namespace

TEST_CASE("a broker list entry whose port is not 1 to 65535, or two missing their comma, stops every Kafka binary: exit 2, one line naming it") {
  test::temp_dir dir;
  for (const auto& b : kafka_binaries(dir)) {
    {
      const auto r = run(b, {"--brokers", "localhost:abc"});
      INFO(b.path << ": " << r.err);
      check_one_line(r, "localhost:abc");
    }
    {
      const auto r = run(b, {}, "KAFKA_BROKERS=127.0.0.1:9092,localhost:65536");
      INFO(b.path << ": " << r.err);
      check_one_line(r, "localhost:65536");
    }
    {
      const auto r = run(b, {"--brokers", "127.0.0.1:9092 127.0.0.1:9093"});
      INFO(b.path << ": " << r.err);
      check_one_line(r, "separate brokers with commas");
    }
  }
}

TEST_CASE("an empty KAFKA_BROKERS or CLERK_SYNC_TOPIC stops every Kafka binary instead of meaning the default") {
  test::temp_dir dir;
  for (const auto& b : kafka_binaries(dir)) {
    for (const std::string name : {"KAFKA_BROKERS", "CLERK_SYNC_TOPIC"}) {
      const auto r = run(b, {}, name + "=");
      INFO(b.path << " " << name << ": " << r.err);
      check_one_line(r, name + " is set but empty");
    }
    // A flag given wins over the empty variable, as over any variable: the
    // line is about the flag's value.
    const auto r = run(b, {"--brokers", "localhost:abc"}, "KAFKA_BROKERS=");
    INFO(b.path << ": " << r.err);
    check_one_line(r, "localhost:abc");
    CHECK(r.err.find("KAFKA_BROKERS is set but empty") == std::string::npos);
  }
}

TEST_CASE("a bad setting is said in the log format asked for, whichever setting is the bad one") {
  // The format was applied only once every setting had parsed: a bad one
  // was said in logfmt to a journal read as JSON.
  test::temp_dir dir;
  for (const auto& b : kafka_binaries(dir)) {
    for (const auto& r : {run(b, {"--brokers", "localhost:abc", "--log-format", "json"}),
                          run(b, {"--log-format=json"}, "KAFKA_BROKERS="),
                          run(b, {"--brokers", "localhost:abc"}, "CLERK_SYNC_LOG_FORMAT=json")}) {
      INFO(b.path << ": " << r.err);
      CHECK(r.status == 2);
      CHECK(std::count(r.err.begin(), r.err.end(), '\n') == 1);
      CHECK(r.err.find(R"("level":"error","msg":"bad_setting")") != std::string::npos);
    }
  }
}

TEST_CASE("a properties file that names the brokers beside KAFKA_BROKERS wins, with a warning naming both, in the log's format") {
  // The unit's environment file sets KAFKA_BROKERS; a managed cluster's
  // client.properties dropped in as the properties file names its own.
  // The file wins, as it did (an install set up that way goes on after an
  // upgrade), but no longer in silence; and its value is checked.
  test::temp_dir dir;
  const auto file = dir / "kafka.properties";
  std::ofstream(file) << "bootstrap.servers=127.0.0.1:9093\n";
  const auto bad = dir / "bad.properties";
  std::ofstream(bad) << "bootstrap.servers=127.0.0.1:abc\n";
  for (const auto& b : kafka_binaries(dir)) {
    {
      auto args = b.args;
      args.insert(args.end(), {"--kafka-properties-file", file.string(), "--log-format", "json"});
      auto env = clean_env;
      env["KAFKA_BROKERS"] = "127.0.0.1:9092";
      test::process p(test::binary_path(b.path), args, env);
      const bool warned = p.wait_for_log(R"("level":"warn","msg":"brokers_named_twice")", 15s);
      // The clients dial the file's brokers (nothing listens there).
      const bool dialled = p.wait_for_log("127.0.0.1:9093", 15s);
      p.signal(SIGTERM);
      (void)p.wait(20s);
      const auto err = p.stderr_text();
      INFO(b.path << ": " << err);
      CHECK(warned);
      CHECK(err.find("kafka.properties:1: bootstrap.servers") != std::string::npos);
      CHECK(err.find("wins over --brokers (KAFKA_BROKERS) (127.0.0.1:9092)") != std::string::npos);
      CHECK(dialled);
    }
    const auto r = run(b, {"--kafka-properties-file", bad.string()});
    INFO(b.path << ": " << r.err);
    check_one_line(r, "bad.properties:1: bootstrap.servers: broker");
  }
}
