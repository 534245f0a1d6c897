#include "config/secrets.hpp"

#include <doctest/doctest.h>

#include <fstream>

#include "config/options.hpp"
#include "support/support.hpp"

namespace config = clerk_sync::config;

TEST_CASE("secrets come from the variable or the file, exactly one, and errors never echo them") {
  const std::string a = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
  CHECK(config::load_secrets(a + ",whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD", "").size() == 2);
  CHECK_THROWS_AS((void)config::load_secrets(std::nullopt, ""), config::usage_error);
  CHECK_THROWS_AS((void)config::load_secrets(std::string("whsec_"), ""), config::usage_error);
  clerk_sync::test::temp_dir dir;
  const auto file = dir / "secrets";
  std::ofstream(file) << a << "\n";
  CHECK(config::load_secrets(std::nullopt, file.string()).size() == 1);
  CHECK_THROWS_AS((void)config::load_secrets(a, file.string()), config::usage_error);
  CHECK_THROWS_AS((void)config::load_secrets(std::nullopt, (dir / "missing").string()), config::usage_error);
  // The file variable set to the secret itself (or to a name that may be
  // one): the message names the variable, not its value.
  for (const std::string& wrong : {a, std::string("MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw")}) {
    try {
      (void)config::load_secrets(std::nullopt, wrong);
      FAIL("no throw");
    } catch (const config::usage_error& e) {
      CHECK(std::string(e.what()).find("MfKQ9r8G") == std::string::npos);
      CHECK(std::string(e.what()).find("CLERK_WEBHOOK_SECRET_FILE") != std::string::npos);
    }
  }
  std::ofstream(dir / "two") << a << " whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD\n";
  CHECK_THROWS_WITH_AS((void)config::load_secrets(std::nullopt, (dir / "two").string()),
                       doctest::Contains("one secret a line"), config::usage_error);
  try {
    (void)config::load_secrets(std::nullopt, dir.path().string());
    FAIL("no throw");
  } catch (const config::usage_error& e) {
    CHECK(std::string(e.what()).find("is a directory") != std::string::npos);
  }
  try {
    (void)config::load_secrets(std::string("whsec_TOPSECRET!!"), "");
    FAIL("no throw");
  } catch (const config::usage_error& e) {
    CHECK(std::string(e.what()).find("TOPSECRET") == std::string::npos);
  }
}
