#include "auth/server.hpp"

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/beast/core/flat_buffer.hpp>
#include <boost/beast/core/tcp_stream.hpp>
#include <boost/beast/http.hpp>

#include <array>
#include <iterator>
#include <list>
#include <optional>
#include <string>

#include "config/options.hpp"
#include "http/connection_end.hpp"
#include "http/keep_alive.hpp"
#include "http/listen.hpp"
#include "http/request_bounds.hpp"
#include "log/log.hpp"

namespace clerk_sync::auth {
namespace {

namespace net = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
using tcp = net::ip::tcp;
// A check has no body: only a request's header is read.
using request = http::request<http::empty_body>;
using response = http::response<http::string_body>;

std::optional<std::string_view> header(const request& req, http::field f) {
  const auto it = req.find(f);
  if (it == req.end()) return std::nullopt;
  return std::string_view(it->value().data(), it->value().size());
}

// Every Cookie field, joined with "; " as RFC 9113 8.2.3 joins HTTP/2's
// cookie crumbs: a proxy may forward them as separate fields, and the
// __session cookie may be in any. One field is used as it is, uncopied.
std::optional<std::string_view> cookies(const request& req, std::string& joined) {
  auto [it, end] = req.equal_range(http::field::cookie);
  if (it == end) return std::nullopt;
  if (std::next(it) == end) return std::string_view(it->value().data(), it->value().size());
  for (; it != end; ++it) {
    if (!joined.empty()) joined += "; ";
    joined.append(it->value().data(), it->value().size());
  }
  return joined;
}

response plain(const request& req, http::status s, std::string_view body) {
  response res{s, req.version()};
  res.set(http::field::content_type, "text/plain");
  res.set(http::field::cache_control, "no-store");
  if (req.method() != http::verb::head) res.body() = std::string(body) + "\n";
  res.prepare_payload();
  return res;
}

// Log fields come from a signed token, but stay bounded all the same.
std::string_view cut(std::string_view v) { return v.substr(0, 128); }

}  // namespace

struct server::impl : std::enable_shared_from_this<impl> {
  impl(net::io_context& ctx, const listen_address& where, std::string p, service& s, const server_limits& l)
      : ioc(ctx), acceptor(ctx), path(std::move(p)), svc(s), limits(l) {
    clerk_sync::http::listen(acceptor, where);
  }

  response handle(const request& req) {
    const std::string_view target(req.target().data(), req.target().size());
    const auto path_only = target.substr(0, target.find('?'));
    const bool get = req.method() == http::verb::get || req.method() == http::verb::head;
    // One rate-limited line per path (two: any other path is not_found).
    const auto wrong_method = [&] {
      limiter.write(path_only == "/healthz" ? "method_not_allowed:healthz" : "method_not_allowed", log::level::warn,
                    "method_not_allowed",
                    {{"status", 405}, {"outcome", "method"}, {"path", cut(path_only)}});
      return plain(req, http::status::method_not_allowed, "method not allowed");
    };
    if (path_only == "/healthz") {
      if (!get) return wrong_method();
      // Every check would answer 503: a monitor of /healthz hears it too.
      if (const auto problem = svc.database_problem()) {
        limiter.write(svc.problem_key("healthz"), log::level::error, "healthz", {{"status", 503}, {"error", *problem}});
        return plain(req, http::status::service_unavailable, "database unavailable");
      }
      return plain(req, http::status::ok, "ok");
    }
    // A proxy pointed at another path or method gets no check at all: said
    // here too (rate-limited), not only in the proxy's own log.
    if (path_only != path) {
      limiter.write("not_found", log::level::warn, "not_found",
                    {{"status", 404}, {"outcome", "path"}, {"path", cut(path_only)}});
      return plain(req, http::status::not_found, "not found");
    }
    if (!get) return wrong_method();

    const auto started = std::chrono::steady_clock::now();
    std::string joined;
    // Authorization holds one credential (RFC 9110 11.6.2). With two lines,
    // the first would be checked while the application behind the proxy
    // may read the other. Clerk's authenticateRequest reads headers.get(),
    // which on a Fetch request joins them with ", ", and refuses the result.
    check_result r;
    if (req.count(http::field::authorization) > 1)
      r.outcome = "repeated_authorization";
    else
      r = svc.check(header(req, http::field::authorization), cookies(req, joined), std::chrono::system_clock::now());
    const std::string_view text = r.status == 200   ? "ok"
                                  : r.status == 401 ? "unauthorized"
                                  : r.status == 403 ? "forbidden"
                                                    : "unavailable";
    response res = plain(req, static_cast<http::status>(r.status), text);
    if (r.status == 200) {
      res.set("X-Clerk-User-Id", r.user);
      res.set("X-Clerk-Session-Id", r.session);
      res.set("X-Clerk-Role", r.role);
    } else if (r.status == 401) {
      res.set(http::field::www_authenticate, "Bearer error=\"invalid_token\"");
    } else if (r.status == 503) {
      res.set(http::field::retry_after, "1");
    }
    const auto us = std::chrono::duration_cast<std::chrono::microseconds>(std::chrono::steady_clock::now() - started);
    // The token never reaches the log; user and session only once verified.
    // A request let in gets its own line. Any other answer shares a
    // rate-limited line per status and outcome: anyone can send junk
    // cookies through the proxy (or a banned user's token), and a line for
    // each would use up journald's rate limit for the unit and drop its
    // lines with them, the 503s included. A refusal that a setting or the
    // host's clock makes of every user's token is a warning, so that an
    // operator logging at warn sees it.
    const std::initializer_list<log::field> fields = {
        {"status", r.status},    {"outcome", r.outcome}, {"user", cut(r.user)}, {"session", cut(r.session)},
        {"role", cut(r.role)},   {"cached", r.cached},   {"us", us.count()}};
    if (r.status == 200)
      log::write(log::level::info, "auth", fields);
    else
      limiter.write("auth:" + std::to_string(r.status) + ":" + std::string(r.outcome),
                    r.status == 503            ? log::level::error
                    : setup_refusal(r.outcome) ? log::level::warn
                                               : log::level::info,
                    "auth", fields);
    return res;
  }

  // Refuses a request that cannot be checked (malformed, over the header
  // limit, or with a body: a check has none, and its bytes would be taken
  // for the next request). Logged, rate-limited: a proxy passing a client's
  // many cookies over the header limit would otherwise fail every check of
  // that client without a line here.
  response refusal(clerk_sync::http::read_failure f, beast::error_code ec, std::string_view why) {
    using clerk_sync::http::read_failure;
    const bool too_large = f == read_failure::header_limit;
    const auto status = too_large ? http::status::request_header_fields_too_large : http::status::bad_request;
    // A Content-Length past Beast's default body limit (1 MiB) is refused
    // by the parser itself: a body all the same.
    const bool body = ec == http::error::unexpected_body || f == read_failure::body_limit;
    const std::string_view outcome = !why.empty() ? why : too_large ? "header_limit" : body ? "body" : "bad_request";
    const auto error = ec.message();
    limiter.write(std::string("rejected:") + std::string(outcome), log::level::warn, "rejected",
                  {{"status", static_cast<int>(status)}, {"outcome", outcome}, {"error", error}});
    response res{status, 11};
    res.keep_alive(false);
    res.prepare_payload();
    return res;
  }

  // A connection as stop() sees it: one waiting for a request (its parser
  // has had no byte, none is buffered) or lingering is closed there; one
  // in a request answers it first, with Connection: close.
  struct open_connection {
    beast::tcp_stream* stream = nullptr;
    const beast::flat_buffer* buffer = nullptr;
    const http::request_parser<http::empty_body>* parser = nullptr;  // while serve() reads or answers
    [[nodiscard]] bool in_request() const {
      return parser && (parser->got_some() || buffer->size() != 0 || clerk_sync::http::request_arrived(stream->socket()));
    }
  };
  std::list<open_connection> connections;

  net::awaitable<void> connection(tcp::socket sock) {
    const auto self = shared_from_this();  // the list below outlives this frame
    beast::tcp_stream stream(std::move(sock));
    beast::flat_buffer buffer;
    const auto me = connections.insert(connections.end(), {&stream, &buffer, nullptr});
    struct forget {
      std::list<open_connection>& list;
      std::list<open_connection>::iterator it;
      ~forget() { list.erase(it); }
    } forget_me{connections, me};
    const bool refused = co_await serve(stream, buffer, *me);
    me->parser = nullptr;  // gone with serve()'s frame
    if (refused) {
      // Refused before the client was done: what it still sends is read
      // and dropped, so that it reads the answer rather than a reset. The
      // request and its answer went with serve()'s frame, and the buffer
      // goes now: a lingering connection holds only its stream.
      buffer = beast::flat_buffer();
      co_await clerk_sync::http::linger(stream, limits.read_timeout, clerk_sync::http::min_linger_bytes,
                                        net::buffer(discard));
      co_return;
    }
    boost::system::error_code ignored;
    stream.socket().shutdown(tcp::socket::shutdown_send, ignored);
  }

  // Reads a request's header into `buffer` before it is parsed, bounded as
  // the receiver's is (http/request_bounds.hpp): up to its blank line, the
  // header limit's worth, or a byte no header may hold. Beast reading it
  // alone parsed each line as it came and kept its fields until the end:
  // a header of 4,000 empty fields that never ended held 330 KiB for the
  // read timeout, per connection. A folded line is malformed (a proxy that
  // drops the fold's continuation would pass on another credential than
  // the one checked), and more fields than bounds::max_fields too many.
  net::awaitable<clerk_sync::http::bounds::parsed_header> read_header(
      beast::tcp_stream& stream, beast::flat_buffer& buffer, http::request_parser<http::empty_body>& parser) {
    namespace bounds = clerk_sync::http::bounds;
    bounds::header_stage(buffer, limits.header_limit);
    std::size_t searched = 0;  // the header's end is not before this offset
    bool line_checked = false;
    while (!bounds::drop_blank_lines(buffer) ||
           !bounds::header_read(bounds::text_of(buffer), limits.header_limit, searched, line_checked)) {
      auto [ec, n] = co_await stream.async_read_some(buffer.prepare(beast::read_size(buffer, bounds::max_read)),
                                                     net::as_tuple(net::use_awaitable));
      buffer.commit(n);
      if (ec) co_return clerk_sync::http::bounds::parsed_header{ec, {}};
    }
    co_return bounds::parse_header(parser, buffer, limits.header_limit);
  }

  // A connection's requests, answered in turn; true when the last was
  // refused, and the connection is to linger.
  net::awaitable<bool> serve(beast::tcp_stream& stream, beast::flat_buffer& buffer, open_connection& me) {
    // A connection accepted as the stop came still has its first request
    // answered; after a stop, none waits for another.
    for (bool first = true;; first = false) {
      if (stopping && !first) co_return false;
      http::request_parser<http::empty_body> parser;
      me.parser = &parser;
      parser.header_limit(static_cast<std::uint32_t>(limits.header_limit));
      stream.expires_after(limits.read_timeout);
      auto [ec, why] = co_await read_header(stream, buffer, parser);
      const auto& req = parser.get();
      if (!ec && (parser.content_length().value_or(0) != 0 || req.count(http::field::transfer_encoding) != 0))
        ec = http::error::unexpected_body;
      const auto failed =
          ec ? std::optional(clerk_sync::http::classify_read_error(ec, parser.got_some() || buffer.size() != 0))
             : std::nullopt;
      // A connection that closes or times out between requests (a proxy's
      // pool) ends without a word; a request cut off or stalled mid-way is
      // a check the proxy saw fail, and leaves a line.
      if (failed && !clerk_sync::http::answered(*failed)) {
        clerk_sync::http::log_unfinished(limiter, *failed, "header");
        co_return false;
      }
      response res;
      if (failed) {
        res = refusal(*failed, ec, why);
      } else {
        res = handle(req);
        res.keep_alive(clerk_sync::http::keeps_alive(parser) && !stopping);
      }
      stream.expires_after(limits.read_timeout);
      auto [wec, wn] = co_await http::async_write(stream, res, net::as_tuple(net::use_awaitable));
      (void)wn;
      if (wec) co_return false;
      if (failed) co_return true;
      if (!res.keep_alive()) co_return false;
    }
  }

  net::awaitable<void> accept_loop() {
    auto self = shared_from_this();
    net::steady_timer backoff(ioc);
    while (!stopping) {
      auto [ec, sock] = co_await acceptor.async_accept(net::as_tuple(net::use_awaitable));
      // A connection accepted as the stop came is served (its request
      // answered, Connection: close); the closed acceptor ends the loop.
      if (ec == net::error::operation_aborted) break;
      if (ec) {
        // Out of descriptors and the like: back off instead of spinning.
        const auto error = ec.message();
        limiter.write("accept_failed", log::level::error, "accept_failed", {{"error", error}});
        backoff.expires_after(std::chrono::milliseconds(100));
        (void)co_await backoff.async_wait(net::as_tuple(net::use_awaitable));
        continue;
      }
      if (open >= limits.max_connections) {
        // Over the cap: close at once rather than queue without bound.
        limiter.write("refused", log::level::warn, "refused", {{"outcome", "max_connections"}, {"connections", open}});
        boost::system::error_code ignored;
        sock.close(ignored);
        continue;
      }
      ++open;
      net::co_spawn(ioc, connection(std::move(sock)), [self](std::exception_ptr e) {
        --self->open;
        if (e) {
          try {
            std::rethrow_exception(e);
          } catch (const std::exception& ex) {
            log::warn("connection_failed", {{"error", ex.what()}});
          }
        }
      });
    }
  }

  net::io_context& ioc;
  tcp::acceptor acceptor;
  std::string path;
  service& svc;
  server_limits limits;
  std::size_t open = 0;
  bool stopping = false;
  log::rate_limiter limiter;  // refused checks, accept failures, refusals, /healthz's 503
  std::array<char, 16 * 1024> discard{};  // lingering reads land here (one thread: no race)
};

server::server(net::io_context& ioc, const listen_address& where, std::string path, service& svc,
               const server_limits& limits)
    : impl_(std::make_shared<impl>(ioc, where, std::move(path), svc, limits)) {}

server::~server() { stop(); }

void server::start() { net::co_spawn(impl_->ioc, impl_->accept_loop(), clerk_sync::http::rethrow_failure); }

void server::stop() {
  impl_->stopping = true;
  boost::system::error_code ignored;
  impl_->acceptor.close(ignored);
  // A proxy's pooled connections waiting for a check end now; a check on
  // its way (its first byte here) is answered, then its connection closes.
  for (auto& c : impl_->connections)
    if (!c.in_request()) c.stream->socket().close(ignored);
}

std::size_t server::connections() const { return impl_->open; }

std::uint16_t server::port() const {
  boost::system::error_code ec;
  const auto ep = impl_->acceptor.local_endpoint(ec);
  return ec ? 0 : ep.port();
}

}  // namespace clerk_sync::auth
