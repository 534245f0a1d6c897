#pragma once
// Command-line flags with an environment variable behind each (CLI11), the
// options every clerk-sync executable shares, and the start-up contract: a
// bad or missing setting prints one clear line on stderr and exits 2.
// Secrets never travel in argv; they come from the environment or a file.

#include <CLI/CLI.hpp>

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <exception>
#include <initializer_list>
#include <optional>
#include <string>
#include <string_view>

#include "kafka/client.hpp"
#include "log/log.hpp"

namespace clerk_sync::config {

inline constexpr int exit_usage = 2;

// A setting that is present but wrong; main() prints it and exits 2.
struct usage_error : std::runtime_error {
  using std::runtime_error::runtime_error;
};

// The listening address is taken or not on this host yet, which may pass
// by itself: main() prints it (msg=listen_failed) and exits 1, so that
// systemd restarts the unit.
struct listen_error : std::runtime_error {
  using std::runtime_error::runtime_error;
};

struct log_options {
  std::string format = "logfmt";
  std::string level = "info";
};

// --brokers (KAFKA_BROKERS), --kafka-property k=v (repeatable; for SASL
// passwords prefer the file), --kafka-properties-file
// (CLERK_SYNC_KAFKA_PROPERTIES_FILE, Java-style `key=value` lines). A
// bootstrap.servers (or metadata.broker.list) property names the brokers
// too, checked as --brokers is; the last named wins, as librdkafka applies
// it, and each override is a brokers_named_twice warning from apply().
void add_kafka_options(CLI::App& app, kafka::client_config& cfg);
// --log-format logfmt|json (CLERK_SYNC_LOG_FORMAT), --log-level (CLERK_SYNC_LOG_LEVEL).
void add_log_options(CLI::App& app, log_options& opts);

// For an option holding web origins (a token's azp): trims each value, then
// requires scheme://host[:port] with http or https and nothing after it (no
// path, not even a trailing '/'), in lower case and without an empty or
// default port, as browsers send an origin: anything else can never equal
// a token's azp and would refuse every token meant for it. With
// `app_schemes`, also a browser extension's origin (chrome-extension,
// moz-extension, safari-web-extension: Clerk's extension SDK puts it in
// azp) or an app shell's (capacitor, ionic, tauri://localhost: the Origin
// its web view sends).
[[nodiscard]] CLI::Validator origin(bool app_schemes = false);

// For a Kafka broker list, librdkafka's bootstrap.servers, read as
// librdkafka 2.0.2 reads it: [proto://]host[:port][/path] entries separated
// by commas (empty ones skipped), an IPv6 address bare (on the default
// port) or in brackets. Refuses a list with no entry, an entry with no host
// or with a space inside (two brokers missing their comma), and a port
// that is not a number 1..65535, which librdkafka would read as port 0 and
// retry for ever; the message names the entry.
[[nodiscard]] CLI::Validator broker_list();

// A Kafka topic name as Kafka allows one: 1 to 249 of [A-Za-z0-9._-], not
// "." or "..". Another is refused by the broker on every request (or, over
// 512 bytes, by librdkafka before it), which would be said on every
// webhook or batch instead of once at start-up.
[[nodiscard]] CLI::Validator topic_name();

// A server's --path: a path alone (requests are routed by their path, the
// query cut off: with '?', '#' or a space it would match no request), not
// one of its probes' paths (which answer first). Throws usage_error.
void check_route_path(const std::string& path, std::initializer_list<std::string_view> probes);

// For a number of seconds between `min` and `max`: CLI::Range lets "nan"
// through (every comparison with NaN is false), and its conversion to
// milliseconds would be undefined.
[[nodiscard]] CLI::Validator seconds_between(double min, double max);

// Applies log options (throws usage_error for unknown values), then says
// the warnings parse() found, in that format.
void apply(const log_options& opts);

// Parses argv. Returns an exit status when the process should stop now
// (0 after --help, 2 after printing one line for a bad flag, or for
// KAFKA_BROKERS or CLERK_SYNC_TOPIC set but empty), nullopt to go on.
[[nodiscard]] std::optional<int> parse(CLI::App& app, int argc, char** argv);

// The one line that says why a program stops: in the log's format like
// every other line (DESIGN), error level, written at once: `msg` (e.g.
// bad_setting), `program`, `error` (never a value that may be a secret) and
// `exit_code`. Returns `exit_code`.
int report_exit(std::string_view program, std::string_view msg, std::string_view what, int exit_code);

// Runs `body` and turns usage_error / kafka::config_error into one line
// (msg=bad_setting) and exit 2, listen_error into msg=listen_failed and
// exit 1: the single place start-up errors are reported. Any other exception is one line too (msg=unexpected_error), and
// exit 1, rather than std::terminate's abort, which would lose the message
// and the buffered log lines before it.
// A Kafka client's destroy left running on its thread (the
// kafka_destroy_stuck line) ends the process with std::_Exit, so that no
// exit handler or static destructor runs under it (nor waits for it).
template <class F>
int run_main(const char* program, F&& body) {
  const int code = [&] {
    try {
      return body();
    } catch (const usage_error& e) {
      return report_exit(program, "bad_setting", e.what(), exit_usage);
    } catch (const kafka::config_error& e) {
      return report_exit(program, "bad_setting", e.what(), exit_usage);
    } catch (const listen_error& e) {
      return report_exit(program, "listen_failed", e.what(), 1);
    } catch (const std::exception& e) {
      return report_exit(program, "unexpected_error", e.what(), 1);
    }
  }();
  if (kafka::destroy_left_running()) {
    // No static destructor runs under _Exit: what the rate limiters hold
    // back (the librdkafka lines that say why) goes out first.
    log::rate_limiter::drain_all();
    (void)std::fflush(nullptr);
    std::_Exit(code);
  }
  return code;
}

// Where a daemon listens: a numeric IPv4 or IPv6 address and a port.
struct listen_address {
  std::string host;
  std::uint16_t port = 0;
};

// "127.0.0.1:8080" or "[::1]:8080"; throws usage_error.
[[nodiscard]] listen_address parse_listen(const std::string& text);

}  // namespace clerk_sync::config
