#pragma once
// How a connection ends when a request cannot be read whole, and the
// lingering close after an answer given before the client was done.
// Header-only over Beast and the log: shared by the receiver and
// clerk-sync-auth, so that both say the same thing of the same failure.

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/awaitable.hpp>
#include <boost/asio/buffer.hpp>
#include <boost/asio/error.hpp>
#include <boost/asio/socket_base.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/beast/core/error.hpp>
#include <boost/beast/http/error.hpp>

#include <algorithm>
#include <chrono>
#include <cstddef>
#include <string>
#include <string_view>

#include "log/log.hpp"

namespace clerk_sync::http {

// What a failed read of a request means for its connection.
enum class read_failure {
  gone,          // closed or reset before a request began (a keep-alive's end), or a socket error: nothing to say
  cut_off,       // closed or reset by the client mid-request: nothing to answer, a read_incomplete line
  timed_out,     // not read whole within the read timeout: closed, a read_timeout line
  header_limit,  // answered 431
  body_limit,    // a declared or read body past the limit: answered
  line_limit,    // a chunk line or trailer past the read buffer's bound: answered 400
  malformed,     // what Beast cannot parse (a bad Content-Length, a bare LF, ...): answered 400
};

// `started`: some of the request had arrived when the read failed.
[[nodiscard]] inline read_failure classify_read_error(boost::beast::error_code ec, bool started) {
  namespace bhttp = boost::beast::http;
  namespace net = boost::asio;
  if (ec == bhttp::error::header_limit) return read_failure::header_limit;
  if (ec == bhttp::error::body_limit) return read_failure::body_limit;
  if (ec == bhttp::error::buffer_overflow) return read_failure::line_limit;
  if (ec == bhttp::error::partial_message) return read_failure::cut_off;
  // A reset is the client's end too (killed, or a balancer giving up).
  if (ec == bhttp::error::end_of_stream || ec == net::error::eof || ec == net::error::connection_reset)
    return started ? read_failure::cut_off : read_failure::gone;
  if (ec.category() == bhttp::make_error_code(bhttp::error::bad_target).category()) return read_failure::malformed;
  if (ec == boost::beast::error::timeout) return started ? read_failure::timed_out : read_failure::gone;
  return read_failure::gone;
}

// Whether the client is to be told (the others close without a word).
[[nodiscard]] inline bool answered(read_failure f) {
  return f != read_failure::gone && f != read_failure::cut_off && f != read_failure::timed_out;
}

// A request that never arrived whole is closed with nothing to answer; so
// that trickling or cut-off clients are seen, one line a minute per stage
// ("header", "body") and kind says how many (with `repeated`).
inline void log_unfinished(log::rate_limiter& limiter, read_failure f, std::string_view stage) {
  if (f == read_failure::cut_off)
    limiter.write("incomplete_" + std::string(stage), log::level::info, "read_incomplete",
                  {{"stage", stage}, {"outcome", "closed by the client"}});
  else if (f == read_failure::timed_out)
    limiter.write("read_timeout_" + std::string(stage), log::level::warn, "read_timeout",
                  {{"stage", stage}, {"outcome", "closed"}});
}

// The least cap on what a lingering close reads before it gives up: a few
// of the receiver's bodies, and any body a forward-auth check may be sent.
inline constexpr std::size_t min_linger_bytes = 8 * 1024 * 1024;

// What nginx calls a lingering close, after an answer given before the
// request was read to its end: our FIN, then what the client still sends
// is read into `scratch` and dropped, until its EOF, `timeout` or
// `max_bytes`. Closed with that input unread, the connection would be
// reset, and a client still writing its request would fail on the write
// (or its kernel drop the answer) before reading the answer.
template <class Stream>
boost::asio::awaitable<void, typename Stream::executor_type> linger(Stream& stream, std::chrono::milliseconds timeout,
                                                                    std::size_t max_bytes,
                                                                    boost::asio::mutable_buffer scratch) {
  namespace net = boost::asio;
  boost::beast::error_code ec;
  stream.socket().shutdown(net::socket_base::shutdown_send, ec);
  if (ec) co_return;
  stream.expires_after(timeout);
  for (std::size_t left = max_bytes; left > 0;) {
    auto [rec, n] = co_await stream.async_read_some(
        scratch, net::as_tuple(net::use_awaitable_t<typename Stream::executor_type>{}));
    if (rec) break;  // the client's EOF, or the deadline
    left -= std::min(left, n);
  }
}

}  // namespace clerk_sync::http
