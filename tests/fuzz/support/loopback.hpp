#pragma once
// One client's exchange with a server of ours on the loopback, for the
// targets that drive a whole server (server, auth_server): the input's
// bytes are written a piece at a time while the answers are read, then the
// client half-closes and reads until the server closes. The server runs on
// the same io_context, on the calling thread.

#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/write.hpp>
#include <boost/beast/core/flat_buffer.hpp>
#include <boost/beast/http/error.hpp>
#include <boost/beast/http/parser.hpp>
#include <boost/beast/http/string_body.hpp>

#include <algorithm>
#include <array>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include "fuzz_input.hpp"

namespace clerk_sync::fuzz {

struct exchange_result {
  std::string received;
  // How the read ended: eof for an orderly close by the server, anything
  // else (a reset) when what it sent may not all have arrived.
  boost::system::error_code read_end;
};

// Sends `sent` in pieces of `piece` bytes, reads everything, and runs the
// io_context until the server has closed and `open_connections()` is 0. A
// failed property when that takes more than 5 s from the connection (the
// writes take well under a second): once its client is done, a server has
// no reason to wait for a timeout.
//
// Each exchange leaves a connection in TIME_WAIT (the client closes first:
// it half-closes). Linux reuses those for new loopback connections
// (net.ipv4.tcp_tw_reuse, 2 by default); where it does not, a connect
// that finds no free port waits for one rather than failing.
template <class OpenConnections>
exchange_result exchange(boost::asio::io_context& ioc, std::uint16_t port, std::string_view sent, std::size_t piece,
                         OpenConnections open_connections) {
  namespace net = boost::asio;
  using namespace std::chrono_literals;
  using tcp = net::ip::tcp;

  // Asynchronous: a blocking connect fails when libFuzzer's timer signal
  // interrupts it.
  tcp::socket client(ioc);
  boost::system::error_code connected;
  for (int tries = 0; tries < 200; ++tries) {
    if (tries != 0) std::this_thread::sleep_for(100ms);  // no free port yet: TIME_WAITs expiring
    if (client.is_open()) client.close();
    connected = net::error::would_block;
    client.async_connect({net::ip::make_address("127.0.0.1"), port},
                         [&](boost::system::error_code ec) { connected = ec; });
    while (connected == net::error::would_block) ioc.run_one_for(50ms);
    if (connected != boost::system::errc::address_not_available) break;
  }
  FUZZ_CHECK(!connected);

  // Writes and reads run at once, as a client that reads its answers while
  // it sends: a server answering early and reading on must not deadlock.
  std::size_t written = 0;
  bool write_done = false;
  std::function<void()> write_next = [&] {
    if (written == sent.size()) {
      boost::system::error_code ignored;
      client.shutdown(tcp::socket::shutdown_send, ignored);
      write_done = true;
      return;
    }
    const auto n = std::min(piece, sent.size() - written);
    net::async_write(client, net::buffer(sent.data() + written, n), [&, n](boost::system::error_code ec, std::size_t) {
      written += n;
      if (ec) {
        write_done = true;  // the server closed: what it said is read below
        return;
      }
      write_next();
    });
  };
  write_next();

  exchange_result out;
  std::array<char, 16 * 1024> buf{};
  bool read_done = false;
  std::function<void()> read_next = [&] {
    client.async_read_some(net::buffer(buf), [&](boost::system::error_code ec, std::size_t n) {
      out.received.append(buf.data(), n);
      if (ec) {
        out.read_end = ec;
        read_done = true;
        return;
      }
      read_next();
    });
  };
  read_next();

  const auto deadline = std::chrono::steady_clock::now() + 5s;
  while (!(write_done && read_done && open_connections() == 0)) {
    ioc.run_one_for(50ms);
    FUZZ_CHECK(std::chrono::steady_clock::now() < deadline);
  }
  client.close();
  return out;
}

// The size of the client's writes that an input's first byte asks for: 1 to
// 7,651 bytes.
[[nodiscard]] inline std::size_t write_size(std::uint8_t b) { return 1 + static_cast<std::size_t>(b) * 30; }

using answer = boost::beast::http::response<boost::beast::http::string_body>;

// The answers in `bytes`, in order; false when they do not parse whole.
inline bool parse_answers(std::string_view bytes, std::vector<answer>& out) {
  namespace bhttp = boost::beast::http;
  while (!bytes.empty()) {
    bhttp::response_parser<bhttp::string_body> parser;
    parser.body_limit(1024 * 1024);
    boost::beast::error_code ec;
    while (!parser.is_done()) {
      const auto used = parser.put(boost::asio::buffer(bytes.data(), bytes.size()), ec);
      bytes.remove_prefix(used);
      if (ec == bhttp::error::need_more) {
        if (used != 0 && !bytes.empty()) continue;
        // Nothing more arrived: only a body that runs to the close ends here.
        parser.put_eof(ec);
        if (ec) return false;
        break;
      }
      if (ec) return false;
    }
    out.push_back(parser.release());
  }
  return true;
}

// What a server sent, as properties of every target that drives one: it
// parses as HTTP/1.1 answers, each of a status among `known` (1xx apart),
// and no answer follows one that says it closes.
template <std::size_t N>
[[nodiscard]] std::vector<answer> answers_of(std::string_view received, const std::array<unsigned, N>& known) {
  std::vector<answer> answers;
  FUZZ_CHECK(parse_answers(received, answers));
  for (std::size_t i = 0; i < answers.size(); ++i) {
    const auto status = answers[i].result_int();
    if (status == 100) continue;
    FUZZ_CHECK(std::find(known.begin(), known.end(), status) != known.end());
    if (!answers[i].keep_alive()) FUZZ_CHECK(i + 1 == answers.size());
  }
  return answers;
}

}  // namespace clerk_sync::fuzz
