#pragma once
// Whether a request lets its connection stay open after the answer, read
// from its header alone (the server may still close it). Header-only over
// Beast: shared by the receiver and clerk-sync-auth.

#include <boost/beast/core/string.hpp>
#include <boost/beast/http/field.hpp>
#include <boost/beast/http/rfc7230.hpp>

namespace clerk_sync::http {

// A "close" among the tokens of any Connection line.
template <class Header>
[[nodiscard]] bool asks_close(const Header& req) {
  const auto [first, last] = req.equal_range(boost::beast::http::field::connection);
  for (auto it = first; it != last; ++it)
    for (const auto& token : boost::beast::http::token_list(it->value()))
      if (boost::beast::iequals(token, "close")) return true;
  return false;
}

// Not message::keep_alive(), which reads the first Connection line only:
// "keep-alive" then "close" kept the connection open against RFC 9112 9.6.
// The parser reads every line, but lets an HTTP/1.0 "keep-alive" outweigh
// a "close". A close anywhere closes.
template <class Parser>
[[nodiscard]] bool keeps_alive(const Parser& parser) {
  return parser.keep_alive() && !asks_close(parser.get());
}

// Whether bytes of a request wait in the socket, not yet read: a
// connection that looks idle to the server but is not, which a stop or
// the cap must not close unanswered.
template <class Socket>
[[nodiscard]] bool request_arrived(Socket& socket) {
  boost::beast::error_code ec;
  return socket.available(ec) > 0 && !ec;
}

}  // namespace clerk_sync::http
