#pragma once
// `ctl send`: POST signed webhook bodies to a receiver the way Svix does —
// svix-id/-timestamp/-signature headers, the same id on every attempt, a
// fresh timestamp and signature each time, and a retry after a delay on any
// non-2xx answer or connection failure. Plain HTTP (a loopback receiver or
// the hop behind the TLS proxy). Blocking; one sender per thread.

#include <chrono>
#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace clerk_sync::ops {

struct http_url {
  std::string host;
  std::string port = "80";
  std::string target = "/";
};

// "http://host[:port][/path]" -> parts; nullopt for anything else (https
// included: put the sender on the receiver's side of the TLS proxy; and
// user-info, "user:password@", which the sender would not send).
[[nodiscard]] std::optional<http_url> parse_http_url(std::string_view url);

// `url` fit to print: user-info (anything between "://", or the start, and
// the last '@') shown as "***", since it may hold a password; the rest as
// given.
[[nodiscard]] std::string redact_url(std::string_view url);

// "1s,5s,30s,2m,500ms" -> delays before the 2nd, 3rd, ... attempt; nullopt
// on a malformed entry or one longer than a day. Svix's own schedule is 5s,5m,30m,2h,5h,10h,10h.
[[nodiscard]] std::optional<std::vector<std::chrono::milliseconds>> parse_schedule(std::string_view text);

struct http_answer {
  int status = 0;       // 0: no HTTP answer (connection refused, timeout)
  std::string error;    // why, when status is 0
  std::string body;
  bool connection_refused = false;  // status 0 because nothing listens at the address
};

struct send_options {
  http_url url;
  std::string key;  // raw HMAC key (verify::parse_secret)
  std::vector<std::chrono::milliseconds> schedule{std::chrono::seconds(1), std::chrono::seconds(5),
                                                   std::chrono::seconds(30)};
  std::chrono::milliseconds request_timeout{15'000};  // Svix's own limit
};

struct send_result {
  std::string svix_id;
  int attempts = 0;
  http_answer last;
  [[nodiscard]] bool ok() const { return last.status >= 200 && last.status < 300; }
  // A 2xx that published nothing: the receiver's answer to a type it does
  // not publish (a typo such as user_created, or organization.*).
  [[nodiscard]] bool ignored() const;
  // A 2xx whose body is the receiver's own for an event it published
  // ({"status":"published",...}): not an answer of some other server that
  // --url reached.
  [[nodiscard]] bool published() const;
};

// True for an answer that says the sender's set-up is wrong, the same for
// every event: 401 (secret or clock), 403 (access), 404 and 405 (URL or
// path). Not 400, 413, 415 or 422, which depend on the body sent, nor 408,
// 429, 5xx or no answer, which may pass later.
[[nodiscard]] bool setup_refusal(int status);

// Whether an answer is a refused connection: nothing listens at the URL
// (a wrong port), which, unlike a timeout, is no slow receiver.
[[nodiscard]] inline bool nothing_listens(const http_answer& a) { return a.status == 0 && a.connection_refused; }

// What `status` (0: no HTTP answer) means to the operator running the sender:
// the likely cause and what to check. Never empty; holds no secret.
[[nodiscard]] std::string_view explain_status(int status);

// Why an ignored() event reached no one, for the operator: never empty.
[[nodiscard]] std::string_view explain_ignored();

// Counts events in a row that failed with the same setup_refusal() status.
// Such a run is misconfigured (secret, clock, URL) and every event left
// would fail the same way: add() says when to stop.
class refusal_streak {
 public:
  explicit refusal_streak(int limit) : limit_(limit) {}
  // True once `limit` events in a row failed with one setup_refusal()
  // status, or with a refused connection (status 0).
  bool add(const send_result& r);
  [[nodiscard]] int status() const { return status_; }
  [[nodiscard]] int count() const { return count_; }

 private:
  int limit_;
  int status_ = 0;
  int count_ = 0;
};

// Clock and sleep are parameters so that tests need not wait.
struct send_clock {
  std::function<std::int64_t()> now_seconds;
  std::function<void(std::chrono::milliseconds)> sleep;
};
[[nodiscard]] send_clock real_clock();

// Delivers one body (with `svix_id`, or a fresh msg_ id when empty) with
// retries per the schedule on any non-2xx answer, as Svix does; `on_attempt`
// sees every non-2xx answer.
[[nodiscard]] send_result send_one(const send_options& opts, std::string_view body, std::string svix_id,
                                   const send_clock& clock,
                                   const std::function<void(const send_result&)>& on_attempt = {});

// One HTTP POST; never throws.
[[nodiscard]] http_answer post(const http_url& url, std::string_view body,
                               const std::vector<std::pair<std::string, std::string>>& headers,
                               std::chrono::milliseconds timeout);

}  // namespace clerk_sync::ops
