// `sign` and `send`: Svix-style signed requests, for curl and for testing a
// receiver end to end. The secret comes from the environment only
// (CLERK_WEBHOOK_SECRET, or CLERK_WEBHOOK_SECRET_FILE), never from argv.
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <memory>
#include <optional>
#include <sstream>
#include <string>
#include <variant>

#include "commands.hpp"
#include "config/options.hpp"
#include "config/secrets.hpp"
#include "event/envelope.hpp"
#include "log/log.hpp"
#include "ops/events.hpp"
#include "ops/sender.hpp"
#include "verify/svix.hpp"

namespace clerk_sync::ctl {
namespace {

std::string read_input(const std::string& path) {
  if (path == "-") {
    std::string out;
    char buf[4096];
    std::size_t n = 0;
    while ((n = std::fread(buf, 1, sizeof buf, stdin)) > 0) out.append(buf, n);
    return out;
  }
  // A directory opens as a stream that reads nothing: an empty body,
  // signed or sent as if it were the file meant.
  std::error_code ec;
  if (std::filesystem::is_directory(path, ec)) throw config::usage_error(path + " is a directory, not a body file");
  std::ifstream in(path, std::ios::binary);
  if (!in) throw config::usage_error("cannot read " + path);
  std::ostringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

// The last configured secret: with several (a rotation), the new one, which
// the README's steps add on a second line; the old one goes at the end.
verify::key signing_key() {
  const char* env = std::getenv("CLERK_WEBHOOK_SECRET");
  const char* file = std::getenv("CLERK_WEBHOOK_SECRET_FILE");
  return config::load_secrets(env ? std::optional<std::string>(env) : std::nullopt, file ? file : "").back();
}

struct sign_args {
  std::string file = "-";
  std::string id;
  std::optional<std::int64_t> timestamp;  // now when not given
  std::string format = "headers";
};

int sign(const sign_args& a) {
  const auto key = signing_key();
  const auto body = read_input(a.file);
  const auto id = a.id.empty() ? ops::random_message_id() : a.id;
  const auto ts = a.timestamp ? *a.timestamp : ops::real_clock().now_seconds();
  const auto sig = verify::sign(key, id, ts, body);
  if (a.format == "curl")
    std::printf("-H 'svix-id: %s' -H 'svix-timestamp: %lld' -H 'svix-signature: %s'\n", id.c_str(),
                static_cast<long long>(ts), sig.c_str());
  else
    std::printf("svix-id: %s\nsvix-timestamp: %lld\nsvix-signature: %s\n", id.c_str(), static_cast<long long>(ts),
                sig.c_str());
  return exit_ok;
}

struct send_args {
  std::string url = "http://127.0.0.1:8080/webhooks/clerk";
  std::vector<std::string> files;
  int generate = 0;
  std::uint64_t seed = 1;
  std::string schedule = "1s,5s,30s";
  int timeout_ms = 15'000;
};

// One progress line: rewritten in place on a terminal, every 10% otherwise.
class progress {
 public:
  explicit progress(std::size_t total) : total_(total), tty_(::isatty(2) == 1) {}
  void update(std::size_t done, std::size_t ok, std::size_t failed, std::size_t ignored, std::size_t retries) {
    const std::size_t step = total_ >= 10 ? total_ / 10 : 1;
    if (tty_) {
      std::fprintf(stderr, "\rsent %zu/%zu ok=%zu failed=%zu ignored=%zu retries=%zu", done, total_, ok, failed,
                   ignored, retries);
      if (done == total_) std::fprintf(stderr, "\n");
    } else if (done % step == 0 || done == total_) {
      log::info("send progress", {{"sent", done}, {"total", total_}, {"ok", ok}, {"failed", failed},
                                  {"ignored", ignored}, {"retries", retries}});
    }
  }

 private:
  std::size_t total_;
  bool tty_;
};

// Events in a row refused, after their retries, with one status that says the
// set-up is wrong (ops::setup_refusal) before a run stops: with a wrong
// secret or URL every event left would fail the same way.
constexpr int refusals_before_stop = 3;

// The type a body claims, for the line about an ignored event; empty when
// the body has none.
std::string type_of(std::string_view body) {
  const auto env = event::read_envelope(body);
  const auto* e = std::get_if<event::envelope>(&env);
  return e ? e->type : std::string();
}

int send(const send_args& a) {
  ops::send_options opts;
  const auto url = ops::parse_http_url(a.url);
  if (!url) {
    // The URL may come from the environment file, user-info and all: a
    // password in it is never repeated.
    const auto start = a.url.find("://") == std::string::npos ? 0 : a.url.find("://") + 3;
    const bool user_info = a.url.substr(start, a.url.find('/', start) - start).find('@') != std::string::npos;
    throw config::usage_error(std::string("--url (CLERK_SYNC_SEND_URL): ") +
                              (user_info ? "user-info (user:password@) is not supported, the sender sends no "
                                           "credentials: "
                                         : "") +
                              "expected http://host[:port]/path, got " + ops::redact_url(a.url));
  }
  opts.url = *url;
  const auto schedule = ops::parse_schedule(a.schedule);
  if (!schedule) throw config::usage_error("--retry-schedule: expected e.g. 1s,5s,30s, got " + a.schedule);
  opts.schedule = *schedule;
  opts.request_timeout = std::chrono::milliseconds(a.timeout_ms);
  opts.key = signing_key();
  if (a.files.empty() == (a.generate == 0)) throw config::usage_error("give event files or --generate N (not both)");

  std::vector<std::string> bodies;
  for (const auto& f : a.files) {
    bodies.push_back(read_input(f));
    // No event can be empty: the receiver would answer 400 to each of the
    // retries (an empty stdin, a file not yet written).
    if (bodies.back().empty())
      throw config::usage_error((f == "-" ? std::string("stdin") : f) + " is empty: no event to send");
  }
  for (auto& e : ops::generate_events(a.generate, a.seed)) bodies.push_back(std::move(e.body));

  progress bar(bodies.size());
  std::size_t ok = 0, failed = 0, ignored = 0, retries = 0;
  const auto clock = ops::real_clock();
  ops::refusal_streak streak(refusals_before_stop);
  for (std::size_t i = 0; i < bodies.size(); ++i) {
    const auto r = ops::send_one(opts, bodies[i], {}, clock, [&](const ops::send_result& attempt) {
      // The receiver's answer says which of a status's causes it was (a 413
      // of the body limit or of the topic's, a 503's outcome).
      log::warn("send attempt failed", {{"svix_id", attempt.svix_id}, {"attempt", attempt.attempts},
                                        {"status", attempt.last.status}, {"error", attempt.last.error},
                                        {"answer", std::string_view(attempt.last.body).substr(0, 300)},
                                        {"meaning", ops::explain_status(attempt.last.status)}});
    });
    retries += static_cast<std::size_t>(r.attempts - 1);
    if (r.ignored()) {
      // A 200 that is not a delivery: an operator's test event with a typo'd
      // type must not look delivered.
      ++ignored;
      const auto type = type_of(bodies[i]);
      const auto reason = ops::explain_ignored();
      log::error("send ignored", {{"svix_id", r.svix_id}, {"type", type}, {"reason", reason}});
    } else if (r.published()) {
      ++ok;
    } else if (r.ok()) {
      // A 2xx that is no receiver's: --url reached another server (a
      // default site, a proxy's catch-all), and every event would get the same.
      log::error("send stopped", {{"sent", i + 1}, {"total", bodies.size()}, {"ok", ok}, {"failed", failed},
                                  {"ignored", ignored}, {"svix_id", r.svix_id}, {"status", r.last.status},
                                  {"answer", std::string_view(r.last.body).substr(0, 300)},
                                  {"reason", "a 2xx that is not a clerk-sync receiver's answer ({\"status\":\"published\","
                                             "...}): nothing is known to be published; is --url the receiver's?"}});
      return exit_failed;
    } else {
      ++failed;
      log::error("send gave up", {{"svix_id", r.svix_id}, {"attempts", r.attempts}, {"status", r.last.status},
                                  {"answer", std::string_view(r.last.body).substr(0, 300)},
                                  {"meaning", ops::explain_status(r.last.status)}});
    }
    bar.update(i + 1, ok, failed, ignored, retries);
    if (streak.add(r)) {
      log::error("send stopped", {{"sent", i + 1}, {"total", bodies.size()}, {"ok", ok}, {"failed", failed},
                                  {"ignored", ignored}, {"status", streak.status()}, {"in_a_row", streak.count()},
                                  {"reason", streak.status() == 0 ? std::string_view("connection refused: nothing listens at --url")
                                                                  : ops::explain_status(streak.status())}});
      return exit_failed;
    }
  }
  return failed == 0 && ignored == 0 ? exit_ok : exit_failed;
}

}  // namespace

void add_http_commands(CLI::App& app, runner& run) {
  auto* sign_cmd = app.add_subcommand(
      "sign", "Print the three Svix headers for a body (secret from CLERK_WEBHOOK_SECRET or _FILE)");
  auto s = std::make_shared<sign_args>();
  sign_cmd->add_option("file", s->file, "Body file; - for stdin")->capture_default_str();
  sign_cmd->add_option("--id", s->id, "svix-id (default: a fresh msg_ id)");
  // 0 or less once meant "now" in silence: a typo signed the wrong time.
  sign_cmd->add_option("--timestamp", s->timestamp, "svix-timestamp in seconds (default: now)")
      ->check(CLI::Range(std::int64_t{1}, std::int64_t{253'402'300'799}));  // to the end of year 9999
  sign_cmd->add_option("--format", s->format, "headers (one a line) or curl (-H arguments)")
      ->check(CLI::IsMember({"headers", "curl"}))
      ->capture_default_str();
  sign_cmd->callback([s, &run] { run = [s] { return sign(*s); }; });

  auto* send_cmd = app.add_subcommand(
      "send",
      "Sign and POST event files or generated events to a receiver, retrying non-2xx answers like Svix "
      "(same svix-id, fresh signature); each failure says what its status means, and 3 events in a row "
      "refused with the same 401, 403, 404 or 405, or a refused connection (a wrong secret, clock or URL) stop the "
      "run (exit 1); an event "
      "the receiver ignored (a type it does not publish) counts as ignored, not ok, and the run exits 1");
  auto a = std::make_shared<send_args>();
  send_cmd->add_option("files", a->files, "JSON body files (each one event); - for stdin");
  send_cmd->add_option("--url", a->url, "Receiver endpoint (http://)")->envname("CLERK_SYNC_SEND_URL")->capture_default_str();
  send_cmd->add_option("--generate", a->generate, "Send N generated user and session events instead of files")
      ->check(CLI::Range(0, 10'000'000));
  send_cmd->add_option("--seed", a->seed, "Seed of the generated events")->capture_default_str();
  send_cmd->add_option("--retry-schedule", a->schedule,
                       "Delays before each retry (Svix uses 5s,5m,30m,2h,5h,10h,10h)")
      ->capture_default_str();
  send_cmd->add_option("--timeout-ms", a->timeout_ms, "Per-request timeout")
      ->check(CLI::Range(100, 600'000))
      ->capture_default_str();
  send_cmd->callback([a, &run] { run = [a] { return send(*a); }; });
}

}  // namespace clerk_sync::ctl
