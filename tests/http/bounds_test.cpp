// The receiver's reading of a chunked body (bounds::parse_body, as
// serve_request() calls it): a well-formed body is never refused however
// its bytes are split between reads, and a chunk line or trailer that can
// never end is refused as soon as the byte that makes it so is read.
#include "http/request_bounds.hpp"

#include <doctest/doctest.h>

#include <boost/asio/buffer.hpp>

#include <cstddef>
#include <string>
#include <string_view>

namespace bhttp = boost::beast::http;
namespace bounds = clerk_sync::http::bounds;

namespace {

constexpr std::string_view head = "POST /webhooks/clerk HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n";

struct result {
  boost::beast::error_code ec;  // the first error other than need_more, or none
  std::size_t at = 0;           // bytes of the body read when it came
  bool done = false;
};

// The header parsed at once, then the body read `step` bytes at a time.
result read_body(std::string_view body, std::size_t step) {
  bounds::request_parser parser;
  bounds::limit(parser, 16 * 1024, 1024 * 1024);
  boost::beast::error_code ec;
  REQUIRE(parser.put(boost::asio::buffer(head.data(), head.size()), ec) == head.size());
  REQUIRE(!ec);
  REQUIRE(parser.is_header_done());
  parser.eager(true);
  boost::beast::flat_buffer buffer;
  bounds::body_stage(buffer, std::nullopt);
  result r;
  for (std::size_t sent = 0; sent < body.size();) {
    const auto n = std::min(step, body.size() - sent);
    boost::asio::buffer_copy(buffer.prepare(n), boost::asio::buffer(body.data() + sent, n));
    buffer.commit(n);
    sent += n;
    r.ec = bounds::parse_body(parser, buffer, n);
    r.at = sent;
    if (r.ec == bhttp::error::need_more) r.ec = {};
    if (r.ec || parser.is_done()) break;
  }
  r.done = parser.is_done();
  return r;
}

}  // namespace

TEST_CASE("a well-formed chunked body is read whole however its bytes are split, LFs and CRs in its data included") {
  const std::string body = "5;name=\"q v\"\r\nab\ncd\r\n3\r\n\r\n\n\r\n1\r\n\r\r\n0\r\n\r\n";
  for (std::size_t step = 1; step <= body.size(); ++step) {
    CAPTURE(step);
    const auto r = read_body(body, step);
    CHECK(!r.ec);
    CHECK(r.done);
  }
}

TEST_CASE("a chunk line or trailer that can never end is refused at the byte that makes it so") {
  struct bad {
    std::string body;
    std::size_t at;  // the offending byte's position + 1
  };
  for (const auto& [body, at] : {bad{"5\nhello\r\n0\r\n\r\n", 2}, bad{"5\r\nhello\r\n0\n\r\n", 12},
                                 bad{"0\r\nX: 1\n\r\n", 8}, bad{"0\r\nX: 1\rY\r\n\r\n", 9},
                                 bad{"5;a\x01\r\nhello\r\n0\r\n\r\n", 4}}) {
    CAPTURE(body);
    // A byte at a time: refused at that byte, where Beast would wait.
    const auto r = read_body(body, 1);
    CHECK(r.ec == bhttp::error::bad_chunk);
    CHECK(r.at == at);
    // All at once, Beast's own parse may refuse it first: refused all the same.
    const auto whole = read_body(body, body.size());
    CHECK(whole.ec);
    CHECK_FALSE(whole.done);
  }
}

// The header stage reads 8 KiB, then 512 bytes: a request line whose end
// comes in the second read, before the header's end, is probed alone.
TEST_CASE("a request line longer than 8 KiB within the header limit is not taken for a malformed one") {
  const std::string line = "POST /webhooks/clerk?pad=" + std::string(8300, 'a') + " HTTP/1.1\r\n";
  const std::string bytes = line + "Host: x\r\nX-Pad: " + std::string(200, 'b');  // no end of header yet
  std::size_t searched = 0;
  bool line_checked = false;
  CHECK_FALSE(bounds::header_read(bytes, 16 * 1024, searched, line_checked));
  CHECK(line_checked);
  // Past the limit it is too large, and a bad line is still refused at once.
  CHECK(bounds::bad_request_line(line, 8 * 1024));
  CHECK(bounds::bad_request_line("GET / HTTP/2.0\r\n", 16 * 1024));
}
