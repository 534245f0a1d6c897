#include "log/log.hpp"

#include <doctest/doctest.h>

#include <limits>

using clerk_sync::log::format;
using clerk_sync::log::format_line;
using clerk_sync::log::level;

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
  CHECK(format_line(format::logfmt, level::info, "T", "m", {{"user", std::string(200, 'u')}}).find("cut") ==
        std::string::npos);
}

TEST_CASE("cut never ends inside a UTF-8 sequence") {
  const std::string s = std::string(199, 'a') + "\xc3\xa9" + "zz";  // é straddles byte 200
  CHECK(clerk_sync::log::cut(s, 200) == std::string(199, 'a') + "...[cut 4 bytes]");
  CHECK(clerk_sync::log::cut("short", 200) == "short");
}

TEST_CASE("the rate limiter lets the first through, then one a period with the count held back") {
  clerk_sync::log::rate_limiter rl(std::chrono::seconds(60));
  const auto t0 = std::chrono::steady_clock::time_point{} + std::chrono::hours(1);
  CHECK(rl.admit("a", t0) == 0u);
  CHECK_FALSE(rl.admit("a", t0 + std::chrono::seconds(1)).has_value());
  CHECK_FALSE(rl.admit("a", t0 + std::chrono::seconds(59)).has_value());
  CHECK(rl.admit("b", t0 + std::chrono::seconds(2)) == 0u);  // keys are independent
  CHECK(rl.admit("a", t0 + std::chrono::seconds(61)) == 2u);
  CHECK_FALSE(rl.admit("a", t0 + std::chrono::seconds(62)).has_value());
}

TEST_CASE("doubles are numbers in both formats: null for NaN and infinity, every digit of a huge one") {
  CHECK(format_line(format::json, level::info, "T", "m", {{"ms", 1.5}}) == R"({"ts":"T","level":"info","msg":"m","ms":1.500})");
  CHECK(format_line(format::json, level::info, "T", "m", {{"ms", std::numeric_limits<double>::quiet_NaN()}}) ==
        R"({"ts":"T","level":"info","msg":"m","ms":null})");
  CHECK(format_line(format::logfmt, level::info, "T", "m", {{"ms", std::numeric_limits<double>::infinity()}}) ==
        "ts=T level=info msg=m ms=null");
  CHECK(format_line(format::json, level::info, "T", "m", {{"ms", 1e300}}) ==
        R"({"ts":"T","level":"info","msg":"m","ms":1.0000000000000001e+300})");
}
