#pragma once
// How the receiver bounds the reading of one request, beyond Beast's own
// header and body limits: the read buffer's size in each stage, and the
// number of fields. Shared by lib/http/server.cpp, lib/auth/server.cpp
// (the header stage and its parse) and the `wire` fuzz target, which reads
// raw bytes through Beast's parser under the same bounds.

#include <boost/beast/core/flat_buffer.hpp>
#include <boost/beast/http/parser.hpp>
#include <boost/beast/http/string_body.hpp>

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <iterator>
#include <optional>
#include <string_view>

namespace clerk_sync::http::bounds {

// Beast's largest single read into a flat buffer.
inline constexpr std::size_t max_read = 64 * 1024;
// At most this many fields in a request's header (Apache's
// LimitRequestFields): Beast allocates each field apart, so without a
// count a header block's bytes would cost many times their size in memory.
// (A chunked body's trailer is refused whatever its count.)
inline constexpr std::size_t max_fields = 100;

using request_parser = boost::beast::http::request_parser<boost::beast::http::string_body>;

// A request's first read: a Clerk webhook's headers and body (2-5 KiB) fit.
inline constexpr std::size_t read_chunk = 8 * 1024;

// A parser with the receiver's header and body limits.
inline void limit(request_parser& parser, std::size_t header_limit, std::uint64_t body_limit) {
  parser.header_limit(static_cast<std::uint32_t>(header_limit));
  parser.body_limit(body_limit);
}

// Beast bounds a header and a body's bytes, but not a chunk line (size and
// extensions) or a trailer, which it keeps in the read buffer until their
// CRLF comes. Past the buffer's bound a read fails with buffer_overflow,
// so a line that never ends costs at most what the bound holds.
//
// While the header is read: the header limit and one read; room for a
// whole typical webhook, so that one read takes it (Beast reads 512 bytes
// at a time into a buffer that has no room yet). Every reserve here asks
// for less than the bound: past it, reserve() would raise the bound.
inline void header_stage(boost::beast::flat_buffer& buffer, std::size_t header_limit) {
  buffer.max_size(std::max(buffer.size(), header_limit + max_read));
  buffer.reserve(read_chunk);
}

// While the body is read: one read's worth. A chunked body's last chunk and
// trailer must fit in it, which keeps every trailer field under the 65,534
// bytes past which Beast throws, from inside a read's completion. What the
// header read took beyond the header is less than a read. Room for the rest
// of a body of known length, up to what one read takes (the string body
// holds the rest). A buffer that a large header grew (to twice the header
// limit) is cut down first: it would be held, beside the parsed fields,
// for as long as the body takes to come.
inline void body_stage(boost::beast::flat_buffer& buffer, std::optional<std::uint64_t> content_length) {
  if (buffer.capacity() > read_chunk) buffer.shrink_to_fit();
  buffer.max_size(std::max(buffer.size(), max_read));
  if (content_length)
    buffer.reserve(static_cast<std::size_t>(std::min<std::uint64_t>(buffer.size() + *content_length, max_read)));
}

// The header is read into the buffer before Beast parses it, so that its
// raw bytes can be looked at (a folded line). The buffer's bytes as text.
[[nodiscard]] inline std::string_view text_of(const boost::beast::flat_buffer& buffer) {
  return {static_cast<const char*>(buffer.data().data()), buffer.size()};
}

// Drops blank lines before a request line (RFC 9112 2.2: some clients send
// a CRLF after a body). True when something else is left.
inline bool drop_blank_lines(boost::beast::flat_buffer& buffer) {
  while (text_of(buffer).starts_with("\r\n")) buffer.consume(2);
  return buffer.size() != 0;
}

// Where the header's blank line ends (just past its "\r\n\r\n"), searched
// from `from`; npos when not there yet.
[[nodiscard]] inline std::size_t header_end(std::string_view bytes, std::size_t from = 0) {
  const auto at = bytes.find("\r\n\r\n", from);
  return at == std::string_view::npos ? at : at + 4;
}

// Whether `bytes` from `from` on can be part of a well-formed header: no
// control byte but CR, LF and tab, and no LF without its CR. Beast refuses
// a header with one as soon as it parses the line, so the read need not
// wait for the header's end to have it answered.
[[nodiscard]] inline bool header_bytes(std::string_view bytes, std::size_t from) {
  for (std::size_t i = from; i < bytes.size(); ++i) {
    const auto c = static_cast<unsigned char>(bytes[i]);
    if (c == '\n' ? i == 0 || bytes[i - 1] != '\r' : (c < 0x20 && c != '\r' && c != '\t') || c == 0x7f) return false;
  }
  return true;
}

// Whether Beast refuses a request line (the bytes up to its first CRLF) as
// soon as it has it, as it did when it read the header itself: a bad
// method, target or version is answered at once, not at the read timeout.
// The probe holds the header limit the real parse has: by Beast's default
// (8 KiB) a longer line within the limit was refused as malformed.
[[nodiscard]] inline bool bad_request_line(std::string_view line, std::size_t header_limit) {
  request_parser probe;
  probe.header_limit(static_cast<std::uint32_t>(header_limit));
  boost::beast::error_code ec;
  probe.put(boost::asio::buffer(line.data(), line.size()), ec);
  return ec && ec != boost::beast::http::error::need_more;
}

// Whether the header read so far is enough to parse: its end, the header
// limit's worth, a byte that makes it malformed, or a request line Beast
// refuses. `searched` is where the previous look stopped, updated for the
// next one; `line_checked` says the request line was looked at.
[[nodiscard]] inline bool header_read(std::string_view bytes, std::size_t header_limit, std::size_t& searched,
                                      bool& line_checked) {
  if (header_end(bytes, searched) != std::string_view::npos || bytes.size() >= header_limit ||
      !header_bytes(bytes, searched))
    return true;
  if (!line_checked) {
    if (const auto eol = bytes.find("\r\n"); eol != std::string_view::npos) {
      line_checked = true;
      if (bad_request_line(bytes.substr(0, eol + 2), header_limit)) return true;
    }
  }
  searched = bytes.size() < 3 ? 0 : bytes.size() - 3;
  return false;
}

// A header line that starts with a space or tab: obsolete line folding
// (RFC 9112 5.2), which Beast joins into the field before it. A proxy in
// front that forwards the fold as it is and does not read it as framing
// (a folded Content-Length or Transfer-Encoding) would see another body
// length than ours, and the difference would be read as the next request
// on a shared connection. Svix never folds: refused.
[[nodiscard]] inline bool folded(std::string_view bytes) {
  const auto header = bytes.substr(0, std::min(header_end(bytes), bytes.size()));
  return header.find("\r\n ") != std::string_view::npos || header.find("\r\n\t") != std::string_view::npos;
}

// Whether `bytes` from `from` on can be part of a chunk line or a trailer:
// as a header's (header_bytes), and no CR but before its LF.
[[nodiscard]] inline bool chunk_line_bytes(std::string_view bytes, std::size_t from) {
  if (!header_bytes(bytes, from)) return false;
  for (std::size_t i = from == 0 ? 0 : from - 1; i + 1 < bytes.size(); ++i)
    if (bytes[i] == '\r' && bytes[i + 1] != '\n') return false;
  return true;
}

// Parses the body bytes the buffer holds, `fresh` of them (at its end) read
// since the last call; need_more when the body needs more bytes. Beast
// leaves a chunked body's unfinished chunk line or trailer in the buffer
// and waits for its CRLF; one with a bare LF, a bare CR or a control byte
// (as in a header: RFC 9112 7.1) may never get one, and would hold the
// connection until the read timeout with nothing answered. It is refused
// once read: only the fresh bytes are looked at, so that a line trickled a
// byte at a time costs no more than Beast's own search for its end.
inline boost::beast::error_code parse_body(request_parser& parser, boost::beast::flat_buffer& buffer,
                                           std::size_t fresh) {
  namespace bhttp = boost::beast::http;
  boost::beast::error_code ec = bhttp::error::need_more;
  if (buffer.size() != 0) buffer.consume(parser.put(buffer.data(), ec));
  if (ec == bhttp::error::need_more && parser.chunked()) {
    const auto left = text_of(buffer);
    if (!chunk_line_bytes(left, left.size() - std::min(fresh, left.size()))) ec = bhttp::error::bad_chunk;
  }
  return ec;
}

template <class Fields>
[[nodiscard]] bool too_many_fields(const Fields& fields) {
  return static_cast<std::size_t>(std::distance(fields.begin(), fields.end())) > max_fields;
}

// What parse_header() found: an error, and when it is a refusal of ours
// rather than Beast's, its outcome word ("obs_fold", "header_fields").
struct parsed_header {
  boost::beast::error_code ec;
  std::string_view refusal;
};

// Parses a header read whole into `buffer` (header_read() said so). A
// folded line is refused before Beast joins it into its field (obs_fold,
// as bad_value); Beast never reads on past what was looked at, so a header
// without its end within the limit is too large and one stopped at a bad
// byte malformed; more than max_fields fields are too many (header_fields,
// as header_limit).
template <class Parser>
[[nodiscard]] parsed_header parse_header(Parser& parser, boost::beast::flat_buffer& buffer, std::size_t header_limit) {
  namespace bhttp = boost::beast::http;
  if (folded(text_of(buffer))) return {bhttp::error::bad_value, "obs_fold"};
  const bool at_limit = buffer.size() >= header_limit;
  boost::beast::error_code ec;
  buffer.consume(parser.put(buffer.data(), ec));
  if (ec == bhttp::error::need_more) ec = at_limit ? bhttp::error::header_limit : bhttp::error::bad_value;
  if (!ec && too_many_fields(parser.get())) return {bhttp::error::header_limit, "header_fields"};
  return {ec, {}};
}

}  // namespace clerk_sync::http::bounds
