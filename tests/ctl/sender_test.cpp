// The Svix-like sender against a scripted loopback HTTP server: retries on
// non-2xx with the same svix-id and a fresh, valid signature each attempt.
#include "ops/sender.hpp"

#include <doctest/doctest.h>
#include <poll.h>

#include <boost/asio/ip/tcp.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <thread>

#include "verify/svix.hpp"

using namespace clerk_sync;
namespace beast = boost::beast;
namespace http = beast::http;
namespace net = boost::asio;

namespace {

struct seen_request {
  std::string target, id, timestamp, signature, body;
};

// Answers each connection with the next status of `script`; gives up when no
// client comes within 5 s, so a broken sender cannot hang the test.
class scripted_server {
 public:
  explicit scripted_server(std::vector<int> script)
      : acceptor_(ioc_, {net::ip::make_address("127.0.0.1"), 0}), script_(std::move(script)) {
    thread_ = std::thread([this] { serve(); });
  }
  ~scripted_server() { thread_.join(); }
  scripted_server(const scripted_server&) = delete;
  scripted_server& operator=(const scripted_server&) = delete;
  [[nodiscard]] unsigned short port() const { return acceptor_.local_endpoint().port(); }
  [[nodiscard]] std::vector<seen_request> wait() {
    thread_.join();
    thread_ = std::thread([] {});
    return seen_;
  }

 private:
  void serve() {
    for (const int status : script_) {
      pollfd pfd{acceptor_.native_handle(), POLLIN, 0};
      if (::poll(&pfd, 1, 5000) != 1) return;
      net::ip::tcp::socket sock(ioc_);
      acceptor_.accept(sock);
      beast::flat_buffer buf;
      http::request<http::string_body> req;
      beast::error_code ec;
      http::read(sock, buf, req, ec);
      if (ec) return;
      seen_.push_back({std::string(req.target()), std::string(req["svix-id"]), std::string(req["svix-timestamp"]),
                       std::string(req["svix-signature"]), req.body()});
      http::response<http::string_body> res{static_cast<http::status>(status), 11};
      res.body() = "{}";
      res.prepare_payload();
      http::write(sock, res, ec);
      sock.shutdown(net::ip::tcp::socket::shutdown_both, ec);
    }
  }
  net::io_context ioc_;
  net::ip::tcp::acceptor acceptor_;
  std::vector<int> script_;
  std::vector<seen_request> seen_;
  std::thread thread_;
};

}  // namespace

TEST_CASE("send retries non-2xx answers with the same svix-id and a fresh valid signature") {
  scripted_server server({503, 500, 200});
  ops::send_options opts;
  opts.url = *ops::parse_http_url("http://127.0.0.1:" + std::to_string(server.port()) + "/webhooks/clerk");
  const auto key = verify::parse_secret("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw");
  opts.key = key;
  opts.schedule = {std::chrono::seconds(5), std::chrono::minutes(5), std::chrono::minutes(30)};
  std::int64_t now = 1'700'000'000;
  std::vector<std::chrono::milliseconds> slept;
  const ops::send_clock clock{[&] { return now; }, [&](std::chrono::milliseconds d) {
                                slept.push_back(d);
                                now += std::chrono::duration_cast<std::chrono::seconds>(d).count();
                              }};
  int failures_seen = 0;
  const std::string body = R"({"type":"user.created","data":{"id":"user_1"}})";
  const auto r = ops::send_one(opts, body, "", clock, [&](const ops::send_result&) { ++failures_seen; });
  const auto seen = server.wait();

  CHECK(r.ok());
  CHECK(r.attempts == 3);
  CHECK(failures_seen == 2);
  CHECK(slept == std::vector<std::chrono::milliseconds>{std::chrono::seconds(5), std::chrono::minutes(5)});
  REQUIRE(seen.size() == 3);
  for (const auto& s : seen) {
    CHECK(s.target == "/webhooks/clerk");
    CHECK(s.id == r.svix_id);
    CHECK(s.body == body);
    // Each attempt verifies at its own time: the timestamp moved with the clock.
    const verify::signed_headers h{s.id, s.timestamp, s.signature};
    const auto t = std::chrono::system_clock::time_point(std::chrono::seconds(std::stoll(s.timestamp)));
    CHECK(verify::verify(s.body, h, {key}, t).ok());
  }
  CHECK(seen[0].timestamp != seen[2].timestamp);
  CHECK(r.svix_id.starts_with("msg_"));
}

TEST_CASE("send gives up after the schedule is spent and reports the last answer") {
  scripted_server server({503, 503});
  ops::send_options opts;
  opts.url = *ops::parse_http_url("http://127.0.0.1:" + std::to_string(server.port()) + "/");
  opts.key = "k";
  opts.schedule = {std::chrono::milliseconds(1)};
  const auto r = ops::send_one(opts, "{}", "msg_fixed", ops::real_clock());
  CHECK(server.wait().size() == 2);
  CHECK_FALSE(r.ok());
  CHECK(r.attempts == 2);
  CHECK(r.last.status == 503);
  CHECK(r.svix_id == "msg_fixed");
}

TEST_CASE("send treats a refused connection as a failed attempt, not a crash") {
  unsigned short port = 0;
  {
    net::io_context ioc;
    net::ip::tcp::acceptor a(ioc, {net::ip::make_address("127.0.0.1"), 0});
    port = a.local_endpoint().port();
  }  // closed: nothing listens there now
  ops::send_options opts;
  opts.url = *ops::parse_http_url("http://127.0.0.1:" + std::to_string(port) + "/");
  opts.key = "k";
  opts.schedule = {};
  const auto r = ops::send_one(opts, "{}", "", ops::real_clock());
  CHECK_FALSE(r.ok());
  CHECK(r.last.status == 0);
  CHECK_MESSAGE(ops::nothing_listens(r.last), r.last.error);  // what counts toward a run's stop
}

TEST_CASE("send gives up on a receiver that accepts and never answers, within its timeout") {
  // The blocking reads ignored the deadline: send waited for ever, saying
  // nothing. The listener accepts (the kernel does, from its backlog) and
  // reads nothing.
  net::io_context ioc;
  net::ip::tcp::acceptor silent(ioc, {net::ip::make_address("127.0.0.1"), 0});
  ops::send_options opts;
  opts.url = *ops::parse_http_url("http://127.0.0.1:" + std::to_string(silent.local_endpoint().port()) + "/");
  opts.key = "k";
  opts.schedule = {std::chrono::milliseconds(1)};
  opts.request_timeout = std::chrono::milliseconds(300);
  const auto r = ops::send_one(opts, "{}", "", ops::real_clock());  // it returns: ctest's timeout if not
  CHECK_FALSE(r.ok());
  CHECK(r.attempts == 2);
  CHECK(r.last.status == 0);
  CHECK(r.last.error == "no answer within 300 ms");
}

TEST_CASE("send retries a 4xx too, as Svix does, and tells the statuses a retry cannot change") {
  std::vector<std::chrono::milliseconds> slept;
  const ops::send_clock clock{[] { return std::int64_t{1'700'000'000}; },
                              [&](std::chrono::milliseconds d) { slept.push_back(d); }};
  ops::send_options opts;
  opts.key = "k";
  opts.schedule = {std::chrono::seconds(1), std::chrono::seconds(5), std::chrono::seconds(30)};
  {
    scripted_server server({401, 401, 401, 401});
    opts.url = *ops::parse_http_url("http://127.0.0.1:" + std::to_string(server.port()) + "/");
    const auto r = ops::send_one(opts, "{}", "", clock);
    CHECK(server.wait().size() == 4);
    CHECK(r.attempts == 4);
    CHECK(r.last.status == 401);
    CHECK(slept.size() == 3);
  }
  {
    scripted_server server({429, 408, 200});
    opts.url = *ops::parse_http_url("http://127.0.0.1:" + std::to_string(server.port()) + "/");
    const auto r = ops::send_one(opts, "{}", "", clock);
    CHECK(server.wait().size() == 3);
    CHECK(r.ok());
    CHECK(r.attempts == 3);
  }
  for (const int s : {401, 403, 404, 405}) CHECK(ops::setup_refusal(s));
  for (const int s : {0, 400, 408, 413, 415, 422, 429, 500, 503}) CHECK_FALSE(ops::setup_refusal(s));
  CHECK(ops::explain_status(401).find("CLERK_WEBHOOK_SECRET differs") != std::string_view::npos);
  CHECK(ops::explain_status(404).find("wrong URL or path") != std::string_view::npos);
  CHECK(ops::explain_status(413).find("--body-limit") != std::string_view::npos);
}

TEST_CASE("a run stops after N events in a row refused with the same status that says the set-up is wrong") {
  const auto result = [](int status) {
    ops::send_result r;
    r.last.status = status;
    return r;
  };
  ops::refusal_streak streak(3);
  CHECK_FALSE(streak.add(result(401)));
  CHECK_FALSE(streak.add(result(401)));
  CHECK_FALSE(streak.add(result(200)));  // one got through: the setup works
  CHECK_FALSE(streak.add(result(401)));
  CHECK_FALSE(streak.add(result(404)));  // another status starts over
  CHECK_FALSE(streak.add(result(413)));  // this body's own fault: not counted, starts over
  CHECK_FALSE(streak.add(result(413)));
  CHECK_FALSE(streak.add(result(413)));
  CHECK_FALSE(streak.add(result(503)));  // may pass later: not counted
  CHECK_FALSE(streak.add(result(404)));
  CHECK_FALSE(streak.add(result(404)));
  CHECK(streak.add(result(404)));
  CHECK(streak.status() == 404);
  CHECK(streak.count() == 3);
  // Nothing listening at --url (a wrong port): each event's retries took
  // their whole schedule, about 36 s, and a run of 1,000 some ten hours.
  // A timeout is a slow receiver: not counted.
  auto refused = result(0);
  refused.last.error = "Connection refused";
  refused.last.connection_refused = true;
  auto slow = result(0);
  slow.last.error = "The socket was closed due to a timeout";
  ops::refusal_streak nothing(3);
  CHECK_FALSE(nothing.add(refused));
  CHECK_FALSE(nothing.add(refused));
  CHECK_FALSE(nothing.add(slow));
  CHECK_FALSE(nothing.add(refused));
  CHECK_FALSE(nothing.add(refused));
  CHECK(nothing.add(refused));
  CHECK(nothing.status() == 0);
}

TEST_CASE("a 200 that says ignored is told apart from a delivery, and says why nothing was published") {
  ops::send_result r;
  r.last = {200, "", R"({"status":"published","partition":0,"offset":7})"};
  CHECK(r.ok());
  CHECK_FALSE(r.ignored());
  r.last = {200, "", R"({"status":"ignored"})"};
  CHECK(r.ignored());
  CHECK(ops::explain_ignored().find("nothing was published") != std::string_view::npos);
  r.last = {400, "", R"({"status":"ignored"})"};  // a refusal is a failure, whatever its body
  CHECK_FALSE(r.ignored());
}
