// clerk-sync-ctl verify-token as an operator runs it: a valid token prints
// its claims and exits 0; a refused one prints the reason word and exits 1;
// bad key settings exit 2. Keys are generated at run time.
#include <doctest/doctest.h>

#include <algorithm>
#include <fstream>

#include "support/process.hpp"
#include "support/support.hpp"
#include "token/jwt.hpp"
#include "token/signer.hpp"

using namespace clerk_sync;

namespace {

std::filesystem::path ctl() { return test::binary_path("app/ctl/clerk-sync-ctl"); }

const std::map<std::string, std::string> clean_env = {
    {"CLERK_JWT_KEY_FILE", ""}, {"CLERK_JWKS_FILE", ""}, {"CLERK_AUTHORIZED_PARTIES", ""}, {"CLERK_ISSUER", ""},
    {"CLERK_CLOCK_SKEW_S", ""},  {"CLERK_ALLOW_PENDING", ""}};

std::int64_t now_s() {
  return std::chrono::duration_cast<std::chrono::seconds>(std::chrono::system_clock::now().time_since_epoch())
      .count();
}

std::string payload(std::int64_t exp_offset, const std::string& azp = "https://app.example") {
  const auto t = now_s();
  return R"({"azp":")" + azp + R"(","exp":)" + std::to_string(t + exp_offset) + R"(,"iat":)" +
         std::to_string(t - 10) + R"(,"sid":"sess_2x","sub":"user_2x"})";
}

void write(const std::filesystem::path& p, const std::string& text) { std::ofstream(p) << text; }

}  // namespace

TEST_CASE("verify-token: claims and exit 0, or the reason and exit 1") {
  const test::rsa_signer signer;
  test::temp_dir dir;
  write(dir / "key.pem", signer.public_pem());
  write(dir / "jwks.json", R"({"keys":[)" + signer.jwk("ins_a") + "]}");
  const std::string header = R"({"alg":"RS256","kid":"ins_a","typ":"JWT"})";
  const std::string good = signer.sign(header, payload(300));
  const std::vector<std::string> pem = {"verify-token", "--jwt-key-file", (dir / "key.pem").string(),
                                        "--authorized-party", "https://app.example"};

  auto with = [&](std::vector<std::string> args, const std::string& tok) {
    args.push_back(tok);
    return test::run(ctl(), args, clean_env);
  };
  const auto ok = with(pem, good);
  INFO(ok.out << ok.err);
  CHECK(ok.status == 0);
  CHECK(ok.out.find(R"("sub":"user_2x")") != std::string::npos);
  CHECK(ok.out.find(R"("sid":"sess_2x")") != std::string::npos);

  const auto expired = with(pem, signer.sign(header, payload(-120)));
  CHECK(expired.status == 1);
  CHECK(expired.out.rfind("expired: exp ", 0) == 0);

  const auto azp = with(pem, signer.sign(header, payload(300, "https://evil.example")));
  CHECK(azp.status == 1);
  CHECK(azp.out.rfind("bad_azp:", 0) == 0);

  const auto hs = with(pem, test::sign_hs256(R"({"alg":"HS256"})", payload(300), signer.public_pem()));
  CHECK(hs.status == 1);
  CHECK(hs.out.rfind("unsupported_alg:", 0) == 0);

  // The token as an Authorization field holds it, read as clerk-sync-auth
  // reads one: "Bearer " spelled so, or nothing else in the field.
  CHECK(with(pem, "Bearer " + good).status == 0);
  const auto lower = with(pem, "bearer " + good);
  CHECK(lower.status == 1);
  CHECK(lower.out.rfind("bad_authorization:", 0) == 0);
  // The issuer is trimmed and checked as clerk-sync-auth does: a trailing
  // '/' could match no token.
  auto with_iss = pem;
  with_iss.insert(with_iss.end(), {"--issuer", "https://clerk.example.com "});
  const auto issued = signer.sign(header, R"({"iss":"https://clerk.example.com",)" + payload(300).substr(1));
  CHECK(with(with_iss, issued).status == 0);
  CHECK(with(with_iss, good).status == 1);  // no iss
  with_iss.back() = "https://clerk.example.com/";
  CHECK(with(with_iss, issued).status == 2);

  // A browser extension's origin is an authorized party as a site's is
  // (Clerk's Chrome extension SDK puts it in azp); a path still is not.
  const std::string extension = "chrome-extension://abcdefghijklmnopabcdefghijklmnop";
  const auto from_extension = signer.sign(header, payload(300, extension));
  CHECK(with({"verify-token", "--jwt-key-file", (dir / "key.pem").string(), "--authorized-party", extension},
             from_extension).status == 0);
  CHECK(with(pem, from_extension).status == 1);
  CHECK(with({"verify-token", "--jwt-key-file", (dir / "key.pem").string(), "--authorized-party", extension + "/x"},
             from_extension).status == 2);
  // So is an app shell's (a Capacitor or Tauri app's web view sends its own
  // scheme as the Origin); a scheme is still a scheme.
  const std::string app = "capacitor://localhost";
  CHECK(with({"verify-token", "--jwt-key-file", (dir / "key.pem").string(), "--authorized-party", app},
             signer.sign(header, payload(300, app))).status == 0);
  CHECK(with({"verify-token", "--jwt-key-file", (dir / "key.pem").string(), "--authorized-party",
              "capacitor://localhost:80"},
             signer.sign(header, payload(300, "capacitor://localhost:80"))).status == 0);  // 80 is http's
  // A scheme no browser or app shell sends (a typo of https) would refuse
  // every token: it stops the command.
  for (const auto* bad : {"Capacitor://localhost", "htps://app.example", "capacitor://", "capacitor://localhost/"})
    CHECK_MESSAGE(with({"verify-token", "--jwt-key-file", (dir / "key.pem").string(), "--authorized-party", bad},
                       from_extension).status == 2,
                  bad);

  // A wider skew accepts what the default refuses.
  auto skewed = pem;
  skewed.insert(skewed.end(), {"--clock-skew-s", "600"});
  CHECK(with(skewed, signer.sign(header, payload(-120))).status == 0);

  // The environment's commas may be followed by spaces.
  auto spaced = clean_env;
  spaced["CLERK_AUTHORIZED_PARTIES"] = "https://other.example, https://app.example";
  CHECK(test::run(ctl(), {"verify-token", "--jwt-key-file", (dir / "key.pem").string(), good}, spaced).status == 0);

  // JWKS from the environment; the token from stdin is not supported by
  // test::run, so the kid path is checked with the token as an argument.
  auto env = clean_env;
  env["CLERK_JWKS_FILE"] = (dir / "jwks.json").string();
  CHECK(test::run(ctl(), {"verify-token", good}, env).status == 0);
  const auto kid = test::run(ctl(), {"verify-token", signer.sign(R"({"alg":"RS256","kid":"ins_b"})", payload(300))},
                             env);
  CHECK(kid.status == 1);
  CHECK(kid.out.rfind("unknown_kid:", 0) == 0);
  CHECK(kid.err.find("ins_b") == std::string::npos);
  // The kid is read before any signature is checked: whoever hands the
  // operator a token must not write to their terminal through it.
  const auto hostile = test::run(
      ctl(), {"verify-token", signer.sign(R"({"alg":"RS256","kid":"\u001b[31mX\r\nok: valid"})", payload(300))}, env);
  CHECK(hostile.status == 1);
  CHECK(hostile.out.find('\x1b') == std::string::npos);
  CHECK(hostile.out.find('\r') == std::string::npos);
  CHECK(std::count(hostile.out.begin(), hostile.out.end(), '\n') == 1);
  CAPTURE(hostile.out);
  CHECK(hostile.out.find(R"(kid "\u001b[31mX\r\nok: valid")") != std::string::npos);
}

TEST_CASE("verify-token: key settings are checked before any token") {
  test::temp_dir dir;
  write(dir / "junk.pem", "not a key");
  CHECK(test::run(ctl(), {"verify-token", "x.y.z"}, clean_env).status == 2);
  const auto junk = test::run(ctl(), {"verify-token", "--jwt-key-file", (dir / "junk.pem").string(), "x.y.z"},
                              clean_env);
  CHECK(junk.status == 2);
  CHECK(junk.err.find("junk.pem") != std::string::npos);
  CHECK(test::run(ctl(), {"verify-token", "--jwt-key-file", (dir / "none.pem").string(), "x.y.z"}, clean_env)
            .status == 2);
  // An azp is an origin: a path, a trailing '/' or no scheme can match no
  // token, so each stops the command instead of refusing every token.
  for (const char* bad : {"https://app.example/", "https://app.example/app", "app.example", "ftp://app.example",
                          "https://", "https://user@app.example", "https://App.example", "HTTPS://app.example",
                          "https://app.example:", "https://app.example:443", "http://app.example:80"}) {
    const auto r = test::run(ctl(), {"verify-token", "--jwt-key-file", (dir / "junk.pem").string(),
                                     "--authorized-party", bad, "x.y.z"},
                             clean_env);
    CHECK_MESSAGE(r.status == 2, bad);
    CHECK_MESSAGE(r.err.find("is not an origin") != std::string::npos, bad);
  }
  CHECK(test::run(ctl(), {"verify-token", "--help"}, clean_env).out.find("--authorized-party") !=
        std::string::npos);
}
