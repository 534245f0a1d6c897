#include "config/options.hpp"

#include <doctest/doctest.h>

#include <fcntl.h>
#include <unistd.h>

#include <cstdio>
#include <fstream>
#include <vector>

#include "support/support.hpp"

namespace config = clerk_sync::config;

namespace {

std::optional<int> parse_args(CLI::App& app, std::vector<std::string> args) {
  std::vector<char*> argv;
  for (auto& a : args) argv.push_back(a.data());
  return config::parse(app, static_cast<int>(argv.size()), argv.data());
}

}  // namespace

TEST_CASE("kafka options: flags, repeated properties and a properties file") {
  clerk_sync::test::temp_dir dir;
  const auto file = dir / "kafka.properties";
  std::ofstream(file) << "# managed cluster\nsecurity.protocol = SASL_SSL\n\nsasl.mechanism=PLAIN\n";

  CLI::App app("t", "t");
  clerk_sync::kafka::client_config cfg;
  config::add_kafka_options(app, cfg);
  REQUIRE_FALSE(parse_args(app, {"t", "--brokers", "10.0.0.1:9092", "--kafka-property", "linger.ms=5",
                                 "--kafka-properties-file", file.string()})
                    .has_value());
  CHECK(cfg.brokers == "10.0.0.1:9092");
  const std::vector<std::pair<std::string, std::string>> want{
      {"linger.ms", "5"}, {"security.protocol", "SASL_SSL"}, {"sasl.mechanism", "PLAIN"}};
  CHECK(cfg.properties == want);
}

TEST_CASE("a malformed property or an unknown flag is a usage error (exit 2)") {
  CLI::App app("t", "t");
  clerk_sync::kafka::client_config cfg;
  config::log_options log;
  config::add_kafka_options(app, cfg);
  config::add_log_options(app, log);
  CHECK(parse_args(app, {"t", "--kafka-property", "novalue"}) == config::exit_usage);
  // Secrets belong in the properties file: any user can read a process's arguments.
  for (const char* secret : {"sasl.password=hunter2", "SSL.Key.Password=x", "ssl.keystore.password=x",
                             "sasl.oauthbearer.client.secret=x", "ssl.key.pem=x", "sasl.oauthbearer.config=x"}) {
    CLI::App a("t", "t");
    clerk_sync::kafka::client_config c;
    config::add_kafka_options(a, c);
    CHECK_MESSAGE(parse_args(a, {"t", "--kafka-property", secret}) == config::exit_usage, secret);
    CHECK(c.properties.empty());
  }

  CLI::App app2("t", "t");
  config::add_log_options(app2, log);
  CHECK(parse_args(app2, {"t", "--log-format", "xml"}) == config::exit_usage);
  CHECK(parse_args(app2, {"t", "--no-such-flag"}) == config::exit_usage);
}

// What this process writes to stderr while `parse` runs, and its exit code.
template <class Parse>
auto stderr_of(Parse&& parse) {
  const clerk_sync::test::capture_stderr err;
  const auto code = parse();
  return std::pair(code, err.text());
}

TEST_CASE("stray arguments are refused without being repeated (one may be a secret)") {
  CLI::App app("t", "t");
  clerk_sync::kafka::client_config cfg;
  config::add_kafka_options(app, cfg);
  const auto [code, err] = stderr_of([&] { return parse_args(app, {"t", "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"}); });
  CHECK(code == config::exit_usage);
  CHECK(err.find("unexpected arguments") != std::string::npos);
  CHECK(err.find("whsec_") == std::string::npos);
}

TEST_CASE("a properties file that cannot be read is a usage error") {
  CLI::App app("t", "t");
  clerk_sync::kafka::client_config cfg;
  config::add_kafka_options(app, cfg);
  CHECK(parse_args(app, {"t", "--kafka-properties-file", "/nonexistent/kafka.properties"}) == config::exit_usage);
}

TEST_CASE("a properties line with Java's other separators is refused without being repeated (it may hold a secret)") {
  // `sasl.password: a=b` split at its '=' made the key "sasl.password: a",
  // and librdkafka's "no such property" repeated the password's start.
  clerk_sync::test::temp_dir dir;
  for (const char* line : {"sasl.password: hunter2=x", "sasl.password hunter2=", "sasl.pass word=hunter2"}) {
    CAPTURE(line);
    const auto file = dir / "kafka.properties";
    std::ofstream(file) << "security.protocol=SASL_PLAINTEXT\n" << line << "\n";
    CLI::App app("t", "t");
    clerk_sync::kafka::client_config cfg;
    config::add_kafka_options(app, cfg);
    const auto [code, err] = stderr_of([&] { return parse_args(app, {"t", "--kafka-properties-file", file.string()}); });
    CHECK(code == config::exit_usage);
    CHECK(err.find("kafka.properties:2: expected key=value") != std::string::npos);
    CHECK(err.find("hunter2") == std::string::npos);
  }
}

TEST_CASE("a bootstrap.servers property names the brokers, checked as --brokers is, and the last named wins") {
  clerk_sync::test::temp_dir dir;
  const auto managed = dir / "managed.properties";
  std::ofstream(managed) << "security.protocol=SASL_SSL\nbootstrap.servers=kafka-1.example:9096,kafka-2.example:9096\n";
  struct outcome {
    std::optional<int> code;
    clerk_sync::kafka::client_config cfg;
  };
  const auto parse = [](std::vector<std::string> args) {
    CLI::App app("t", "t");
    outcome o;
    config::add_kafka_options(app, o.cfg);
    args.insert(args.begin(), "t");
    o.code = parse_args(app, std::move(args));
    return o;
  };

  // A managed cluster's file alone: its brokers, and the property is not
  // passed on to win over them later.
  auto o = parse({"--kafka-properties-file", managed.string()});
  REQUIRE_FALSE(o.code.has_value());
  CHECK(o.cfg.brokers == "kafka-1.example:9096,kafka-2.example:9096");
  CHECK(o.cfg.properties == std::vector<std::pair<std::string, std::string>>{{"security.protocol", "SASL_SSL"}});
  o = parse({"--kafka-property", "metadata.broker.list=kafka-3:9092"});
  REQUIRE_FALSE(o.code.has_value());
  CHECK(o.cfg.brokers == "kafka-3:9092");
  // Named twice: the last, as librdkafka applies them (the warning is
  // apply()'s, tests/e2e/settings_test.cpp).
  o = parse({"--brokers", "10.0.0.1:9092", "--kafka-properties-file", managed.string()});
  REQUIRE_FALSE(o.code.has_value());
  CHECK(o.cfg.brokers == "kafka-1.example:9096,kafka-2.example:9096");
  o = parse({"--kafka-property", "bootstrap.servers=kafka-3:9092", "--kafka-properties-file", managed.string()});
  REQUIRE_FALSE(o.code.has_value());
  CHECK(o.cfg.brokers == "kafka-1.example:9096,kafka-2.example:9096");
  // Checked as --brokers is.
  CHECK(parse({"--kafka-property", "bootstrap.servers=localhost:abc"}).code == config::exit_usage);
}

TEST_CASE("a broker list with an empty entry, no host or a port that is not 1 to 65535 is a usage error") {
  const auto parses = [](const std::string& brokers) {
    CLI::App app("t", "t");
    clerk_sync::kafka::client_config cfg;
    config::add_kafka_options(app, cfg);
    return !parse_args(app, {"t", "--brokers", brokers}).has_value();
  };
  // librdkafka's forms: a port or its default 9092, an IPv6 address bare
  // or in brackets, a protocol prefix (and a URL's path), spaces after the
  // commas, empty entries (librdkafka skips them: a list that worked before
  // this check must still start).
  for (const char* good :
       {"10.0.0.1:9092", "kafka-1", "kafka-1:9092,kafka-2:9093", "kafka-1:9092, kafka-2:9093", "[::1]:9092", "[::1]",
        "fd00::a", "2001:db8::ffff", "fe80::1%eth0", "SASL_SSL://kafka.example:9096", "SSL://kafka:9093/",
        "kafka-1:1", "kafka-1:65535", "kafka-1:9092,", "kafka-1:9092,,kafka-2:9092", ",kafka-1:9092"})
    CHECK_MESSAGE(parses(good), good);
  // librdkafka reads a port it cannot parse as 0 and retries for ever; a
  // space inside an entry makes one host name of two.
  for (const char* bad : {"", " ", ",", "localhost:abc", "localhost:", "localhost:0", "localhost:65536",
                          "localhost:-1", "localhost:9092x", ":9092", "[::1]:", "PLAINTEXT://", "://kafka:9092",
                          "kafka-1:abc kafka-2:9092", "kafka-1 kafka-2:9092"})
    CHECK_FALSE_MESSAGE(parses(bad), '"' << bad << '"');
}
