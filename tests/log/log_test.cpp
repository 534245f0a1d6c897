#include "log/log.hpp"

#include <doctest/doctest.h>

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
