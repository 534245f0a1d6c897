// The benchmark's ceiling: a bare Beast server built like the receiver (one
// io_context, a coroutine per connection, keep-alive) that reads each
// request and answers "200 OK" without verifying or publishing anything.
// Bench-only; never installed.  usage: bench-ceiling-server <port>

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/signal_set.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>

#include <csignal>
#include <cstdlib>
#include <iostream>

namespace net = boost::asio;
namespace beast = boost::beast;
namespace http = boost::beast::http;
using tcp = net::ip::tcp;

namespace {

constexpr auto nothrow = net::as_tuple(net::use_awaitable);

net::awaitable<void> session(tcp::socket sock) {
  beast::tcp_stream stream(std::move(sock));
  beast::flat_buffer buffer;
  for (;;) {
    http::request_parser<http::string_body> parser;
    parser.body_limit(1024 * 1024);
    stream.expires_after(std::chrono::seconds(60));
    auto [ec, n] = co_await http::async_read(stream, buffer, parser, nothrow);
    if (ec) break;
    http::response<http::string_body> res{http::status::ok, 11};
    res.set(http::field::content_type, "application/json");
    res.body() = R"({"status":"ok"})";
    res.keep_alive(parser.get().keep_alive());
    res.prepare_payload();
    auto [wec, wn] = co_await http::async_write(stream, res, nothrow);
    if (wec || !res.keep_alive()) break;
  }
  beast::error_code ignored;
  stream.socket().shutdown(tcp::socket::shutdown_send, ignored);
}

net::awaitable<void> listen(tcp::acceptor& acceptor) {
  for (;;) {
    auto [ec, sock] = co_await acceptor.async_accept(nothrow);
    if (ec) co_return;
    net::co_spawn(acceptor.get_executor(), session(std::move(sock)), net::detached);
  }
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 2) {
    std::cerr << "usage: bench-ceiling-server <port>\n";
    return 2;
  }
  net::io_context ioc(1);
  tcp::acceptor acceptor(ioc, {net::ip::make_address("127.0.0.1"), static_cast<unsigned short>(std::atoi(argv[1]))});
  net::signal_set signals(ioc, SIGTERM, SIGINT);
  signals.async_wait([&](auto, auto) { ioc.stop(); });
  net::co_spawn(ioc, listen(acceptor), net::detached);
  ioc.run();
  return 0;
}
