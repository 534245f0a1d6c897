#pragma once
// clerk-sync-auth's HTTP server: Beast over one io_context, a coroutine per
// connection, keep-alive, a read timeout on every request, a header limit, a
// cap on connections. A check has no body: a request that declares one gets
// 400 and the connection closes. GET|HEAD <path> answers the forward-auth
// check through `service`; GET /healthz answers 200. Runs on the
// io_context's thread only; one log line per check, never the token.

#include <boost/asio/io_context.hpp>

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>

#include "auth/options.hpp"
#include "auth/service.hpp"

namespace clerk_sync::auth {

struct server_limits {
  std::chrono::milliseconds read_timeout{10'000};
  std::size_t max_connections = 4096;
  std::size_t header_limit = 16 * 1024;
};

class server {
 public:
  // Binds and listens at once; throws config::usage_error when it cannot.
  server(boost::asio::io_context& ioc, const listen_address& where, std::string path, service& svc,
         const server_limits& limits);
  ~server();
  server(const server&) = delete;
  server& operator=(const server&) = delete;

  void start();
  // Stops accepting; connections waiting for a request are closed, those in
  // one end once it is answered (connections() counts them down).
  void stop();
  [[nodiscard]] std::size_t connections() const;
  [[nodiscard]] std::uint16_t port() const;

 private:
  struct impl;
  std::shared_ptr<impl> impl_;
};

}  // namespace clerk_sync::auth
