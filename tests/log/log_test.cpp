#include "log/log.hpp"

#include <doctest/doctest.h>

#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <cstdio>
#include <limits>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "support/support.hpp"

using clerk_sync::log::format;
using clerk_sync::log::format_line;
using clerk_sync::log::level;
using clerk_sync::test::capture_stderr;

TEST_CASE("logfmt quotes only what needs quoting and escapes control bytes") {
  const auto line = format_line(format::logfmt, level::info, "T", "published",
                                {{"svix_id", "msg_1"}, {"user", "user 2"}, {"partition", 3}, {"ok", true},
                                 {"why", "a\"b\nc=d"}});
  CHECK(line == R"(ts=T level=info msg=published svix_id=msg_1 user="user 2" partition=3 ok=true why="a\"b\nc=d")");
}

TEST_CASE("logfmt renders an empty value as a quoted empty string") {
  CHECK(format_line(format::logfmt, level::warn, "T", "m", {{"k", ""}}) == R"(ts=T level=warn msg=m k="")");
}

TEST_CASE("json lines are objects with escaped strings and typed numbers") {
  const auto line =
      format_line(format::json, level::error, "T", "kafka_down", {{"ms", 12}, {"reason", "tab\there"}});
  CHECK(line == R"({"ts":"T","level":"error","msg":"kafka_down","ms":12,"reason":"tab\there"})");
}

TEST_CASE("format and level names parse, anything else does not") {
  CHECK(clerk_sync::log::parse_format("json") == format::json);
  CHECK_FALSE(clerk_sync::log::parse_format("JSON").has_value());
  CHECK(clerk_sync::log::parse_level("warn") == level::warn);
  CHECK_FALSE(clerk_sync::log::parse_level("verbose").has_value());
}

TEST_CASE("invalid UTF-8 and control bytes are escaped alike in both formats, valid UTF-8 passes") {
  const std::string bad = "a\xff" "b\x01" "\xc3\xa9" "\xed\xa0\x80" "\xc0\xaf";
  CHECK(clerk_sync::log::escape(format::logfmt, bad) == R"("a\xffb\x01é\xed\xa0\x80\xc0\xaf")");
  CHECK(clerk_sync::log::escape(format::json, bad) == R"("a\\xffb\u0001é\\xed\\xa0\\x80\\xc0\\xaf")");
  CHECK(clerk_sync::log::escape(format::logfmt, "plain") == "plain");
  // Valid UTF-8 that a terminal acts on: a C1 CSI, a right-to-left override.
  const std::string acted = "x\xc2\x9b" "31m" "\xe2\x80\xae" "y\xc2\xa0";
  CHECK(clerk_sync::log::escape(format::logfmt, acted) == "\"x\\u009b31m\\u202ey\xc2\xa0\"");
  CHECK(clerk_sync::log::escape(format::json, acted) == "\"x\\u009b31m\\u202ey\xc2\xa0\"");
  // What starts a line in some viewers (U+2028, U+2029) or reorders it (U+061C).
  const std::string breaks = "a\xe2\x80\xa8msg=forged\xe2\x80\xa9\xd8\x9c";
  CHECK(clerk_sync::log::escape(format::logfmt, breaks) == R"("a\u2028msg=forged\u2029\u061c")");
  CHECK(clerk_sync::log::escape(format::json, breaks) == R"("a\u2028msg=forged\u2029\u061c")");
  // A truncated sequence at the very end is not read past the string.
  CHECK(clerk_sync::log::escape(format::json, "x\xe2\x82") == R"("x\\xe2\\x82")");
}

TEST_CASE("request-derived fields are cut at 200 bytes and marked, others at the general limit") {
  const std::string long_id(15'000, 'a');
  const auto line = format_line(format::logfmt, level::warn, "T", "rejected", {{"svix_id", long_id}});
  CHECK(line == "ts=T level=warn msg=rejected svix_id=\"" + std::string(200, 'a') + "...[cut 14800 bytes]\"");
  const std::string reason(3'000, 'r');
  const auto other = format_line(format::json, level::warn, "T", "m", {{"reason", reason}});
  CHECK(other.size() < 2'200);
  CHECK(other.find("[cut 952 bytes]") != std::string::npos);
  const std::string user(200, 'u');
  CHECK(format_line(format::logfmt, level::info, "T", "m", {{"user", user}}).find("cut") == std::string::npos);
}

TEST_CASE("cut never ends inside a UTF-8 sequence") {
  const std::string s = std::string(199, 'a') + "\xc3\xa9" + "zz";  // é straddles byte 200
  CHECK(clerk_sync::log::cut(s, 200) == std::string(199, 'a') + "...[cut 4 bytes]");
  CHECK(clerk_sync::log::cut("short", 200) == "short");
}

TEST_CASE("the rate limiter writes the first line, then one a period, and the last one held once its key is quiet") {
  // Every line written goes through the log, to stderr: capture it.
  const capture_stderr cap;
  using std::chrono::seconds;
  const auto t0 = std::chrono::steady_clock::time_point{} + std::chrono::hours(1);
  std::uint64_t total = 0;
  {
    clerk_sync::log::rate_limiter rl(seconds(60));
    auto line = [&](std::string_view key, int n, seconds at) {
      ++total;
      rl.write(key, level::warn, "refused", {{"n", n}}, t0 + at);
    };
    line("a", 1, seconds(0));   // written, repeated=0
    line("a", 2, seconds(1));   // held
    line("b", 3, seconds(2));   // keys are independent: written
    line("a", 4, seconds(59));  // held
    rl.flush(t0 + seconds(59)); // "a" wrote a line 59 s ago: nothing yet
    line("a", 5, seconds(61));  // written, repeated=2 (n=2 and n=4 never shown)
    line("a", 6, seconds(62));  // held
    line("a", 7, seconds(63));  // held
    rl.flush(t0 + seconds(100));  // a period since "a" last wrote? 61 + 60 > 100: not yet
    rl.flush(t0 + seconds(121));  // yes: n=7, repeated=1 (n=6 not shown)
    rl.flush(t0 + seconds(300));  // nothing more held
    line("b", 8, seconds(400));   // written, repeated=0
    line("b", 9, seconds(401));   // held, written when the limiter goes
  }
  const std::string out = cap.text();
  const std::vector<std::string> want = {"msg=refused n=1 repeated=0", "msg=refused n=3 repeated=0",
                                         "msg=refused n=5 repeated=2", "msg=refused n=7 repeated=1 seen_at=",
                                         "msg=refused n=8 repeated=0", "msg=refused n=9 repeated=0 seen_at="};
  std::size_t at = 0, lines = 0, sum = 0;
  for (const auto& w : want) {
    const auto found = out.find(w, at);
    REQUIRE_MESSAGE(found != std::string::npos, "missing, or out of order: " << w << "\n" << out);
    at = found + w.size();
  }
  std::istringstream in(out);
  for (std::string l; std::getline(in, l);) {
    ++lines;
    sum += std::stoull(l.substr(l.find("repeated=") + 9));
  }
  CHECK(lines == want.size());
  CHECK(lines + sum == total);  // nothing lost, nothing counted twice
}

TEST_CASE("flush_all, the flusher thread's call, reaches every live limiter, and drain_all takes what is not due") {
  const capture_stderr cap;
  using std::chrono::seconds;
  // Lines written in the past, so that "a period has passed" needs no sleep.
  const auto t = std::chrono::steady_clock::now() - seconds(10);
  clerk_sync::log::rate_limiter a(seconds(5)), b(std::chrono::hours(1));
  a.write("k", level::error, "accept_failed", {{"error", "first"}}, t);
  a.write("k", level::error, "accept_failed", {{"error", "second"}}, t + seconds(1));  // held
  a.write("k", level::debug, "accept_failed", {{"error", "third"}}, t + seconds(2));   // held
  b.write("k", level::warn, "refused", {{"n", 1}}, t);
  b.write("k", level::warn, "refused", {{"n", 2}}, t + seconds(1));  // held for an hour
  clerk_sync::log::rate_limiter::flush_all();
  std::string out = cap.text();
  // The latest line, at the most severe level held (debug is below the threshold).
  CHECK(out.find("level=error msg=accept_failed error=third repeated=1 seen_at=") != std::string::npos);
  CHECK(out.find("n=2") == std::string::npos);
  clerk_sync::log::rate_limiter::drain_all();
  out = cap.text();
  CHECK(out.find("msg=refused n=2 repeated=0 seen_at=") != std::string::npos);
}

TEST_CASE("the rate limiter past max_keys writes what it holds before it forgets") {
  const capture_stderr cap;
  const auto t0 = std::chrono::steady_clock::time_point{} + std::chrono::hours(1);
  {
    clerk_sync::log::rate_limiter rl(std::chrono::seconds(60), 2);
    rl.write("a", level::warn, "m", {{"n", 1}}, t0);
    rl.write("a", level::warn, "m", {{"n", 2}}, t0);  // held
    rl.write("b", level::warn, "m", {{"n", 3}}, t0);
    rl.write("c", level::warn, "m", {{"n", 4}}, t0);  // a third key: n=2 goes out first
    CHECK(cap.text().find("n=2 repeated=0 seen_at=") < cap.text().find("n=4 repeated=0"));
  }
  std::istringstream in(cap.text());
  int lines = 0;
  for (std::string l; std::getline(in, l);) ++lines;
  CHECK(lines == 4);
}

TEST_CASE("doubles are numbers in both formats: null for NaN and infinity, every digit of a huge one") {
  CHECK(format_line(format::json, level::info, "T", "m", {{"ms", 1.5}}) == R"({"ts":"T","level":"info","msg":"m","ms":1.500})");
  CHECK(format_line(format::json, level::info, "T", "m", {{"ms", std::numeric_limits<double>::quiet_NaN()}}) ==
        R"({"ts":"T","level":"info","msg":"m","ms":null})");
  CHECK(format_line(format::logfmt, level::info, "T", "m", {{"ms", std::numeric_limits<double>::infinity()}}) ==
        "ts=T level=info msg=m ms=null");
  CHECK(format_line(format::json, level::info, "T", "m", {{"ms", 1e300}}) ==
        R"({"ts":"T","level":"info","msg":"m","ms":1.0000000000000001e+300})");
  // printf's %.3f below 1e15 and %.17g from there, to the byte: signs,
  // ties, the boundary, the extremes.
  const auto ms = [](double d) {
    const auto line = format_line(format::logfmt, level::info, "T", "m", {{"ms", d}});
    return line.substr(line.find("ms=") + 3);
  };
  CHECK(ms(-0.0) == "-0.000");
  CHECK(ms(-1e-4) == "-0.000");
  CHECK(ms(0.0625) == "0.062");
  CHECK(ms(0.0005) == "0.001");
  CHECK(ms(999999999999999.9) == "999999999999999.875");
  CHECK(ms(1e15) == "1000000000000000");
  CHECK(ms(1e17) == "1e+17");
  CHECK(ms(5e-324) == "0.000");
  CHECK(ms(std::numeric_limits<double>::max()) == "1.7976931348623157e+308");
}

// A line and its newline go out in one write: another writer to stderr
// (a library, a progress line) never lands inside a line or glues its text
// to a line's last value.
TEST_CASE("each line is written whole, whatever else writes to stderr meanwhile") {
  const capture_stderr cap;
  std::atomic<bool> stop{false};
  std::atomic<int> foreign{0};
  std::thread other([&] {
    while (!stop) {
      std::fputs("other\n", stderr);
      ++foreign;
    }
  });
  while (foreign < 100) std::this_thread::yield();
  for (int i = 0; i < 20000; ++i) clerk_sync::log::info("line", {{"i", i}});
  stop = true;
  other.join();
  int lines = 0;
  for (const auto& l : clerk_sync::test::lines_of(cap.text())) {
    if (l == "other") continue;
    ++lines;
    INFO(l);
    REQUIRE(l.starts_with("ts="));
    REQUIRE(l.find(" level=info msg=line i=") != std::string::npos);
    REQUIRE(l.find("other") == std::string::npos);
  }
  CHECK(lines == 20000);
}

TEST_CASE("a stream is journald's only when JOURNAL_STREAM names its device and inode") {
  std::FILE* file = std::tmpfile();
  std::FILE* other = std::tmpfile();
  REQUIRE(file != nullptr);
  REQUIRE(other != nullptr);
  struct stat st {};
  REQUIRE(::fstat(fileno(file), &st) == 0);
  const auto named = std::to_string(st.st_dev) + ":" + std::to_string(st.st_ino);
  CHECK(clerk_sync::log::is_journal_stream(fileno(file), named.c_str()));
  CHECK_FALSE(clerk_sync::log::is_journal_stream(fileno(other), named.c_str()));  // another file on the same device
  CHECK_FALSE(clerk_sync::log::is_journal_stream(fileno(file), nullptr));
  CHECK_FALSE(clerk_sync::log::is_journal_stream(fileno(file), ""));
  CHECK_FALSE(clerk_sync::log::is_journal_stream(fileno(file), (named + "x").c_str()));
  CHECK_FALSE(clerk_sync::log::is_journal_stream(fileno(file), std::to_string(st.st_dev).c_str()));
  CHECK_FALSE(clerk_sync::log::is_journal_stream(-1, named.c_str()));
  std::fclose(other);
  std::fclose(file);
}
