#include "receiver/harness.hpp"

#include <boost/asio/connect.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <doctest/doctest.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <charconv>
#include <random>
#include <thread>

#include "kafka/client.hpp"
#include "support/support.hpp"
#include "verify/svix.hpp"

namespace clerk_sync::test {

namespace net = boost::asio;
namespace beast = boost::beast;
namespace bhttp = boost::beast::http;

http_result send_http(int port, const std::string& method, const std::string& target,
                      const std::map<std::string, std::string>& headers, const std::string& body,
                      std::chrono::milliseconds timeout) {
  net::io_context ioc;
  beast::tcp_stream stream(ioc);
  bhttp::request<bhttp::string_body> req{bhttp::string_to_verb(method), target, 11};
  req.set(bhttp::field::host, "127.0.0.1");
  for (const auto& [k, v] : headers) req.set(k, v);
  req.body() = body;
  req.prepare_payload();
  req.keep_alive(false);
  beast::flat_buffer buffer;
  bhttp::response_parser<bhttp::string_body> parser;
  parser.body_limit(16 * 1024 * 1024);
  http_result result;
  const net::ip::tcp::endpoint ep(net::ip::make_address("127.0.0.1"), static_cast<unsigned short>(port));
  stream.expires_after(timeout);
  stream.async_connect(ep, [&](beast::error_code ec) {
    if (ec) return;
    bhttp::async_write(stream, req, [&](beast::error_code wec, std::size_t) {
      // A server that refuses early (413) may close while we still write: read anyway.
      (void)wec;
      bhttp::async_read(stream, buffer, parser, [&](beast::error_code rec, std::size_t) {
        if (rec) return;
        const auto& res = parser.get();
        result.status = static_cast<int>(res.result_int());
        for (const auto& f : res) {
          std::string name(f.name_string());
          for (auto& c : name) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
          result.headers[name] = std::string(f.value());
        }
        result.body = res.body();
      });
    });
  });
  ioc.run_for(timeout + std::chrono::seconds(1));
  return result;
}

std::string random_secret() {
  std::random_device rd;
  std::string key(24, '\0');
  for (auto& c : key) c = static_cast<char>(rd() & 0xff);
  return verify::format_secret(key);
}

std::string forged_header_lines() {
  const auto now =
      std::chrono::duration_cast<std::chrono::seconds>(std::chrono::system_clock::now().time_since_epoch());
  return "svix-id: msg_forged\r\nsvix-timestamp: " + std::to_string(now.count()) + "\r\nsvix-signature: v1," +
         std::string(43, 'A') + "=\r\n";
}

signed_event sign_event(const std::string& secret, std::string body, std::optional<std::int64_t> timestamp,
                        std::optional<std::string> id) {
  static std::atomic<int> counter{0};
  signed_event e;
  e.id = id ? std::move(*id) : unique_name("msg_") + "_" + std::to_string(counter++);
  const auto ts = timestamp.value_or(
      std::chrono::duration_cast<std::chrono::seconds>(std::chrono::system_clock::now().time_since_epoch()).count());
  e.timestamp = std::to_string(ts);
  e.headers = {{"svix-id", e.id},
               {"svix-timestamp", e.timestamp},
               {"svix-signature", verify::sign(verify::parse_secret(secret), e.id, ts, body)},
               {"content-type", "application/json"}};
  e.body = std::move(body);
  return e;
}

std::string user_event_body(const std::string& user, const std::string& type) {
  return R"({"data":{"id":")" + user + R"(","object":"user","first_name":"Ada","updated_at":1700000000000,)" +
         R"("public_metadata":{}},)" +
         R"("object":"event","timestamp":1700000000000,"type":")" + type + R"("})";
}

http_result post_event(int port, const signed_event& e, std::chrono::milliseconds timeout) {
  return send_http(port, "POST", "/webhooks/clerk", e.headers, e.body, timeout);
}

receiver::receiver(const std::string& brokers, const std::string& topic, const std::string& secret,
                   const std::vector<std::string>& extra_args, const std::map<std::string, std::string>& extra_env,
                   const std::vector<std::string>& launcher)
    : port_(free_port()) {
  std::vector<std::string> args{"--listen", "127.0.0.1:" + std::to_string(port_), "--brokers", brokers, "--topic",
                                topic};
  args.insert(args.end(), extra_args.begin(), extra_args.end());
  std::map<std::string, std::string> env{
      {"CLERK_WEBHOOK_SECRET", secret}, {"CLERK_WEBHOOK_SECRET_FILE", ""}, {"NOTIFY_SOCKET", ""}};
  for (const auto& [k, v] : extra_env) env[k] = v;
  const auto exe = binary_path("app/receiver/clerk-sync-receiver");
  if (launcher.empty()) {
    proc_ = std::make_unique<process>(exe, args, env);
  } else {
    std::vector<std::string> all(launcher.begin() + 1, launcher.end());
    all.push_back(exe.string());
    all.insert(all.end(), args.begin(), args.end());
    proc_ = std::make_unique<process>(launcher.front(), all, env);
  }
  REQUIRE_MESSAGE(proc_->wait_for_log("msg=listening", std::chrono::seconds(15)), proc_->stderr_text());
}

bool receiver::wait_ready(std::chrono::milliseconds timeout) {
  const auto until = std::chrono::steady_clock::now() + timeout;
  while (std::chrono::steady_clock::now() < until) {
    if (send_http(port_, "GET", "/readyz", {}, "", std::chrono::seconds(2)).status == 200) return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  return false;
}

// CLOEXEC: a broker the test restarts meanwhile must not inherit (and hold open) our sockets.
raw_conn::raw_conn(int port) : fd_(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0)) {
  REQUIRE(fd_ >= 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_port = htons(static_cast<std::uint16_t>(port));
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  REQUIRE(::connect(fd_, reinterpret_cast<sockaddr*>(&a), sizeof a) == 0);
}

raw_conn::~raw_conn() { ::close(fd_); }

bool raw_conn::send(std::string_view s) {
  while (!s.empty()) {
    const auto n = ::send(fd_, s.data(), s.size(), MSG_NOSIGNAL);
    if (n <= 0) return false;
    s.remove_prefix(static_cast<std::size_t>(n));
  }
  return true;
}

bool raw_conn::closed_within(std::chrono::milliseconds timeout) {
  const auto until = std::chrono::steady_clock::now() + timeout;
  char buf[4096];
  for (;;) {
    const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(until - std::chrono::steady_clock::now());
    if (left.count() <= 0) return false;
    pollfd p{fd_, POLLIN, 0};
    if (::poll(&p, 1, static_cast<int>(left.count())) <= 0) return false;
    const auto n = ::recv(fd_, buf, sizeof buf, MSG_DONTWAIT);
    if (n == 0 || (n < 0 && errno != EAGAIN)) return true;
  }
}

std::string raw_conn::read_until(std::string_view needle, std::chrono::milliseconds timeout) {
  const auto until = std::chrono::steady_clock::now() + timeout;
  std::string got;
  char buf[4096];
  while (got.find(needle) == std::string::npos) {
    // At least one look, even with no time left (a zero timeout polls).
    const auto left = std::max<std::int64_t>(
        0, std::chrono::duration_cast<std::chrono::milliseconds>(until - std::chrono::steady_clock::now()).count());
    pollfd p{fd_, POLLIN, 0};
    if (::poll(&p, 1, static_cast<int>(left)) <= 0) break;
    const auto n = ::recv(fd_, buf, sizeof buf, MSG_DONTWAIT);
    if (n <= 0) break;
    got.append(buf, static_cast<std::size_t>(n));
  }
  return got;
}

int status_of(std::string_view text) {
  int status = 0;
  if (text.starts_with("HTTP/1.1 ") && text.size() >= 12) (void)std::from_chars(text.data() + 9, text.data() + 12, status);
  return status;
}

std::vector<kafka::message> read_topic(const std::string& brokers, const std::string& topic,
                                       std::chrono::milliseconds timeout) {
  kafka::client_config cfg;
  cfg.brokers = brokers;
  kafka::consumer cons(cfg, "");
  const auto parts = cons.partitions_of(topic, std::chrono::seconds(10));
  REQUIRE_FALSE(parts.empty());
  std::vector<kafka::topic_partition> assign;
  std::map<std::int32_t, std::int64_t> high;
  std::int64_t expected = 0;
  for (const auto p : parts) {
    const auto [lo, hi] = cons.watermarks(topic, p, std::chrono::seconds(10));
    high[p] = hi;
    expected += hi - lo;
    assign.push_back({topic, p, kafka::offset_beginning});
  }
  cons.assign(assign);
  std::vector<kafka::message> out;
  const auto until = std::chrono::steady_clock::now() + timeout;
  while (static_cast<std::int64_t>(out.size()) < expected && std::chrono::steady_clock::now() < until)
    if (auto m = cons.poll(std::chrono::milliseconds(100))) out.push_back(std::move(*m));
  REQUIRE(static_cast<std::int64_t>(out.size()) == expected);
  return out;
}

std::optional<std::pair<std::int32_t, std::int64_t>> published_at(const std::string& body) {
  int p = -1;
  long long o = -1;
  if (std::sscanf(body.c_str(), R"({"status":"published","partition":%d,"offset":%lld})", &p, &o) != 2)
    return std::nullopt;
  return std::pair<std::int32_t, std::int64_t>(p, static_cast<std::int64_t>(o));
}

}  // namespace clerk_sync::test
