// The receiver's reading of one request from the wire: Beast's parser with
// the receiver's limits and the read buffer's bounds of
// lib/http/request_bounds.hpp, over the input's bytes. The first byte sets
// the size of each read (1 to 76,501 bytes); the rest is what the client
// sends, read as serve_request() reads it (the same bounds functions, in
// the same order: the header read into the buffer first, up to its end,
// then looked at for a folded line and parsed from there). Properties:
// nothing throws (Beast's parser throws, from inside a read, for a field it
// cannot hold: that ended the receiver once); the buffer's memory never
// outgrows its stage's bound (a reserve past it would raise the bound);
// where Beast parses a header whole, it ends where the scan for folded
// lines stopped, so that scan saw all of it; a body read whole is within
// the body limit.

#include <boost/asio/buffer.hpp>
#include <boost/asio/error.hpp>
#include <boost/beast/core/error.hpp>
#include <boost/beast/core/flat_buffer.hpp>
#include <boost/beast/core/read_size.hpp>
#include <boost/beast/http/error.hpp>

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <exception>
#include <optional>
#include <string_view>

#include "fuzz_input.hpp"
#include "http/request_bounds.hpp"

namespace beast = boost::beast;
namespace bhttp = boost::beast::http;
namespace bounds = clerk_sync::http::bounds;

namespace {

constexpr std::size_t header_limit = 16 * 1024;  // the receiver's defaults
constexpr std::uint64_t body_limit = 1024 * 1024;

// A client handing out the client's bytes `chunk` at a time, then EOF.
struct client_bytes {
  std::string_view left;
  std::size_t chunk;

  template <class MutableBuffers>
  std::size_t read_some(const MutableBuffers& buffers, beast::error_code& ec) {
    ec = {};
    if (left.empty()) {
      ec = boost::asio::error::eof;
      return 0;
    }
    const auto n = boost::asio::buffer_copy(buffers, boost::asio::buffer(left.data(), std::min(chunk, left.size())));
    left.remove_prefix(n);
    return n;
  }
};

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  if (size < 1) return 0;
  const auto input = clerk_sync::fuzz::text(data + 1, size - 1);
  client_bytes client{input, 1 + static_cast<std::size_t>(data[0]) * 300};
  bounds::request_parser parser;
  bounds::limit(parser, header_limit, body_limit);
  beast::flat_buffer buffer;
  bounds::header_stage(buffer, header_limit);
  beast::error_code ec;
  std::size_t searched = 0;
  bool line_checked = false;
  for (bool read_any = false;;) {
    const auto before = buffer.size();
    const bool some = bounds::drop_blank_lines(buffer);
    if (!some && (read_any || before != 0)) return 0;  // blank lines only: the receiver waits for a request
    if (some && bounds::header_read(bounds::text_of(buffer), header_limit, searched, line_checked)) break;
    const auto n = client.read_some(buffer.prepare(beast::read_size(buffer, bounds::max_read)), ec);
    buffer.commit(n);
    read_any = true;
    FUZZ_CHECK(buffer.capacity() <= header_limit + bounds::max_read);
    if (ec) return 0;
  }
  const auto end = bounds::header_end(bounds::text_of(buffer));
  const auto before = buffer.size();
  const auto parsed = bounds::parse_header(parser, buffer, header_limit);  // as both servers parse it
  if (parsed.refusal == "obs_fold") return 0;  // refused: 400
  // A header Beast parses whole ends where the fold scan stopped, so that
  // scan saw all of it; one it does not is refused, never read on.
  if (parser.is_header_done()) FUZZ_CHECK(end != std::string_view::npos && before - buffer.size() == end);
  FUZZ_CHECK(buffer.capacity() <= header_limit + bounds::max_read);
  if (parsed.ec || parser.is_done()) return 0;  // 431 (header_fields too) or 400
  const std::size_t header_stage_capacity = buffer.capacity();
  const auto length = parser.content_length();
  bounds::body_stage(buffer, length ? std::optional<std::uint64_t>(*length) : std::nullopt);
  parser.eager(true);  // as serve_request() reads a body
  for (std::size_t fresh = buffer.size();;) {
    ec = bounds::parse_body(parser, buffer, fresh);
    if (ec == bhttp::error::bad_chunk) {
      // Refused as a chunk line or trailer that can never end: Beast, given
      // all the client sent at once, does not read the body whole either.
      bounds::request_parser whole;
      bounds::limit(whole, header_limit, body_limit);
      whole.eager(true);
      beast::error_code wec;
      try {
        (void)whole.put(boost::asio::buffer(input.data(), input.size()), wec);
      } catch (const std::exception&) {
        return 0;  // a field Beast cannot hold: refused too
      }
      FUZZ_CHECK(wec || !whole.is_done());
      return 0;
    }
    if (ec && ec != bhttp::error::need_more) return 0;  // 400 or 413
    if (parser.is_done()) break;
    const auto room = beast::read_size(buffer, bounds::max_read);
    if (room == 0) return 0;  // 400: a chunk line or trailer past one read
    fresh = client.read_some(buffer.prepare(room), ec);
    buffer.commit(fresh);
    FUZZ_CHECK(buffer.capacity() <= std::max(header_stage_capacity, bounds::max_read));
    if (ec) return 0;
  }
  FUZZ_CHECK(parser.get().body().size() <= body_limit);
  return 0;
}
