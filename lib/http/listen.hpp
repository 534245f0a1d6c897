#pragma once
// Opening a daemon's listening socket: the receiver's and clerk-sync-auth's.

#include <boost/asio/error.hpp>
#include <boost/asio/ip/address.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/socket_base.hpp>

#include <exception>
#include <string>

#include "config/options.hpp"

namespace clerk_sync::http {

// The completion of a daemon's long-lived coroutines (the accept loop, the
// idle sweeper): an exception out of one (no memory for a connection's
// state) is rethrown out of io_context::run(), where config::run_main logs
// it (unexpected_error) and exits 1, for systemd to restart. Under
// net::detached it was dropped, and the process went on accepting nothing,
// its watchdog fed by the same loop.
inline void rethrow_failure(const std::exception_ptr& e) {
  if (e) std::rethrow_exception(e);
}

// Binds `acceptor` (any executor) to `where` and listens. An address in
// use (another process holds the port, perhaps only for a moment at boot)
// or not on this host yet (an interface or an address that comes up late)
// may pass by itself: config::listen_error, exit 1, which systemd restarts
// within its start limit. Anything else (no such address, a port below
// 1024 without the capability) is a setting: config::usage_error, exit 2.
template <class Acceptor>
void listen(Acceptor& acceptor, const config::listen_address& where) {
  boost::system::error_code ec;
  const auto address = boost::asio::ip::make_address(where.host, ec);
  if (ec) throw config::usage_error("bad listen address " + where.host);
  const boost::asio::ip::tcp::endpoint ep(address, where.port);
  (void)acceptor.open(ep.protocol(), ec);
  if (!ec) (void)acceptor.set_option(boost::asio::socket_base::reuse_address(true), ec);
  if (!ec) (void)acceptor.bind(ep, ec);
  if (!ec) (void)acceptor.listen(boost::asio::socket_base::max_listen_connections, ec);
  if (!ec) return;
  const std::string what =
      "cannot listen on " + where.host + ":" + std::to_string(where.port) + ": " + ec.message();
  if (ec == boost::asio::error::address_in_use || ec == boost::system::errc::address_not_available)
    throw config::listen_error(what);
  throw config::usage_error(what);
}

}  // namespace clerk_sync::http
