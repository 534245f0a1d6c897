#pragma once
// Helpers for driving the real clerk-sync-receiver binary in tests: a small
// HTTP/1.1 client with timeouts, signed Clerk events, the receiver as a
// child process, and reading back what landed in a topic.

#include <chrono>
#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "kafka/consumer.hpp"
#include "support/process.hpp"
#include "support/support.hpp"

namespace clerk_sync::test {

struct http_result {
  int status = 0;  // 0: no answer (connection refused, closed, timed out)
  std::map<std::string, std::string> headers;  // lower-case names
  std::string body;
};

// One request on a fresh connection; bounded by `timeout`.
[[nodiscard]] http_result send_http(int port, const std::string& method, const std::string& target,
                                    const std::map<std::string, std::string>& headers, const std::string& body,
                                    std::chrono::milliseconds timeout = std::chrono::seconds(20));

struct signed_event {
  std::string id;
  std::string timestamp;
  std::string body;
  std::map<std::string, std::string> headers;  // svix-id, svix-timestamp, svix-signature
};

// A fresh test secret (random key) as `whsec_…`.
[[nodiscard]] std::string random_secret();
// Signs `body` with `secret` at `timestamp` (now by default), under `id`
// (a unique svix id by default: a redelivery reuses its id).
[[nodiscard]] signed_event sign_event(const std::string& secret, std::string body,
                                      std::optional<std::int64_t> timestamp = std::nullopt,
                                      std::optional<std::string> id = std::nullopt);
// A small user.created body for `user`.
[[nodiscard]] std::string user_event_body(const std::string& user, const std::string& type = "user.created");

// "Name: value\r\n" lines of signature headers of a signature's shape that
// sign nothing (a fresh timestamp, a `v1,` entry of 44 characters): what
// anyone can send, and what has a body read before its signature is found
// wrong. A request without them is refused before its body is read.
[[nodiscard]] std::string forged_header_lines();

// POSTs a signed event to the receiver's webhook path.
[[nodiscard]] http_result post_event(int port, const signed_event& e,
                                     std::chrono::milliseconds timeout = std::chrono::seconds(20));

// The receiver as a child process on a free port, ready when it logged
// `listening`. `launcher` runs it through another command (e.g. prlimit).
class receiver {
 public:
  receiver(const std::string& brokers, const std::string& topic, const std::string& secret,
           const std::vector<std::string>& extra_args = {}, const std::map<std::string, std::string>& extra_env = {},
           const std::vector<std::string>& launcher = {});
  [[nodiscard]] int port() const { return port_; }
  [[nodiscard]] process& proc() { return *proc_; }
  // Waits until /readyz answers 200 (the producer reached the cluster).
  bool wait_ready(std::chrono::milliseconds timeout);

 private:
  int port_;
  std::unique_ptr<process> proc_;
};

// A raw TCP connection to 127.0.0.1, for holding sockets open, trickling
// bytes or sending whole requests by hand.
class raw_conn {
 public:
  explicit raw_conn(int port);
  ~raw_conn();
  raw_conn(const raw_conn&) = delete;
  raw_conn& operator=(const raw_conn&) = delete;
  [[nodiscard]] int fd() const { return fd_; }
  // Sends all of `s`; false when the peer is gone.
  bool send(std::string_view s);
  // True when the server closed the connection within `timeout`.
  bool closed_within(std::chrono::milliseconds timeout);
  // Reads until `needle` has arrived, the peer closes, or `timeout`; returns what arrived.
  std::string read_until(std::string_view needle, std::chrono::milliseconds timeout);

 private:
  int fd_;
};

// The status of the first HTTP response in `text` ("HTTP/1.1 413 ..."), or 0.
[[nodiscard]] int status_of(std::string_view text);

// Every record of `topic` (all partitions, from the beginning) until the
// high watermarks; for checks after the fact.
[[nodiscard]] std::vector<kafka::message> read_topic(const std::string& brokers, const std::string& topic,
                                                     std::chrono::milliseconds timeout = std::chrono::seconds(20));

// Parses {"status":"published","partition":P,"offset":O}.
[[nodiscard]] std::optional<std::pair<std::int32_t, std::int64_t>> published_at(const std::string& body);

}  // namespace clerk_sync::test
