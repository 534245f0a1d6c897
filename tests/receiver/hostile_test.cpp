// The receiver under hostile traffic, on the real binary over loopback: no
// client, however rude, can starve, crash or blind it (issue: trickled
// headers, descriptors, memory, deep JSON, early answers, size contract).

#include "receiver/harness.hpp"

#include <doctest/doctest.h>

#include <sys/resource.h>
#include <sys/socket.h>

#include <array>
#include <csignal>
#include <fstream>
#include <sstream>
#include <thread>
#include <tuple>

#include "kafka/admin.hpp"
#include "support/own_broker.hpp"

namespace test = clerk_sync::test;
namespace kafka = clerk_sync::kafka;
using namespace std::chrono_literals;

namespace {

std::chrono::milliseconds since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now() - t0);
}

// "Name: value\r\n" lines of a signed event's headers.
std::string header_lines(const test::signed_event& e) {
  std::string s;
  for (const auto& [k, v] : e.headers) s += k + ": " + v + "\r\n";
  return s;
}

// A valid user.created of about `size` bytes (padding in a field nobody reads).
std::string body_of_size(const std::string& user, std::size_t size) {
  const std::string head = R"({"type":"user.created","object":"event","timestamp":1700000000000,"data":{"id":")" + user +
                           R"(","updated_at":1700000000000,"public_metadata":{},"padding":")";
  const std::string tail = R"("}})";
  REQUIRE(size > head.size() + tail.size());
  return head + std::string(size - head.size() - tail.size(), 'x') + tail;
}

// User plus system CPU time of a process so far, from /proc/PID/stat.
std::chrono::milliseconds cpu_time(pid_t pid) {
  std::ifstream in("/proc/" + std::to_string(pid) + "/stat");
  std::string stat;  // one line
  REQUIRE(std::getline(in, stat));
  std::istringstream rest(stat.substr(stat.rfind(')') + 2));  // after "pid (comm) "
  std::string field;
  long long ticks = 0;
  for (int i = 3; i <= 15 && rest >> field; ++i)
    if (i == 14 || i == 15) ticks += std::stoll(field);  // utime, stime
  return std::chrono::milliseconds(ticks * 1000 / sysconf(_SC_CLK_TCK));
}

std::size_t peak_rss_kib(pid_t pid) {
  std::ifstream in("/proc/" + std::to_string(pid) + "/status");
  std::string line;
  while (std::getline(in, line))
    if (line.starts_with("VmHWM:")) return std::stoul(line.substr(6));
  return 0;
}

}  // namespace

TEST_CASE("a trickled header or body is closed within the read timeout, a silent connection only when idle") {
  const auto secret = test::random_secret();
  test::receiver r(test::broker().brokers, test::fresh_topic("recv_trickle", 1), secret,
                   {"--read-timeout-ms", "1000", "--idle-timeout-ms", "30000"});
  test::raw_conn silent(r.port());
  test::raw_conn header(r.port());
  const auto t0 = std::chrono::steady_clock::now();
  header.send("POST /webhooks/clerk HTTP/1.1\r\n");
  bool closed = false;
  for (int i = 0; i < 100 && !closed; ++i)
    closed = !header.send("X-Trickle-" + std::to_string(i) + ": 1\r\n") || header.closed_within(200ms);
  CHECK(closed);
  MESSAGE("trickled header closed after " << since(t0).count() << " ms (read timeout 1000 ms, idle 30000 ms)");
  CHECK(since(t0) < 10s);  // far below the idle timeout, whatever the load
  CHECK_FALSE(silent.closed_within(200ms));  // past the read timeout, a silent connection is still served

  test::raw_conn body(r.port());
  const auto t1 = std::chrono::steady_clock::now();
  // Headers of a signature's shape: without them the body is never read.
  body.send("POST /webhooks/clerk HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n" + test::forged_header_lines() +
            "\r\n");
  closed = false;
  for (int i = 0; i < 100 && !closed; ++i) closed = !body.send("x") || body.closed_within(200ms);
  CHECK(closed);
  CHECK(since(t1) < 10s);
  CHECK(test::send_http(r.port(), "GET", "/healthz", {}, "").status == 200);
  // Closed without an answer, but not without a word (the body's line is
  // held back by the once-a-minute limit until its period ends).
  CHECK(r.proc().wait_for_log("msg=read_timeout stage=header outcome=closed", 5s));
}

TEST_CASE("descriptors: under prlimit --nofile=1024, more silent connections than that and a broker restart still end in 200") {
  test::own_broker broker;
  const std::string topic = test::unique_name("recv_nofile");
  REQUIRE(kafka::create_topic({broker.address(), {}}, {topic, 1, 1, {{"retention.ms", "-1"}}}, 30s) ==
          kafka::create_outcome::created);
  const auto secret = test::random_secret();
  test::receiver r(broker.address(), topic, secret, {"--idle-timeout-ms", "300000"}, {},
                   {"/usr/bin/prlimit", "--nofile=1024:1024", "--"});
  REQUIRE(r.wait_ready(30s));
  // The cap leaves a reserve for Kafka, the probe and the logs, and says so.
  CHECK(r.proc().wait_for_log("msg=limits nofile=1024 fd_reserve=256 max_connections=768", 5s));

  // This test needs more descriptors than the receiver has.
  rlimit lim{};
  REQUIRE(getrlimit(RLIMIT_NOFILE, &lim) == 0);
  REQUIRE(lim.rlim_max >= 2048);
  lim.rlim_cur = lim.rlim_max;
  REQUIRE(setrlimit(RLIMIT_NOFILE, &lim) == 0);
  std::vector<std::unique_ptr<test::raw_conn>> conns;
  for (int i = 0; i < 1100; ++i) conns.push_back(std::make_unique<test::raw_conn>(r.port()));
  // Silent connections past the cap each close the longest idle one.
  CHECK(r.proc().wait_for_log("msg=idle_closed outcome=max_connections", 10s));

  // Kafka must be able to reconnect while every connection slot is taken.
  broker.control("stop");
  broker.control("start");

  // At the cap, with every slot held by a silent client, a webhook still gets 200.
  const auto e = test::sign_event(secret, test::user_event_body("user_nofile"));
  int status = 0;
  const auto until = std::chrono::steady_clock::now() + 90s;
  while (status != 200 && std::chrono::steady_clock::now() < until) {
    status = test::post_event(r.port(), e, 15s).status;
    if (status != 200) std::this_thread::sleep_for(500ms);
  }
  CHECK(status == 200);
  CHECK(r.proc().running());
  CHECK(r.proc().stderr_text().find("Too many open files") == std::string::npos);

  // Every connection closed for room is accounted for: one line at once,
  // the others held back and written, with their count, before the
  // receiver's last line.
  r.proc().signal(SIGTERM);
  REQUIRE(r.proc().wait(30s) == 0);
  const std::string log = r.proc().stderr_text();
  std::istringstream lines(log);
  std::size_t closed_lines = 0, closed = 0;
  for (std::string l; std::getline(lines, l);) {
    if (l.find("msg=idle_closed outcome=max_connections") == std::string::npos) continue;
    ++closed_lines;
    closed += 1 + std::stoull(l.substr(l.find(" repeated=") + 10));
  }
  CHECK(closed_lines >= 2);  // the first, and the last held back (at stop, or a minute later)
  CHECK(closed >= 1100 - 768 + 1);  // the webhook's connection too
  CHECK(log.find("msg=idle_closed") < log.find("msg=stopped"));
  CHECK(log.rfind("seen_at=") < log.find("msg=stopped"));
}

TEST_CASE("memory: 1,000 connections sending 1 MiB bodies slowly are held to half the body budget, the rest get 503, a webhook still 200") {
  const auto secret = test::random_secret();
  test::receiver r(test::broker().brokers, test::fresh_topic("recv_memory", 1), secret,
                   {"--read-timeout-ms", "60000", "--body-memory-budget", std::to_string(64 * 1024 * 1024)});
  const std::string header =
      "POST /webhooks/clerk HTTP/1.1\r\nHost: x\r\nContent-Length: 1048576\r\n" + test::forged_header_lines() + "\r\n";
  constexpr std::size_t n = 1000;
  constexpr std::size_t chunk = 64 * 1024;
  std::vector<std::unique_ptr<test::raw_conn>> conns;
  std::vector<std::size_t> sent(n, 0);
  std::vector<int> status(n, 0);
  rlimit lim{};
  REQUIRE(getrlimit(RLIMIT_NOFILE, &lim) == 0);
  lim.rlim_cur = lim.rlim_max;
  REQUIRE(setrlimit(RLIMIT_NOFILE, &lim) == 0);
  for (std::size_t i = 0; i < n; ++i) {
    conns.push_back(std::make_unique<test::raw_conn>(r.port()));
    REQUIRE(conns.back()->send(header + std::string(1024, 'x')));
    sent[i] = 1024;
  }
  // With the large bodies' share spent, a webhook still has memory.
  REQUIRE(r.wait_ready(20s));
  const auto e = test::sign_event(secret, test::user_event_body("user_under_flood"));
  CHECK(test::post_event(r.port(), e, 20s).status == 200);
  const auto until = std::chrono::steady_clock::now() + 120s;
  for (bool pending = true; pending && std::chrono::steady_clock::now() < until;) {
    pending = false;
    std::this_thread::sleep_for(100ms);
    for (std::size_t i = 0; i < n; ++i) {
      if (status[i] != 0) continue;
      const auto got = conns[i]->read_until("\r\n\r\n", 0ms);
      if (!got.empty()) {
        status[i] = test::status_of(got);
        continue;
      }
      if (sent[i] < 1024 * 1024) {
        const auto k = std::min(chunk, 1024 * 1024 - sent[i]);
        if (conns[i]->send(std::string(k, 'x'))) sent[i] += k;
      }
      pending = true;
    }
  }
  std::size_t busy = 0, read_whole = 0;
  for (const auto s : status) {
    if (s == 503) ++busy;
    if (s == 401) ++read_whole;  // read to the end, then refused: a forged signature
  }
  const auto rss = peak_rss_kib(r.proc().pid());
  MESSAGE("1,000 x 1 MiB slow bodies: " << read_whole << " read whole, " << busy << " answered 503; receiver peak RSS "
                                        << rss / 1024 << " MiB (budget 64 MiB)");
  CHECK(busy + read_whole == n);
  CHECK(read_whole >= 32);  // at least the large bodies' share (half the budget) is served
  CHECK(busy >= 800);
  CHECK(rss < 200 * 1024);  // not 1,000 MiB
  CHECK(r.proc().wait_for_log("outcome=memory_budget", 5s));
}

TEST_CASE("a chunk line or a trailer that never ends gets 400 after a header and one read's worth, not the client's stream") {
  const auto secret = test::random_secret();
  test::receiver r(test::broker().brokers, test::fresh_topic("recv_chunk_line", 1), secret,
                   {"--read-timeout-ms", "20000"});
  const std::string head =
      "POST /webhooks/clerk HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n" + test::forged_header_lines() + "\r\n";
  // Beast keeps a chunk line (size and extensions) and a trailer in the
  // read buffer until their CRLF: without a bound on that buffer, 48 MiB of
  // one extension would be 48 MiB (and more, as it grows) of receiver memory.
  for (const std::string_view start : {"1;ext=", "0\r\nX-Trailer: "}) {
    CAPTURE(start);
    test::raw_conn c(r.port());
    REQUIRE(c.send(head + std::string(start)));
    const std::string piece(64 * 1024, 'a');
    std::size_t sent = 0;
    std::string answer;
    while (sent < 48u * 1024 * 1024 && answer.empty()) {
      if (!c.send(piece)) break;  // the receiver answered and closed
      sent += piece.size();
      answer = c.read_until("\r\n\r\n", 0ms);
    }
    if (answer.empty()) answer = c.read_until("\r\n\r\n", 10s);
    MESSAGE("sent " << sent / 1024 << " KiB before the answer");
    CHECK(test::status_of(answer) == 400);
    CHECK(sent < 16u * 1024 * 1024);  // cut after a header and one read (80 KiB), then the lingering close's 8 MiB
  }
  const auto rss = peak_rss_kib(r.proc().pid());
  MESSAGE("receiver peak RSS " << rss / 1024 << " MiB");
  CHECK(rss < 40 * 1024);
  CHECK(r.proc().wait_for_log("outcome=chunk_line_limit", 5s));
  CHECK(test::send_http(r.port(), "GET", "/healthz", {}, "").status == 200);
}

TEST_CASE("a chunk line or trailer with a bare LF or a control byte gets 400 at once, not the read timeout's silent close") {
  const auto secret = test::random_secret();
  test::receiver r(test::broker().brokers, test::fresh_topic("recv_chunk_lf", 1), secret,
                   {"--read-timeout-ms", "20000"});
  REQUIRE(r.wait_ready(20s));
  const auto e = test::sign_event(secret, test::user_event_body("user_chunk_lf"));
  std::ostringstream hex;
  hex << std::hex << e.body.size();
  const std::string size = hex.str();
  const std::string head =
      "POST /webhooks/clerk HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n" + header_lines(e) + "\r\n";
  // Beast waits for a CRLF that such a line never gets.
  for (const std::string& body : {size + "\n" + e.body + "\n0\n\n", size + "\r\n" + e.body + "\r\n0\n\n",
                                  size + "\r\n" + e.body + "\r\n0\r\nX: 1\n\n", size + ";x\x01y"}) {
    CAPTURE(body.substr(0, 8));
    test::raw_conn c(r.port());
    REQUIRE(c.send(head + body));
    CHECK(test::status_of(c.read_until("\r\n\r\n", 5s)) == 400);
  }
  CHECK(r.proc().wait_for_log("outcome=bad_request", 5s));
  CHECK(r.proc().stderr_text().find("msg=published") == std::string::npos);
  // A CRLF split between reads is no bare LF, and an LF in chunk data is data.
  const auto split = test::sign_event(secret, test::user_event_body("user_chunk_split") + " \n");
  const auto data = std::string_view(split.body);
  hex.str("");
  hex << std::hex << data.size() - 2;
  test::raw_conn c(r.port());
  REQUIRE(c.send("POST /webhooks/clerk HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n" + header_lines(split) +
                 "\r\n" + hex.str() + "\r\n" + std::string(data.substr(0, 10))));
  for (const std::string_view piece : {data.substr(10, data.size() - 12), std::string_view("\r\n2\r\n \n\r\n0\r"),
                                       std::string_view("\n"), std::string_view("\r\n")}) {
    std::this_thread::sleep_for(200ms);  // each piece in a read of its own
    REQUIRE(c.send(piece));
  }
  CHECK(test::status_of(c.read_until("\r\n\r\n", 20s)) == 200);
}

TEST_CASE("fields Beast cannot hold or too many of them get an answer, not a crash: a 64 KiB trailer, 101 fields, a header limit past 64 KiB") {
  const auto secret = test::random_secret();
  test::receiver r(test::broker().brokers, test::fresh_topic("recv_fields", 1), secret);
  const std::string head =
      "POST /webhooks/clerk HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n" + test::forged_header_lines() + "\r\n";
  {
    // Beast stores a field's value in at most 65,533 bytes and throws past
    // that, from inside a read's completion: a trailer that long, whole in
    // the read buffer, would end the process.
    test::raw_conn c(r.port());
    REQUIRE(c.send(head + "0\r\nX-Trailer: "));
    c.send(std::string(65534, 'a'));
    c.send("\r\n\r\n");
    CHECK(test::status_of(c.read_until("\r\n\r\n", 10s)) == 400);
  }
  // Fields cost Beast an allocation each: many tiny ones would multiply a
  // header's bytes in memory, held while the body is awaited.
  std::string many;
  for (int i = 0; i < 98; ++i) many += "x-f" + std::to_string(i) + ": 1\r\n";
  {
    // 100 with Host and Content-Length: read, and answered on its merits.
    test::raw_conn c(r.port());
    REQUIRE(c.send("POST /webhooks/clerk HTTP/1.1\r\nHost: x\r\n" + many + "Content-Length: 2\r\n\r\n{}"));
    const int status = test::status_of(c.read_until("\r\n\r\n", 10s));
    CHECK(status != 431);
    CHECK(status != 0);
  }
  many += "x-f98: 1\r\n";  // 101
  {
    test::raw_conn c(r.port());
    REQUIRE(c.send("POST /webhooks/clerk HTTP/1.1\r\nHost: x\r\n" + many + "Content-Length: 10\r\n\r\n"));
    CHECK(test::status_of(c.read_until("\r\n\r\n", 10s)) == 431);
  }
  {
    // As a trailer: refused as one (400), whatever its count.
    test::raw_conn c(r.port());
    REQUIRE(c.send(head + "0\r\n" + many + "\r\n"));
    CHECK(test::status_of(c.read_until("\r\n\r\n", 10s)) == 400);
  }
  CHECK(r.proc().wait_for_log("outcome=header_fields", 5s));
  CHECK(test::send_http(r.port(), "GET", "/healthz", {}, "").status == 200);
  // A header limit Beast could not honour is a bad setting.
  const auto res = test::run(test::binary_path("app/receiver/clerk-sync-receiver"), {"--header-limit", "65537"},
                             {{"CLERK_WEBHOOK_SECRET", secret}, {"CLERK_WEBHOOK_SECRET_FILE", ""}}, 10s);
  CHECK(res.status == 2);
  CHECK(res.err.find("--header-limit") != std::string::npos);
}

TEST_CASE("memory: clients declaring bodies just past a webhook's size cannot spend the budget a webhook needs") {
  const auto secret = test::random_secret();
  // 32 MiB and 1,024 connections: bodies of up to 16 KiB may use all of the
  // budget, larger ones share half of it.
  test::receiver r(test::broker().brokers, test::fresh_topic("recv_small_bodies", 1), secret,
                   {"--read-timeout-ms", "60000", "--max-connections", "1024", "--body-memory-budget",
                    std::to_string(32 * 1024 * 1024)});
  REQUIRE(r.wait_ready(20s));
  CHECK(r.proc().wait_for_log("small_body=16384", 5s));
  rlimit lim{};
  REQUIRE(getrlimit(RLIMIT_NOFILE, &lim) == 0);
  lim.rlim_cur = lim.rlim_max;
  REQUIRE(setrlimit(RLIMIT_NOFILE, &lim) == 0);
  // 1,000 clients, each declaring 64 KiB and sending one byte of it: twice
  // what reserves the whole budget if they counted as webhooks.
  const std::string header =
      "POST /webhooks/clerk HTTP/1.1\r\nHost: x\r\nContent-Length: 65536\r\n" + test::forged_header_lines() + "\r\nx";
  std::vector<std::unique_ptr<test::raw_conn>> conns;
  for (int i = 0; i < 1000; ++i) {
    conns.push_back(std::make_unique<test::raw_conn>(r.port()));
    REQUIRE(conns.back()->send(header));
  }
  // 256 of them fit in the large bodies' half; the rest are told 503.
  std::vector<int> status(conns.size(), 0);
  std::size_t busy = 0;
  for (const auto until = std::chrono::steady_clock::now() + 20s; busy < 744 && std::chrono::steady_clock::now() < until;) {
    std::this_thread::sleep_for(100ms);
    for (std::size_t i = 0; i < conns.size(); ++i)
      if (status[i] == 0 && (status[i] = test::status_of(conns[i]->read_until("\r\n\r\n", 0ms))) == 503) ++busy;
  }
  // And no more: the 256 held are still waiting for their bodies.
  std::this_thread::sleep_for(500ms);
  std::size_t held = 0;
  for (std::size_t i = 0; i < conns.size(); ++i) {
    if (status[i] == 0) status[i] = test::status_of(conns[i]->read_until("\r\n\r\n", 0ms));
    if (status[i] == 0) ++held;
  }
  MESSAGE(busy << " of 1,000 slow 64 KiB bodies answered 503, " << held << " held");
  CHECK(std::count(status.begin(), status.end(), 503) == 744);
  CHECK(held == 256);
  // Beside them, a webhook still finds memory.
  const auto e = test::sign_event(secret, test::user_event_body("user_beside_slow_bodies"));
  CHECK(test::post_event(r.port(), e, 20s).status == 200);
}

TEST_CASE("memory: a header of thousands of tiny fields is freed once answered 431, not held through the lingering close") {
  const auto secret = test::random_secret();
  test::receiver r(test::broker().brokers, test::fresh_topic("recv_field_flood", 1), secret);
  rlimit lim{};
  REQUIRE(getrlimit(RLIMIT_NOFILE, &lim) == 0);
  lim.rlim_cur = lim.rlim_max;
  REQUIRE(setrlimit(RLIMIT_NOFILE, &lim) == 0);
  // Under the 16 KiB header limit, so Beast parses every one of the 3,000
  // fields (an allocation each) before the count refuses them.
  std::string header = "POST /webhooks/clerk HTTP/1.1\r\nHost: x\r\n";
  for (int i = 0; i < 3000; ++i) header += "a:b\r\n";
  header += "Content-Length: 10\r\n\r\n";
  REQUIRE(header.size() < 16 * 1024);
  constexpr std::size_t n = 1500;
  std::vector<std::unique_ptr<test::raw_conn>> conns;
  std::size_t answered = 0;
  for (std::size_t i = 0; i < n; ++i) {
    conns.push_back(std::make_unique<test::raw_conn>(r.port()));
    REQUIRE(conns.back()->send(header));
    // Each is answered, then lingers: the client keeps it open.
    if (test::status_of(conns.back()->read_until("\r\n\r\n", 10s)) == 431) ++answered;
  }
  const auto rss = peak_rss_kib(r.proc().pid());
  MESSAGE(n << " lingering connections after 3,000-field headers: receiver peak RSS " << rss / 1024 << " MiB");
  CHECK(answered == n);
  CHECK(rss < 100 * 1024);  // each header's fields held would be over 300 MiB
  const auto e = test::sign_event(secret, test::user_event_body("user_after_fields"));
  CHECK(test::post_event(r.port(), e, 20s).status == 200);
}

TEST_CASE("a body whose end is unknown or ambiguous gets 400: Transfer-Encoding other than one bare chunked, with Content-Length, two Content-Lengths") {
  const auto secret = test::random_secret();
  test::receiver r(test::broker().brokers, test::fresh_topic("recv_framing", 1), secret);
  const auto e = test::sign_event(secret, test::user_event_body("user_framing"));
  const std::string len = std::to_string(e.body.size());
  // A coding before chunked would never be undone (the signature checked
  // over gzip's bytes); HTTP/1.0 with Transfer-Encoding must not keep its
  // connection (RFC 9112 6.1).
  const std::string v11 = "POST /webhooks/clerk HTTP/1.1\r\nHost: x\r\n";
  for (const std::string& request :
       {v11 + "Transfer-Encoding: gzip\r\n", v11 + "Transfer-Encoding: gzip\r\nContent-Length: " + len + "\r\n",
        v11 + "Transfer-Encoding: chunked\r\nContent-Length: " + len + "\r\n",
        v11 + "Content-Length: " + len + "\r\nContent-Length: " + std::to_string(e.body.size() + 1) + "\r\n",
        v11 + "Transfer-Encoding: gzip, chunked\r\n", v11 + "Transfer-Encoding: gzip\r\nTransfer-Encoding: chunked\r\n",
        v11 + "Transfer-Encoding: chunked;q=1\r\n",
        std::string("POST /webhooks/clerk HTTP/1.0\r\nHost: x\r\nConnection: keep-alive\r\nTransfer-Encoding: chunked\r\n")}) {
    CAPTURE(request);
    test::raw_conn c(r.port());
    REQUIRE(c.send(request + header_lines(e) + "\r\n" + e.body));
    CHECK(test::status_of(c.read_until("\r\n\r\n", 10s)) == 400);
    CHECK(c.closed_within(10s));  // the body is never read as a request of its own
  }
  CHECK(r.proc().stderr_text().find("msg=published") == std::string::npos);
  CHECK(r.proc().wait_for_log("outcome=transfer_encoding", 5s));
}

TEST_CASE("a chunked body's trailer is refused, never read as headers, and bare chunked with no trailer is published") {
  const auto secret = test::random_secret();
  test::receiver r(test::broker().brokers, test::fresh_topic("recv_trailer", 1), secret);
  REQUIRE(r.wait_ready(20s));
  const auto chunked = [](const std::string& body) {
    std::ostringstream hex;
    hex << std::hex << body.size();
    return hex.str() + "\r\n" + body + "\r\n0\r\n";
  };
  const std::string head = "POST /webhooks/clerk HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n";
  {
    // The signature only in the trailer: Beast would add it to the header's
    // fields, and a proxy's rules on svix-* headers would never have seen it.
    const auto e = test::sign_event(secret, test::user_event_body("user_trailer"));
    test::raw_conn c(r.port());
    REQUIRE(c.send(head + "\r\n" + chunked(e.body) + header_lines(e) + "\r\n"));
    CHECK(test::status_of(c.read_until("\r\n\r\n", 10s)) == 400);
    CHECK(c.closed_within(10s));
  }
  {
    const auto e = test::sign_event(secret, test::user_event_body("user_trailer_extra"));
    test::raw_conn c(r.port());
    REQUIRE(c.send(head + header_lines(e) + "\r\n" + chunked(e.body) + "X-Extra: 1\r\n\r\n"));
    CHECK(test::status_of(c.read_until("\r\n\r\n", 10s)) == 400);
  }
  CHECK(r.proc().stderr_text().find("msg=published") == std::string::npos);
  CHECK(r.proc().wait_for_log("outcome=trailer", 5s));
  const auto e = test::sign_event(secret, test::user_event_body("user_chunked"));
  test::raw_conn c(r.port());
  REQUIRE(c.send(head + header_lines(e) + "\r\n" + chunked(e.body) + "\r\n"));
  CHECK(test::status_of(c.read_until("\r\n\r\n", 20s)) == 200);
}

TEST_CASE("a body of 1-byte chunks costs parsing, not a trip through the event loop per byte") {
  // Before the parser was eager, Beast parsed one chunk line or one chunk
  // per read, each read a trip through the event loop: 1 MiB sent as 1-byte
  // chunks by an unauthenticated client cost the receiver about 0.5 s of
  // CPU, 20,000 times a webhook; now about 20 ms (MESSAGE below). The
  // bound leaves room for a loaded machine and still catches the old cost.
  const auto secret = test::random_secret();
  test::receiver r(test::broker().brokers, test::fresh_topic("recv_tiny_chunks", 1), secret);
  REQUIRE(r.wait_ready(20s));
  std::string body;
  body.reserve(6u * 1024 * 1024);
  for (std::size_t i = 0; i < 1024 * 1024 - 16; ++i) body += "1\r\nx\r\n";
  body += "0\r\n\r\n";
  const auto before = cpu_time(r.proc().pid());
  test::raw_conn c(r.port());
  REQUIRE(c.send("POST /webhooks/clerk HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n" +
                 test::forged_header_lines() + "\r\n" + body));
  CHECK(test::status_of(c.read_until("\r\n\r\n", 30s)) == 401);
  // Refused for its forged signature, which is decided only once the whole
  // body is read: no early answer (a chunk error, say) cut the work short.
  CHECK(r.proc().wait_for_log("outcome=no_matching_signature", 5s));
  const auto spent = cpu_time(r.proc().pid()) - before;
  MESSAGE("1 MiB in 1-byte chunks: " << spent.count() << " ms of receiver CPU");
  CHECK(spent < 250ms);  // all its threads' time, in 10 ms ticks, on a loaded machine too
}

TEST_CASE("a flood of unsigned requests is logged per kind at most once a minute, with every one counted, and signed deliveries each get their line") {
  const auto secret = test::random_secret();
  test::receiver r(test::broker().brokers, test::fresh_topic("recv_flood_log", 1), secret);
  REQUIRE(r.wait_ready(20s));
  auto forged = test::sign_event(test::random_secret(), test::user_event_body("user_forged"));
  constexpr int n = 300;
  for (int i = 0; i < n; ++i) CHECK(test::post_event(r.port(), forged).status == 401);
  for (int i = 0; i < 20; ++i) CHECK(test::send_http(r.port(), "GET", "/nowhere", {}, "").status == 404);
  std::vector<std::string> ids;
  for (int i = 0; i < 3; ++i) {
    const auto e = test::sign_event(secret, test::user_event_body("user_flood_" + std::to_string(i)));
    CHECK(test::post_event(r.port(), e).status == 200);
    ids.push_back(e.id);
  }
  // Signed by the real secret but not an event: a delivery all the same, each with its line.
  std::vector<std::string> unusable;
  for (int i = 0; i < 3; ++i) {
    const auto e = test::sign_event(secret, "not json " + std::to_string(i));
    CHECK(test::post_event(r.port(), e).status == 400);
    unusable.push_back(e.id);
  }
  r.proc().signal(SIGTERM);
  REQUIRE(r.proc().wait(30s) == 0);
  const std::string log = r.proc().stderr_text();
  std::istringstream lines(log);
  std::size_t rejected_lines = 0, rejected = 0, not_found = 0;
  for (std::string l; std::getline(lines, l);) {
    const auto count = [&] {
      const auto at = l.find(" repeated=");
      return 1 + (at == std::string::npos ? 0 : std::stoull(l.substr(at + 10)));
    };
    if (l.find("msg=rejected") != std::string::npos && l.find("outcome=no_matching_signature") != std::string::npos) {
      ++rejected_lines;
      rejected += count();
      // A secret that no longer matches Clerk's looks like this: at warn.
      CHECK_MESSAGE(l.find(" level=warn ") != std::string::npos, l);
    }
    if (l.find("msg=not_found") != std::string::npos) {
      not_found += count();
      CHECK_MESSAGE(l.find(" level=info ") != std::string::npos, l);
    }
  }
  MESSAGE(n << " forged requests: " << rejected_lines << " lines");
  CHECK(rejected_lines == 2);  // the first at once, the rest in one line at stop
  CHECK(rejected == n);        // every one accounted for
  CHECK(not_found == 20);
  for (const auto& id : ids) CHECK(log.find("msg=published svix_id=" + id) != std::string::npos);
  for (const auto& id : unusable) CHECK(log.find("msg=rejected svix_id=" + id) != std::string::npos);
}

TEST_CASE("a signed body nested 200,000 levels deep gets 400 and the receiver lives") {
  const auto secret = test::random_secret();
  test::receiver r(test::broker().brokers, test::fresh_topic("recv_deep", 1), secret);
  std::string deep = R"({"type":"user.created","data":{"id":"user_deep","x":)";
  deep += std::string(200'000, '[') + std::string(200'000, ']') + "}}";
  const auto res = test::post_event(r.port(), test::sign_event(secret, deep));
  CHECK(res.status == 400);
  CHECK(r.proc().running());
  CHECK(test::send_http(r.port(), "GET", "/healthz", {}, "").status == 200);
  CHECK(r.proc().wait_for_log("outcome=too_deep", 5s));
}

TEST_CASE("early answers reach the client: a whole 2 MiB upload reads its 413, Expect: 100-continue gets 100 then 200") {
  const auto secret = test::random_secret();
  test::receiver r(test::broker().brokers, test::fresh_topic("recv_early", 1), secret);
  REQUIRE(r.wait_ready(20s));
  const std::string big(2 * 1024 * 1024, 'x');
  {
    test::raw_conn c(r.port());
    CHECK(c.send("POST /webhooks/clerk HTTP/1.1\r\nHost: x\r\nContent-Length: " + std::to_string(big.size()) +
                 "\r\n\r\n" + big));
    CHECK(test::status_of(c.read_until("\r\n\r\n", 10s)) == 413);
  }
  {
    test::raw_conn c(r.port());  // chunked: the limit is found half-way through
    std::string chunked =
        "POST /webhooks/clerk HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n" + test::forged_header_lines() + "\r\n";
    for (std::size_t i = 0; i < 32; ++i) chunked += "10000\r\n" + std::string(0x10000, 'y') + "\r\n";
    chunked += "0\r\n\r\n";
    CHECK(c.send(chunked));
    CHECK(test::status_of(c.read_until("\r\n\r\n", 10s)) == 413);
  }
  {
    test::raw_conn c(r.port());  // 100-continue for an acceptable header, then the real answer
    const auto e = test::sign_event(secret, test::user_event_body("user_expect"));
    CHECK(c.send("POST /webhooks/clerk HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nContent-Length: " +
                 std::to_string(e.body.size()) + "\r\n" + header_lines(e) + "\r\n"));
    CHECK(c.read_until("\r\n\r\n", 10s).starts_with("HTTP/1.1 100 Continue\r\n\r\n"));
    CHECK(c.send(e.body));
    CHECK(test::status_of(c.read_until("\r\n\r\n", 20s)) == 200);
  }
  {
    test::raw_conn c(r.port());  // the final status at once for a header that is not acceptable
    CHECK(c.send("POST /webhooks/clerk HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nContent-Length: " +
                 std::to_string(big.size()) + "\r\n\r\n"));
    CHECK(test::status_of(c.read_until("\r\n\r\n", 10s)) == 413);
  }
  {
    test::raw_conn c(r.port());
    CHECK(c.send("POST /elsewhere HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nContent-Length: 10\r\n\r\n"));
    CHECK(test::status_of(c.read_until("\r\n\r\n", 10s)) == 404);
  }
  // Signature headers that no body can verify: the final status at once,
  // before any of the body is sent (and no 100), as classify() would give
  // it once the body were read; the body budget is not touched.
  const auto real = test::sign_event(secret, test::user_event_body("user_unread"));
  const auto without = [&](const std::string& name) {
    std::string s;
    for (const auto& [k, v] : real.headers)
      if (k != name) s += k + ": " + v + "\r\n";
    return s;
  };
  const auto stale = std::to_string(std::stoll(real.headers.at("svix-timestamp")) - 3600);
  const std::array<std::tuple<std::string, int, std::string>, 5> unread{{
      {without("svix-signature"), 400, "missing_header"},
      {without("svix-timestamp") + "svix-timestamp: " + stale + "\r\n", 401, "timestamp_too_old"},
      {without("svix-signature") + "svix-signature: v1,c2lnbmF0dXJl v2," + std::string(44, 'A') + "\r\n", 401,
       "no_matching_signature"},
      {without("svix-signature") + "svix-signature: garbage\r\n", 400, "malformed_signature"},
      {without("svix-signature") + "svix-signature: " + real.headers.at("svix-signature") + "\r\n", 0, ""},
  }};
  for (const auto& [lines, status, outcome] : unread) {
    CAPTURE(outcome);
    test::raw_conn c(r.port());
    CHECK(c.send("POST /webhooks/clerk HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nContent-Length: " +
                 std::to_string(big.size() / 2) + "\r\n" + lines + "\r\n"));
    const auto answer = c.read_until("\r\n\r\n", 10s);
    if (status == 0) {  // the real signature, for a body it does not sign: read, then refused
      CHECK(answer.starts_with("HTTP/1.1 100 Continue\r\n\r\n"));
      continue;
    }
    CHECK(test::status_of(answer) == status);
    // The line classify() would give it: a 401 at warn (a secret that no
    // longer matches must be seen), its svix-id.
    REQUIRE(r.proc().wait_for_log("outcome=" + outcome, 5s));
    const auto line = test::line_with(r.proc().stderr_text(), "outcome=" + outcome);
    CHECK(line.find(status == 401 ? "level=warn msg=rejected" : "level=info msg=rejected") != std::string::npos);
    CHECK(line.find("svix_id=" + real.headers.at("svix-id")) != std::string::npos);
    CHECK(line.find("status=" + std::to_string(status)) != std::string::npos);
  }
  {
    test::raw_conn c(r.port());  // HTTP/1.0 has no 100 (Continue): the final answer only
    const auto e = test::sign_event(secret, test::user_event_body("user_expect10"));
    CHECK(c.send("POST /webhooks/clerk HTTP/1.0\r\nHost: x\r\nExpect: 100-continue\r\nContent-Length: " +
                 std::to_string(e.body.size()) + "\r\n" + header_lines(e) + "\r\n" + e.body));
    CHECK(test::status_of(c.read_until("\r\n\r\n", 20s)) == 200);
  }
  {
    test::raw_conn c(r.port());  // a HEAD answered before its body is read: no body either
    CHECK(c.send("HEAD /elsewhere HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\n"));
    const std::string answer = c.read_until("never sent", 10s);
    CHECK(test::status_of(answer) == 404);
    REQUIRE(answer.find("\r\n\r\n") != std::string::npos);
    CHECK(answer.substr(answer.find("\r\n\r\n") + 4).empty());
  }
  CHECK(r.proc().running());
}

TEST_CASE("one size contract: a body at the limit fits in a record, and one Kafka refuses as too large gets 413, not 503") {
  const auto secret = test::random_secret();
  const auto brokers = test::broker().brokers;
  // A topic sized for the receiver's records (what clerk-sync-ctl topic ensure sets).
  const std::string roomy = test::unique_name("recv_size_roomy");
  REQUIRE(kafka::create_topic(test::broker(), {roomy, 1, 1, {{"max.message.bytes", "2097152"}}}, 15s) ==
          kafka::create_outcome::created);
  {
    test::receiver r(brokers, roomy, secret);
    REQUIRE(r.wait_ready(20s));
    const auto at_limit = test::post_event(r.port(), test::sign_event(secret, body_of_size("user_at_limit", 1024 * 1024)));
    CHECK(at_limit.status == 200);
  }
  // The broker's default limit (about 1 MiB) and a receiver allowed 2 MiB bodies.
  const auto plain = test::fresh_topic("recv_size_plain", 1);
  test::receiver r(brokers, plain, secret, {"--body-limit", std::to_string(2 * 1024 * 1024)});
  REQUIRE(r.wait_ready(20s));
  const auto res = test::post_event(r.port(), test::sign_event(secret, body_of_size("user_big", 1536 * 1024)));
  CHECK(res.status == 413);
  CHECK(r.proc().wait_for_log("outcome=too_large_for_kafka", 5s));
  CHECK(r.proc().stderr_text().find("error=") != std::string::npos);  // librdkafka's reason, logged
  // The producer lives on.
  CHECK(test::post_event(r.port(), test::sign_event(secret, test::user_event_body("user_after"))).status == 200);
}

TEST_CASE("settings that would let the HTTP deadline beat Kafka's verdict, disagree on sizes or weaken the producer stop start-up with exit 2") {
  const auto secret = test::random_secret();
  const auto exe = test::binary_path("app/receiver/clerk-sync-receiver");
  const std::map<std::string, std::string> env{{"CLERK_WEBHOOK_SECRET", secret}, {"CLERK_WEBHOOK_SECRET_FILE", ""}};
  for (const auto& args : std::vector<std::vector<std::string>>{
           {"--publish-deadline-ms", "2000"},
           {"--kafka-property", "message.timeout.ms=9000"},
           {"--kafka-property", "message.max.bytes=100000"},
           {"--body-memory-budget", "1000"},
           // Large bodies share half of it: one at the limit must fit there.
           {"--body-memory-budget", std::to_string(1536 * 1024)},
           // What the producer fixes, under its own name or an alias, is not silently overridden.
           {"--kafka-property", "acks=1"},
           {"--kafka-property", "request.required.acks=0"},
           {"--kafka-property", "delivery.timeout.ms=9000"},  // message.timeout.ms under its alias
           {"--kafka-property", "enable.idempotence=false"},
           {"--kafka-property", "allow.auto.create.topics=true"},
           // No token source: the producer would never connect, and say nothing.
           {"--kafka-property", "security.protocol=SASL_PLAINTEXT", "--kafka-property", "sasl.mechanisms=OAUTHBEARER"}}) {
    CAPTURE(args.back());
    const auto res = test::run(exe, args, env, 10s);
    CHECK(res.status == 2);
    CHECK(std::count(res.err.begin(), res.err.end(), '\n') == 1);
    if (args.back().starts_with("acks") || args.back().starts_with("request"))
      CHECK(res.err.find("clerk-sync sets acks=all itself") != std::string::npos);
    if (args.back().starts_with("delivery")) CHECK(res.err.find("set those instead") != std::string::npos);
    if (args.back().starts_with("sasl")) CHECK(res.err.find("OAUTHBEARER needs") != std::string::npos);
    if (args.front() == "--body-memory-budget")
      CHECK(res.err.find("must be at least twice --body-limit") != std::string::npos);
  }
}

TEST_CASE("a folded header line is refused before Beast joins it, a blank line between requests is skipped once, "
          "an absolute-form target routes, and a request line past 8 KiB is read") {
  const auto secret = test::random_secret();
  const auto topic = test::fresh_topic("recv_fold", 1);
  test::receiver r(test::broker().brokers, topic, secret, {"--read-timeout-ms", "1500"});
  REQUIRE(r.wait_ready(20s));
  // Folding (RFC 9112 5.2): a proxy that forwards the fold and does not
  // read it as framing would see no body length where Beast reads 67 bytes.
  const auto folded = [&](const std::string& user, const std::string& framing) {
    const auto e = test::sign_event(secret, test::user_event_body(user));
    test::raw_conn c(r.port());
    REQUIRE(c.send("POST /webhooks/clerk HTTP/1.1\r\nHost: x\r\n" + header_lines(e) + framing + e.body +
                   "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n"));
    CHECK(test::status_of(c.read_until("\r\n\r\n", 10s)) == 400);
    CHECK(c.closed_within(10s));  // and the request after it is never answered
  };
  folded("user_fold_cl", "Content-Length:\r\n " + std::to_string(test::user_event_body("user_fold_cl").size()) +
                             "\r\n\r\n");
  folded("user_fold_te", "Transfer-Encoding:\r\n\tchunked\r\n\r\n");
  CHECK(r.proc().wait_for_log("outcome=obs_fold", 5s));
  // A fold past the header limit's first 16 KiB: refused as too large,
  // never read on by Beast unlooked-at.
  {
    std::string head = "POST /webhooks/clerk HTTP/1.1\r\nHost: x\r\nX-Pad: ";
    head += std::string(16 * 1024 - head.size(), 'a');
    test::raw_conn c(r.port());
    REQUIRE(c.send(head + "\r\nContent-Length:\r\n 5\r\n\r\nhelloGET /healthz HTTP/1.1\r\nHost: x\r\n\r\n"));
    CHECK(test::status_of(c.read_until("\r\n\r\n", 10s)) == 431);
    CHECK(c.closed_within(10s));
  }
  CHECK(r.proc().stderr_text().find("msg=published") == std::string::npos);
  // A bad request line is answered as soon as it is whole, not at the read timeout.
  {
    test::raw_conn c(r.port());
    REQUIRE(c.send("GET / HTTP/2.0\r\n"));
    CHECK(test::status_of(c.read_until("\r\n\r\n", 1s)) == 400);
  }

  // A CRLF after a body (some clients send one) is no request: no
  // unprompted 400, and the connection serves the next webhook.
  const auto first = test::sign_event(secret, test::user_event_body("user_crlf_1"));
  const auto second = test::sign_event(secret, test::user_event_body("user_crlf_2"));
  const auto request = [](const test::signed_event& e, const std::string& target) {
    return "POST " + target + " HTTP/1.1\r\nHost: x\r\n" + header_lines(e) +
           "Content-Length: " + std::to_string(e.body.size()) + "\r\n\r\n" + e.body;
  };
  test::raw_conn c(r.port());
  REQUIRE(c.send(request(first, "/webhooks/clerk") + "\r\n"));
  CHECK(test::status_of(c.read_until("}", 10s)) == 200);
  // Past the read timeout (1.5 s here): the connection waits as an idle one.
  CHECK(c.read_until("HTTP/", 2500ms).empty());
  REQUIRE(c.send("\r\n\r\n" + request(second, "http://receiver.example/webhooks/clerk?from=proxy")));
  CHECK(test::status_of(c.read_until("}", 10s)) == 200);
  // A request line longer than Beast's default header limit (8 KiB) but
  // within the receiver's (16 KiB), whole in the second read (8 KiB, then
  // 512 bytes) and the header's end not: a request line is checked on its
  // own as soon as it is whole, by the limit the receiver sets, not Beast's
  // default, which refused it as malformed (400).
  const auto third = test::sign_event(secret, test::user_event_body("user_long_line"));
  const std::string long_target = "/webhooks/clerk?pad=" + std::string(8300, 'a');
  REQUIRE(c.send("POST " + long_target + " HTTP/1.1\r\nHost: x\r\nX-Pad: " + std::string(600, 'b') + "\r\n" +
                 header_lines(third) + "Content-Length: " + std::to_string(third.body.size()) + "\r\n\r\n" +
                 third.body));
  CHECK(test::status_of(c.read_until("}", 10s)) == 200);
  CHECK(test::read_topic(test::broker().brokers, topic).size() == 3);  // the three, and nothing folded
  // Blank lines alone, twice in a row between requests: each wait would
  // start the idle timeout afresh, so the second closes the connection.
  REQUIRE(c.send("\r\n"));
  CHECK_FALSE(c.closed_within(2500ms));  // skipped once: still open past the read timeout, no answer
  REQUIRE(c.send("\r\n"));
  CHECK(c.closed_within(5s));
  CHECK(r.proc().wait_for_log("msg=idle_closed outcome=blank_lines", 5s));

  // Malformed framing says what Beast found, so that a probe can be told from a broken client.
  test::raw_conn bad(r.port());
  REQUIRE(bad.send("POST /webhooks/clerk HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello!"));
  CHECK(test::status_of(bad.read_until("\r\n\r\n", 10s)) == 400);
  CHECK(r.proc().wait_for_log(R"(outcome=bad_request error="header: )", 5s));
  // A request cut off by its client leaves a line too.
  {
    test::raw_conn cut(r.port());
    REQUIRE(cut.send("POST /webhooks/clerk HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n" + test::forged_header_lines() +
                     "\r\n{\"type\""));
  }
  CHECK(r.proc().wait_for_log("msg=read_incomplete stage=body", 5s));
}

TEST_CASE("an HTTP/1.1 request without Host, or any with two Host lines, gets 400 and is never published") {
  // RFC 9112 3.2: a server MUST answer 400 to either. A proxy in front that
  // routes by one Host line would otherwise disagree with us on another.
  const auto secret = test::random_secret();
  const auto topic = test::fresh_topic("recv_host", 1);
  test::receiver r(test::broker().brokers, topic, secret);
  REQUIRE(r.wait_ready(20s));
  const auto send = [&](const std::string& version, const std::string& host_lines, const std::string& user) {
    const auto e = test::sign_event(secret, test::user_event_body(user));
    test::raw_conn c(r.port());
    REQUIRE(c.send("POST /webhooks/clerk " + version + "\r\n" + host_lines + header_lines(e) +
                   "Content-Length: " + std::to_string(e.body.size()) + "\r\n\r\n" + e.body));
    return test::status_of(c.read_until("}", 10s));
  };
  CHECK(send("HTTP/1.1", "", "user_no_host") == 400);
  CHECK(send("HTTP/1.1", "Host: a\r\nHost: b\r\n", "user_two_hosts") == 400);
  CHECK(send("HTTP/1.0", "Host: a\r\nHost: a\r\n", "user_two_hosts_10") == 400);
  CHECK(r.proc().wait_for_log("outcome=host", 5s));
  // HTTP/1.0 has no Host requirement; one Host line is what Svix sends.
  CHECK(send("HTTP/1.0", "", "user_host_10") == 200);
  CHECK(send("HTTP/1.1", "Host: a\r\n", "user_host_11") == 200);
  CHECK(test::read_topic(test::broker().brokers, topic).size() == 2);
}

TEST_CASE("a signature header given twice gets 400 and is never published, whichever copy the signature matches") {
  // Each of svix-id, svix-timestamp and svix-signature has one value. With
  // two lines, this receiver checked and published the first, while a proxy
  // or a log in front may read the other (or join them, as Node does):
  // two readings of one delivery. Refused instead, before the body is read.
  const auto secret = test::random_secret();
  const auto topic = test::fresh_topic("recv_repeated", 1);
  test::receiver r(test::broker().brokers, topic, secret);
  REQUIRE(r.wait_ready(20s));
  const auto send = [&](const std::string& user, const std::string& before, const std::string& after) {
    const auto e = test::sign_event(secret, test::user_event_body(user));
    test::raw_conn c(r.port());
    REQUIRE(c.send("POST /webhooks/clerk HTTP/1.1\r\nHost: x\r\n" + before + header_lines(e) + after +
                   "Content-Length: " + std::to_string(e.body.size()) + "\r\n\r\n" + e.body));
    return c.read_until("}", 10s);
  };
  const std::string other_sig = "v1," + std::string(43, 'A') + "=\r\n";
  for (const auto& [before, after] : std::vector<std::pair<std::string, std::string>>{
           {"", "svix-id: msg_other\r\n"},
           {"SVIX-ID: msg_other\r\n", ""},
           {"", "svix-timestamp: 1\r\n"},
           {"svix-signature: " + other_sig, ""},
           {"", "Svix-Signature: " + other_sig},
           {"", "webhook-id: a\r\nwebhook-id: b\r\n"}}) {
    INFO(before << after);
    const auto answer = send("user_repeated", before, after);
    CHECK(test::status_of(answer) == 400);
    CHECK(answer.find("given twice") != std::string::npos);
  }
  {
    test::raw_conn c(r.port());  // no body: the header alone decides
    REQUIRE(c.send("POST /webhooks/clerk HTTP/1.1\r\nHost: x\r\nsvix-id: a\r\nsvix-id: b\r\nContent-Length: 0\r\n\r\n"));
    CHECK(c.read_until("}", 10s).find("given twice") != std::string::npos);
  }
  CHECK(r.proc().wait_for_log("msg=rejected status=400 outcome=repeated_signature_header", 5s));
  // One of each, and webhook-* beside svix-* (the svix-* are read), are fine.
  CHECK(test::status_of(send("user_once", "", "")) == 200);
  CHECK(test::status_of(send("user_both_names", "webhook-id: msg_x\r\n", "")) == 200);
  const auto records = test::read_topic(test::broker().brokers, topic);
  CHECK(records.size() == 2);
}

TEST_CASE("a request its client resets mid-way leaves a read_incomplete line, as one it closes does") {
  // A reset (RST, as a client killed or a load balancer giving up sends)
  // is a request cut off by its client too: without its line, the lines and
  // their `repeated` counts would no longer be all the requests there were.
  const auto secret = test::random_secret();
  const auto topic = test::fresh_topic("recv_reset", 1);
  test::receiver r(test::broker().brokers, topic, secret);
  REQUIRE(r.wait_ready(20s));
  const auto reset_after = [&](const std::string& bytes) {
    test::raw_conn c(r.port());
    REQUIRE(c.send(bytes));
    std::this_thread::sleep_for(200ms);  // read by the receiver before the reset
    const linger abort_on_close{1, 0};
    REQUIRE(::setsockopt(c.fd(), SOL_SOCKET, SO_LINGER, &abort_on_close, sizeof abort_on_close) == 0);
  };  // closed here: with a zero linger, a reset
  // A connection reset before its first byte is no request: no line.
  { test::raw_conn idle(r.port()); }
  {
    test::raw_conn c(r.port());
    const linger abort_on_close{1, 0};
    REQUIRE(::setsockopt(c.fd(), SOL_SOCKET, SO_LINGER, &abort_on_close, sizeof abort_on_close) == 0);
  }
  reset_after("POST /webhooks/clerk HTTP/1.1\r\nHost: x\r\nContent-Le");
  CHECK(r.proc().wait_for_log("msg=read_incomplete stage=header", 5s));
  reset_after("POST /webhooks/clerk HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n" + test::forged_header_lines() +
              "\r\n{\"type\"");
  CHECK(r.proc().wait_for_log("msg=read_incomplete stage=body", 5s));
  // Lines of a kind are rate-limited: what was held back is written with
  // its count at stop, so the lines and their counts are every request.
  r.proc().signal(SIGTERM);
  REQUIRE(r.proc().wait(30s) == 0);
  std::size_t requests = 0;
  for (const auto& l : test::lines_of(r.proc().stderr_text()))
    if (l.find("msg=read_incomplete") != std::string::npos)
      requests += 1 + std::stoull(l.substr(l.find(" repeated=") + 10));
  CHECK_MESSAGE(requests == 2, r.proc().stderr_text());
  CHECK(test::read_topic(test::broker().brokers, topic).empty());
}

TEST_CASE("a close in any Connection line closes the connection after the answer, as RFC 9112 9.6 requires") {
  // Beast's message::keep_alive() reads the first Connection line only; its
  // parser reads them all, but lets an HTTP/1.0 "keep-alive" outweigh a
  // "close". A close anywhere must close.
  const auto secret = test::random_secret();
  const auto topic = test::fresh_topic("recv_conn_close", 1);
  test::receiver r(test::broker().brokers, topic, secret);
  REQUIRE(r.wait_ready(20s));
  int n = 0;
  for (const auto& [version, connection] :
       {std::pair{"HTTP/1.1", "Connection: keep-alive\r\nConnection: close\r\n"},
        std::pair{"HTTP/1.0", "Connection: keep-alive\r\nConnection: close\r\n"},
        std::pair{"HTTP/1.0", "Connection: keep-alive, close\r\n"}}) {
    INFO(version << " " << connection);
    const auto e = test::sign_event(secret, test::user_event_body("user_conn_close_" + std::to_string(++n)));
    test::raw_conn c(r.port());
    REQUIRE(c.send(std::string("POST /webhooks/clerk ") + version + "\r\nHost: x\r\n" + connection +
                   header_lines(e) + "Content-Length: " + std::to_string(e.body.size()) + "\r\n\r\n" + e.body));
    const auto answer = c.read_until("}", 10s);
    CHECK(test::status_of(answer) == 200);
    CHECK(answer.find("Connection: close") != std::string::npos);
    CHECK(c.closed_within(5s));
  }
  CHECK(test::read_topic(test::broker().brokers, topic).size() == 3);
}
