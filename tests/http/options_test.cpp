#include "http/options.hpp"

#include <doctest/doctest.h>



namespace http = clerk_sync::http;
using clerk_sync::config::usage_error;

TEST_CASE("listen addresses: IPv4 and bracketed IPv6 with a port - anything else is a usage error") {
  CHECK(http::parse_listen("127.0.0.1:8080").port == 8080);
  CHECK(http::parse_listen("[::1]:9000").host == "::1");
  for (const std::string bad : {"127.0.0.1", "localhost:80", "127.0.0.1:0", "127.0.0.1:65536", ":80", "1.2.3:80",
                                "127.0.0.1:80x"}) {
    CAPTURE(bad);
    CHECK_THROWS_AS((void)http::parse_listen(bad), usage_error);
  }
}

TEST_CASE("validate: the publish deadline stays inside Svix's 15 s window") {
  http::receiver_options o;
  CHECK_NOTHROW(http::validate(o));
  o.publish_deadline_ms = 15'000;
  CHECK_THROWS_AS(http::validate(o), usage_error);
  o = {};
  o.path = "webhooks";
  CHECK_THROWS_AS(http::validate(o), usage_error);
}

TEST_CASE("validate: --tolerance is 1 to 3600 s - a larger one leaves a captured delivery valid for that long") {
  http::receiver_options o;
  o.tolerance_s = 3600;
  CHECK_NOTHROW(http::validate(o));
  for (const auto bad : {0, 3601, 1'000'000'000}) {
    CAPTURE(bad);
    o.tolerance_s = bad;
    CHECK_THROWS_AS(http::validate(o), usage_error);
  }
}

TEST_CASE("validate: --path is a path alone - with a query, a fragment or a space it would match no request") {
  http::receiver_options o;
  for (const std::string ok : {"/webhooks/clerk", "/hooks/clerk-v2", "/"}) {
    o.path = ok;
    CHECK_NOTHROW(http::validate(o));
  }
  for (const std::string bad : {"/webhooks/clerk?x=1", "/webhooks#clerk", "/webhooks clerk", "/webhooks/?", "/readyz"}) {
    CAPTURE(bad);
    o.path = bad;
    CHECK_THROWS_WITH_AS(http::validate(o), doctest::Contains("--path must"), usage_error);
  }
}
