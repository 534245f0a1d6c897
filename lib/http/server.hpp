#pragma once
// The receiver's HTTP server: Beast over one io_context, a coroutine per
// connection. Every read and write has a timeout; body, header and
// connection limits apply. A request to publish is handed to `publish_fn`;
// its delivery report (arriving on any thread) is posted back to the
// connection's executor, and the answer is sent from there, or a 503 when
// the publish deadline passes first. All members run on the io_context's
// thread, except as noted.
//
// Timeouts: a silent connection is closed after `idle_timeout`; once a
// request's first byte arrives, its whole header must arrive within
// `read_timeout`, and its whole body within `read_timeout` after that. An
// answer given before the body was read (413, 431, 400, 401, 404, 405,
// 503) is followed by a lingering close: input is read and discarded for a
// bounded time and size, so that a client still sending reads the status.
// A body whose signature headers cannot verify it (classify_header) is not
// read. `Expect: 100-continue` is answered with 100 once the header is
// acceptable.

#include <boost/asio/io_context.hpp>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstddef>
#include <functional>
#include <list>
#include <memory>

#include "http/handler.hpp"
#include "http/options.hpp"
#include "kafka/producer.hpp"

namespace clerk_sync::http {

struct server_limits {
  std::size_t body_limit = 1024 * 1024;
  std::size_t header_limit = 16 * 1024;
  std::chrono::milliseconds read_timeout{10'000};
  std::chrono::milliseconds idle_timeout{60'000};
  std::chrono::milliseconds publish_deadline{10'000};
  std::size_t max_connections = 4096;
  // Bytes of request bodies buffered across all connections; a request whose
  // body would not fit gets 503 with Retry-After before any of it is read.
  std::size_t body_memory_budget = 64 * 1024 * 1024;
};

// The largest declared body that may use the whole body memory budget;
// larger and chunked ones share half of it, and the other half holds one
// such body for every connection the cap allows. 8 KiB with the defaults
// (Clerk's example events are 2-3 KiB; a user with many addresses and
// metadata can pass 8 KiB: raise the budget or lower the cap), 64 KiB at most.
[[nodiscard]] inline std::size_t small_body(std::size_t body_memory_budget, std::size_t max_connections) {
  return std::min<std::size_t>(64 * 1024, body_memory_budget / (2 * std::max<std::size_t>(max_connections, 1)));
}

// Queues one record; the callback runs exactly once (any thread) when the
// status is `queued`, never otherwise; otherwise `why` may say why.
using publish_fn = std::function<kafka::enqueue_status(const kafka::outgoing_record&,
                                                       kafka::producer::delivery_callback, std::string* why)>;

class server {
 public:
  // Binds and listens at once; throws config::usage_error when it cannot.
  server(boost::asio::io_context& ioc, const listen_address& where, handler_config handler,
         const server_limits& limits, std::string topic, publish_fn publish);
  ~server();
  server(const server&) = delete;
  server& operator=(const server&) = delete;

  // Starts accepting.
  void start();
  // Stops accepting, closes idle connections; requests in flight are
  // answered, then their connections close.
  void stop();
  // Open connections.
  [[nodiscard]] std::size_t connections() const;
  // The port actually bound (useful with port 0).
  [[nodiscard]] std::uint16_t port() const;

  // Read by /readyz; set from any thread.
  std::atomic<readiness> kafka_state{readiness::kafka_unreachable};

 private:
  struct impl;
  std::shared_ptr<impl> impl_;
};

}  // namespace clerk_sync::http
