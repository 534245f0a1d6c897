#include "ops/sender.hpp"

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/connect.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <charconv>
#include <exception>
#include <thread>

#include "http/handler.hpp"
#include "ops/events.hpp"
#include "verify/svix.hpp"

namespace clerk_sync::ops {
namespace {

namespace beast = boost::beast;
namespace http = beast::http;
namespace net = boost::asio;

}  // namespace

std::optional<http_url> parse_http_url(std::string_view url) {
  constexpr std::string_view scheme = "http://";
  if (!url.starts_with(scheme)) return std::nullopt;
  url.remove_prefix(scheme.size());
  http_url out;
  const auto slash = url.find('/');
  auto authority = url.substr(0, slash);
  if (authority.find('@') != std::string_view::npos) return std::nullopt;
  if (slash != std::string_view::npos) out.target = std::string(url.substr(slash));
  if (authority.starts_with('[')) {  // [::1]:8080
    const auto close = authority.find(']');
    if (close == std::string_view::npos) return std::nullopt;
    out.host = std::string(authority.substr(1, close - 1));
    authority.remove_prefix(close + 1);
    if (!authority.empty()) {
      if (authority[0] != ':') return std::nullopt;
      out.port = std::string(authority.substr(1));
    }
  } else {
    const auto colon = authority.find(':');
    out.host = std::string(authority.substr(0, colon));
    if (colon != std::string_view::npos) out.port = std::string(authority.substr(colon + 1));
  }
  int port = 0;
  const auto [p, ec] = std::from_chars(out.port.data(), out.port.data() + out.port.size(), port);
  if (out.host.empty() || ec != std::errc() || p != out.port.data() + out.port.size() || port <= 0 || port > 65535)
    return std::nullopt;
  return out;
}

std::string redact_url(std::string_view url) {
  // The last '@' anywhere, not the authority's: a password typed with a '/'
  // in it would end the authority early and show its rest.
  const auto at = url.rfind('@');
  if (at == std::string_view::npos) return std::string(url);
  const auto scheme = url.find("://");
  const auto from = scheme != std::string_view::npos && scheme < at ? scheme + 3 : 0;
  return std::string(url.substr(0, from)) + "***" + std::string(url.substr(at));
}

std::optional<std::vector<std::chrono::milliseconds>> parse_schedule(std::string_view text) {
  std::vector<std::chrono::milliseconds> out;
  while (!text.empty()) {
    const auto comma = text.find(',');
    auto item = text.substr(0, comma);
    text = comma == std::string_view::npos ? std::string_view() : text.substr(comma + 1);
    while (!item.empty() && item.front() == ' ') item.remove_prefix(1);
    while (!item.empty() && item.back() == ' ') item.remove_suffix(1);
    std::int64_t n = 0;
    const auto [p, ec] = std::from_chars(item.data(), item.data() + item.size(), n);
    if (ec != std::errc() || n < 0) return std::nullopt;
    const std::string_view unit(p, static_cast<std::size_t>(item.data() + item.size() - p));
    std::int64_t per = 0;
    if (unit == "ms") per = 1;
    else if (unit == "s") per = 1000;
    else if (unit == "m") per = 60'000;
    else if (unit == "h") per = 3'600'000;
    else return std::nullopt;
    // At most a day a step: a larger count would overflow into a retry at once.
    constexpr std::int64_t day_ms = 86'400'000;
    if (n > day_ms / per) return std::nullopt;
    out.emplace_back(n * per);
  }
  return out;
}

bool send_result::ignored() const { return ok() && last.body == clerk_sync::http::ignored_body; }

bool send_result::published() const { return ok() && last.body.starts_with(R"({"status":"published",)"); }

std::string_view explain_ignored() {
  return "nothing was published: the receiver publishes only user.* and session.* events and answers 200 to any "
         "other type, which no consumer will see (check the type for a typo)";
}

bool setup_refusal(int status) { return status == 401 || status == 403 || status == 404 || status == 405; }

std::string_view explain_status(int status) {
  switch (status) {
    case 0:
      return "no HTTP answer: nothing listens at --url, or the receiver did not answer within --timeout-ms";
    case 400:
      return "the receiver refused the request as malformed: missing or malformed Svix headers, or a body that "
             "is not JSON";
    case 401:
      return "the receiver refused the signature: CLERK_WEBHOOK_SECRET differs from the receiver's, or the clock "
             "is off by more than its tolerance";
    case 403:
      return "forbidden: the receiver or a proxy in front of it does not let this client post";
    case 404:
    case 405:
      return "wrong URL or path: --url does not name the receiver's webhook path (default /webhooks/clerk)";
    case 408:
      return "the receiver timed out reading the request";
    case 413:
      return "too large: a body over the receiver's --body-limit, or a record over the topic's max.message.bytes "
             "(the answer says which)";
    case 415:
      return "the receiver does not take this Content-Type";
    case 422:
      return "the receiver could not process this body";
    case 429:
      return "the receiver asks to slow down";
    case 503:
      return "the receiver could not hand the event to Kafka (the answer says why: Kafka down or slow, its queue "
             "full, too many bodies in flight)";
    default:
      break;
  }
  if (status >= 500) return "the receiver failed on its side";
  if (status >= 400) return "the receiver refused the request";
  if (status >= 300) return "a redirect, which the sender does not follow: check --url";
  return "an answer the sender does not expect from a receiver";
}

bool refusal_streak::add(const send_result& r) {
  if (r.ok() || !(setup_refusal(r.last.status) || nothing_listens(r.last))) {
    count_ = 0;
  } else if (count_ > 0 && r.last.status == status_) {
    ++count_;
  } else {
    status_ = r.last.status;
    count_ = 1;
  }
  return count_ >= limit_;
}

send_clock real_clock() {
  return {[] {
            return std::chrono::duration_cast<std::chrono::seconds>(
                       std::chrono::system_clock::now().time_since_epoch())
                .count();
          },
          [](std::chrono::milliseconds d) { std::this_thread::sleep_for(d); }};
}

http_answer post(const http_url& url, std::string_view body,
                 const std::vector<std::pair<std::string, std::string>>& headers, std::chrono::milliseconds timeout) {
  http_answer out;
  net::io_context ioc;
  beast::tcp_stream stream(ioc);
  http::request<http::string_body> req{http::verb::post, url.target, 11};
  req.set(http::field::host, url.host);
  req.set(http::field::user_agent, "clerk-sync-ctl");
  req.set(http::field::content_type, "application/json");
  for (const auto& [k, v] : headers) req.set(k, v);
  req.body() = std::string(body);
  req.prepare_payload();
  beast::flat_buffer buffer;
  http::response_parser<http::string_body> parser;
  parser.body_limit(1 << 20);
  // Asynchronous steps, since only those keep the stream's deadline (the
  // blocking ones ignored it: a receiver that accepted and never answered
  // held `send` for ever); every step but the name's resolution shares it.
  const auto exchange = [&]() -> net::awaitable<void> {
    net::ip::tcp::resolver resolver(ioc);
    const auto found = co_await resolver.async_resolve(url.host, url.port, net::use_awaitable);
    stream.expires_after(timeout);
    co_await stream.async_connect(found, net::use_awaitable);
    co_await http::async_write(stream, req, net::use_awaitable);
    co_await http::async_read(stream, buffer, parser, net::use_awaitable);
  };
  std::exception_ptr failed;
  net::co_spawn(ioc, exchange(), [&](std::exception_ptr e) { failed = e; });
  ioc.run();
  try {
    if (failed) std::rethrow_exception(failed);
    out.status = static_cast<int>(parser.get().result_int());
    out.body = parser.get().body();
    beast::error_code ec;
    stream.socket().shutdown(net::ip::tcp::socket::shutdown_both, ec);
  } catch (const boost::system::system_error& e) {
    out.status = 0;
    out.error = e.code() == beast::error::timeout ? "no answer within " + std::to_string(timeout.count()) + " ms"
                                                   : e.code().message();  // what() adds Boost's source location
    out.connection_refused = e.code() == net::error::connection_refused;
  } catch (const std::exception& e) {
    out.status = 0;
    out.error = e.what();
  }
  return out;
}

send_result send_one(const send_options& opts, std::string_view body, std::string svix_id, const send_clock& clock,
                     const std::function<void(const send_result&)>& on_attempt) {
  send_result r;
  r.svix_id = svix_id.empty() ? random_message_id() : std::move(svix_id);
  for (std::size_t attempt = 0;; ++attempt) {
    // Svix signs each attempt anew: the timestamp is the attempt's own.
    const auto ts = clock.now_seconds();
    const std::vector<std::pair<std::string, std::string>> headers = {
        {"svix-id", r.svix_id},
        {"svix-timestamp", std::to_string(ts)},
        {"svix-signature", verify::sign(opts.key, r.svix_id, ts, body)}};
    r.last = post(opts.url, body, headers, opts.request_timeout);
    ++r.attempts;
    if (!r.ok() && on_attempt) on_attempt(r);
    if (r.ok() || attempt >= opts.schedule.size()) return r;
    clock.sleep(opts.schedule[attempt]);
  }
}

}  // namespace clerk_sync::ops
