#include "http/options.hpp"

#include <doctest/doctest.h>

#include <fstream>

#include "support/support.hpp"

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

TEST_CASE("secrets come from the variable or the file, exactly one, and errors never echo them") {
  const std::string a = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
  CHECK(http::load_secrets(a + ",whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD", "").size() == 2);
  CHECK_THROWS_AS((void)http::load_secrets(std::nullopt, ""), usage_error);
  CHECK_THROWS_AS((void)http::load_secrets(std::string("whsec_"), ""), usage_error);
  clerk_sync::test::temp_dir dir;
  const auto file = dir / "secrets";
  std::ofstream(file) << a << "\n";
  CHECK(http::load_secrets(std::nullopt, file.string()).size() == 1);
  CHECK_THROWS_AS((void)http::load_secrets(a, file.string()), usage_error);
  CHECK_THROWS_AS((void)http::load_secrets(std::nullopt, (dir / "missing").string()), usage_error);
  try {
    (void)http::load_secrets(std::string("whsec_TOPSECRET!!"), "");
    FAIL("no throw");
  } catch (const usage_error& e) {
    CHECK(std::string(e.what()).find("TOPSECRET") == std::string::npos);
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
