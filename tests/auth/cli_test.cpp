// clerk-sync-auth as an operator starts it: --help, one line and exit 2 for
// each bad setting, then the routes of a running instance on a loopback
// port (no broker needed: the database is made here).
#include <doctest/doctest.h>

#include <SQLiteCpp/SQLiteCpp.h>

#include <sys/socket.h>

#include <csignal>
#include <fstream>
#include <sstream>
#include <thread>

#include "receiver/harness.hpp"
#include "store/database.hpp"
#include "support/process.hpp"
#include "support/support.hpp"
#include "token/signer.hpp"

using namespace clerk_sync;
using namespace std::chrono_literals;

namespace {

std::filesystem::path auth_bin() { return test::binary_path("app/auth/clerk-sync-auth"); }

const std::map<std::string, std::string> clean_env = {{"CLERK_JWT_KEY_FILE", ""},     {"CLERK_JWKS_FILE", ""},
                                                      {"CLERK_AUTHORIZED_PARTIES", ""}, {"CLERK_SYNC_DB", ""},
                                                      {"CLERK_SYNC_AUTH_LISTEN", ""},   {"NOTIFY_SOCKET", ""},
                                                      {"CLERK_CLOCK_SKEW_S", ""},       {"CLERK_ALLOW_PENDING", ""},
                                                      {"CLERK_ISSUER", ""},             {"CLERK_SYNC_AUTH_PATH", ""}};

// clerk-sync-auth running on a loopback port with a fresh key and an empty
// database, `args` given; listening when constructed.
struct running_auth {
  explicit running_auth(const std::vector<std::string>& args) {
    std::ofstream(dir / "key.pem") << signer.public_pem();
    { store::database made(db); }
    auto env = clean_env;
    env["CLERK_JWT_KEY_FILE"] = (dir / "key.pem").string();
    env["CLERK_SYNC_DB"] = db;
    env["CLERK_SYNC_AUTH_LISTEN"] = "127.0.0.1:" + std::to_string(port);
    proc = std::make_unique<test::process>(auth_bin(), args, env);
    REQUIRE_MESSAGE(proc->wait_for_log("msg=listening", 15s), proc->stderr_text());
  }
  // A token of user_9's session sess_9, valid for five minutes.
  [[nodiscard]] std::string valid_token() const {
    const auto exp = std::chrono::duration_cast<std::chrono::seconds>(
                         std::chrono::system_clock::now().time_since_epoch()).count() + 300;
    return signer.sign(R"({"alg":"RS256"})",
                       R"({"exp":)" + std::to_string(exp) + R"(,"sid":"sess_9","sub":"user_9"})");
  }
  // The status of a check whose header holds `fields` ("Name: value\r\n" lines).
  [[nodiscard]] int check_with(const std::string& fields) const {
    test::raw_conn c(port);
    REQUIRE(c.send("GET /auth HTTP/1.1\r\nHost: auth\r\n" + fields + "Connection: close\r\n\r\n"));
    return test::status_of(c.read_until("\r\n\r\n", 10s));
  }
  test::rsa_signer signer;
  test::temp_dir dir;
  std::string db = (dir / "clerk-sync.db").string();
  int port = test::free_port();
  std::unique_ptr<test::process> proc;
};

}  // namespace

TEST_CASE("clerk-sync-auth: --help, and exit 2 with one line for each bad setting") {
  const auto help = test::run(auth_bin(), {"--help"}, clean_env);
  CHECK(help.status == 0);
  CHECK(help.out.find("CLERK_SYNC_AUTH_LISTEN") != std::string::npos);
  CHECK(help.out.find("--authorized-party") != std::string::npos);

  const test::rsa_signer signer;
  test::temp_dir dir;
  std::ofstream(dir / "key.pem") << signer.public_pem();
  std::ofstream(dir / "junk.pem") << "junk";
  const auto db = (dir / "clerk-sync.db").string();
  { store::database made(db); }
  const std::string key = (dir / "key.pem").string();
  const std::vector<std::vector<std::string>> bad = {
      {"--db", db},                                                           // no key
      {"--db", db, "--jwt-key-file", (dir / "junk.pem").string()},            // not a key
      {"--db", db, "--jwt-key-file", key, "--jwks-file", key},                // both
      {"--db", (dir / "none.db").string(), "--jwt-key-file", key},            // no database
      {"--db", db, "--jwt-key-file", key, "--listen", "localhost:80"},        // not numeric
      {"--db", db, "--jwt-key-file", key, "--path", "auth"},                  // not a path
      {"--db", db, "--jwt-key-file", key, "--clock-skew-s", "-1"},            // out of range
      {"--db", db, "--jwt-key-file", key, "--clock-skew-s", "nan"},           // passes a range check
      {"--db", db, "--jwt-key-file", key, "stray"},
      {"--db", db, "--jwt-key-file", key, "--authorized-party", "https://app.example/"},  // never an azp
      {"--db", db, "--jwt-key-file", key, "--authorized-party", "app.example"},
  };
  for (const auto& args : bad) {
    const auto r = test::run(auth_bin(), args, clean_env);
    INFO(args.back() << ": " << r.err);
    CHECK(r.status == 2);
    CHECK(std::count(r.err.begin(), r.err.end(), '\n') == 1);
  }

  // An address another process holds, or one not on this host (yet: an
  // interface that comes up late): exit 1, which systemd restarts, not 2.
  const test::held_port taken;
  for (const auto& listen : {"127.0.0.1:" + std::to_string(taken.port()), std::string("192.0.2.1:8081")}) {
    const auto r = test::run(auth_bin(), {"--db", db, "--jwt-key-file", key, "--listen", listen}, clean_env);
    INFO(listen << ": " << r.err);
    CHECK(r.status == 1);
    CHECK(test::count_of(r.err, "level=error") == 1);
    CHECK(r.err.find("msg=listen_failed") != std::string::npos);
  }

  // The unit's --db, and an environment file's CLERK_SYNC_DB naming another
  // file for the consumers: this service would read a file they no longer
  // write, also when only its folder differs (the unit's bind mount, and
  // the paths it maps, are options_test.cpp's).
  auto moved = clean_env;
  for (const auto& other : {std::string("/var/lib/clerk-sync/prod.db"), (dir / "v2" / "clerk-sync.db").string()}) {
    INFO(other);
    moved["CLERK_SYNC_DB"] = other;
    const auto r = test::run(auth_bin(), {"--db", db, "--jwt-key-file", key}, moved);
    CHECK(r.status == 2);
    CHECK(std::count(r.err.begin(), r.err.end(), '\n') == 1);
    CHECK_MESSAGE(r.err.find("name different files") != std::string::npos, r.err);
  }
  // The same file by another spelling is accepted.
  moved["CLERK_SYNC_DB"] = (dir / "." / "clerk-sync.db").string();
  moved["CLERK_SYNC_AUTH_LISTEN"] = "127.0.0.1:" + std::to_string(test::free_port());
  test::process same(auth_bin(), {"--db", db, "--jwt-key-file", key}, moved);
  CHECK_MESSAGE(same.wait_for_log("msg=listening", 15s), same.stderr_text());
  same.signal(SIGTERM);
  CHECK(same.wait(15s) == 0);
}

TEST_CASE("clerk-sync-auth: an issuer that no token's iss can equal stops start-up with exit 2") {
  // iss is compared exactly: an issuer with a trailing '/' (or a query, or
  // capitals) refuses every user as bad_issuer. Clerk's iss is its Frontend
  // API URL, an origin, or a proxy's URL with a path.
  const test::rsa_signer signer;
  test::temp_dir dir;
  std::ofstream(dir / "key.pem") << signer.public_pem();
  const auto db = (dir / "clerk-sync.db").string();
  { store::database made(db); }
  auto env = clean_env;
  env["CLERK_JWT_KEY_FILE"] = (dir / "key.pem").string();
  env["CLERK_SYNC_AUTH_LISTEN"] = "127.0.0.1:" + std::to_string(test::free_port());
  for (const std::string bad :
       {"https://clerk.example.com/", "https://app.example/__clerk/", "clerk.example.com",
        "https://clerk.example.com?x=1", "https://clerk.example.com#x", "HTTPS://clerk.example.com",
        "https://Clerk.example.com", "https://clerk.example.com:443", "https://clerk.example.com/a b"}) {
    for (const bool from_env : {false, true}) {
      INFO(bad << (from_env ? " in CLERK_ISSUER" : " as --issuer"));
      auto e = env;
      if (from_env) e["CLERK_ISSUER"] = bad;
      const auto r = test::run(auth_bin(), from_env ? std::vector<std::string>{"--db", db}
                                                    : std::vector<std::string>{"--db", db, "--issuer", bad},
                               e, 10s);
      CHECK(r.status == 2);
      CHECK(std::count(r.err.begin(), r.err.end(), '\n') == 1);
      CHECK_MESSAGE(r.err.find("is not an issuer") != std::string::npos, r.err);
    }
  }
  // Clerk's own spellings start, and let its tokens in.
  const auto exp = std::chrono::duration_cast<std::chrono::seconds>(
                       std::chrono::system_clock::now().time_since_epoch()).count() + 300;
  for (const std::string good :
       {"https://clerk.example.com", "https://name.clerk.accounts.dev", "https://app.example/__clerk"}) {
    INFO(good);
    auto e = env;
    e["CLERK_SYNC_DB"] = db;
    e["CLERK_ISSUER"] = " " + good;  // trimmed, as an authorized party is
    const int port = test::free_port();
    e["CLERK_SYNC_AUTH_LISTEN"] = "127.0.0.1:" + std::to_string(port);
    test::process p(auth_bin(), {}, e);
    REQUIRE_MESSAGE(p.wait_for_log("msg=listening", 15s), p.stderr_text());
    const auto tok = signer.sign(R"({"alg":"RS256"})", R"({"exp":)" + std::to_string(exp) + R"(,"iss":")" + good +
                                                           R"(","sid":"sess_9","sub":"user_9"})");
    CHECK(test::send_http(port, "GET", "/auth", {{"Authorization", "Bearer " + tok}}, "").status == 200);
    p.signal(SIGTERM);
    CHECK(p.wait(15s) == 0);
  }
}

TEST_CASE("clerk-sync-auth: routes, methods and the 401 header of a running instance") {
  running_auth a({"--path", "/check"});
  auto& auth = *a.proc;
  const auto& db = a.db;
  const int port = a.port;

  CHECK(test::send_http(port, "GET", "/healthz", {}, "").status == 200);
  CHECK(test::send_http(port, "GET", "/auth", {}, "").status == 404);
  CHECK(test::send_http(port, "POST", "/check", {}, "").status == 405);
  CHECK(test::send_http(port, "POST", "/healthz", {}, "").status == 405);
  CHECK_MESSAGE(auth.wait_for_log("msg=method_not_allowed status=405 outcome=method path=/healthz", 5s),
                auth.stderr_text());
  const auto none = test::send_http(port, "GET", "/check", {}, "");
  CHECK(none.status == 401);
  CHECK(none.headers.at("www-authenticate") == "Bearer error=\"invalid_token\"");
  const auto tok = a.valid_token();
  const auto ok = test::send_http(port, "GET", "/check?rd=/x", {{"Authorization", "Bearer " + tok}}, "");
  CHECK(ok.status == 200);
  CHECK(ok.headers.at("x-clerk-user-id") == "user_9");
  CHECK(ok.headers.at("x-clerk-session-id") == "sess_9");
  CHECK(ok.headers.at("x-clerk-role") == "spacer");
  // Each request let in has its own line; refused ones (anyone can send
  // junk through the proxy) share a rate-limited line per outcome.
  CHECK(test::send_http(port, "GET", "/check", {{"Authorization", "Bearer " + tok}}, "").status == 200);
  constexpr int junk = 200;
  for (int i = 0; i < junk; ++i)
    REQUIRE(test::send_http(port, "GET", "/check", {{"Authorization", "Bearer junk"}}, "").status == 401);

  // Another file moved over the path: every check answers 503 until a
  // restart, and so does /healthz, for a monitor that only asks it.
  const auto other = (a.dir / "other.db").string();
  { store::database made(other); }
  std::filesystem::rename(other, db);
  CHECK(test::send_http(port, "GET", "/healthz", {}, "").status == 503);
  CHECK(test::send_http(port, "GET", "/check", {{"Authorization", "Bearer " + tok}}, "").status == 503);
  CHECK(auth.wait_for_log("msg=healthz", 5s));

  auth.signal(SIGTERM);
  CHECK(auth.wait(15s) == 0);
  {
    // Once stopped, the held lines are written too: the lines written and
    // their `repeated` counts add up to the requests refused.
    const auto err = auth.stderr_text();
    std::istringstream lines(err);
    int let_in = 0, refused_lines = 0, refused = 0;
    for (std::string l; std::getline(lines, l);) {
      if (l.find("msg=auth status=200 ") != std::string::npos) ++let_in;
      if (l.find("msg=auth status=401 outcome=malformed ") == std::string::npos) continue;
      ++refused_lines;
      const auto at = l.find(" repeated=");
      REQUIRE_MESSAGE(at != std::string::npos, l);
      refused += 1 + std::stoi(l.substr(at + 10));
    }
    CHECK(let_in == 2);
    CHECK(refused_lines >= 1);
    CHECK(refused_lines <= 3);  // the first, the drained one, and one a minute (the test takes less)
    CHECK(refused == junk);
  }
  CHECK(auth.stderr_text().find("no_authorized_parties") != std::string::npos);
  CHECK(auth.stderr_text().find(tok.substr(tok.size() - 30)) == std::string::npos);
}

TEST_CASE("clerk-sync-auth: cookies in several fields are read as one, the first __session checked") {
  // A proxy may forward HTTP/2's cookie crumbs as separate fields; RFC 9113
  // 8.2.3 joins them with "; ", and so does the check. The first __session
  // is the one checked, as Clerk reads it, an empty one included.
  running_auth a({});
  const auto tok = a.valid_token();
  const auto with_cookies = [&](const std::string& fields) { return a.check_with(fields); };
  CHECK(with_cookies("Cookie: __client_uat=1\r\nCookie: __session=" + tok + "\r\n") == 200);
  CHECK(with_cookies("Cookie: __session=" + tok + "\r\nCookie: __session=junk\r\n") == 200);
  CHECK(with_cookies("Cookie: __session=junk\r\nCookie: __session=" + tok + "\r\n") == 401);
  CHECK(with_cookies("Cookie: __session=\r\nCookie: __session=" + tok + "\r\n") == 401);
  CHECK(with_cookies("Cookie: __session=; __session=" + tok + "\r\n") == 401);
  CHECK(with_cookies("Cookie: a=1\r\nCookie: b=2\r\n") == 401);
  a.proc->signal(SIGTERM);
  CHECK(a.proc->wait(15s) == 0);
}

TEST_CASE("clerk-sync-auth: two Authorization lines get 401 whichever holds a valid token, one gets 200") {
  // Authorization holds one credential. Checking the first while the
  // application behind the proxy may read the other would be two readings
  // of one request. Clerk's own authenticateRequest, given a Fetch request,
  // reads both joined with ", " and refuses them.
  running_auth a({});
  const auto tok = a.valid_token();
  const auto with_fields = [&](const std::string& fields) { return a.check_with(fields); };
  CHECK(with_fields("Authorization: Bearer " + tok + "\r\n") == 200);
  CHECK(with_fields("Authorization: Bearer " + tok + "\r\nAuthorization: Bearer junk\r\n") == 401);
  CHECK(with_fields("Authorization: Bearer junk\r\nauthorization: Bearer " + tok + "\r\n") == 401);
  CHECK(with_fields("Authorization: Bearer " + tok + "\r\nAuthorization: Bearer " + tok + "\r\n") == 401);
  // A cookie beside one Authorization line is no second credential: the
  // header wins, as in Clerk.
  CHECK(with_fields("Authorization: Bearer " + tok + "\r\nCookie: __session=junk\r\n") == 200);
  CHECK(a.proc->wait_for_log("msg=auth status=401 outcome=repeated_authorization", 5s));
  a.proc->signal(SIGTERM);
  CHECK(a.proc->wait(15s) == 0);
}

TEST_CASE("clerk-sync-auth: refusals of a verified token that point to its setup are warnings, rate-limited") {
  // An issuer spelled otherwise than Clerk's, a missing authorized party or
  // a host clock behind Clerk's refuses every user: an operator logging at
  // warn must see it. Still one rate-limited line per kind, so that a flood
  // cannot fill the journal; a token anyone can forge stays at info.
  running_auth a({"--issuer", "https://clerk.example.com", "--authorized-party", "https://app.example"});
  const auto now_s =
      std::chrono::duration_cast<std::chrono::seconds>(std::chrono::system_clock::now().time_since_epoch()).count();
  const auto token = [&](const std::string& azp, const std::string& iss, std::int64_t nbf, std::int64_t iat) {
    return a.signer.sign(R"({"alg":"RS256"})", R"({"azp":")" + azp + R"(","exp":)" + std::to_string(now_s + 300) +
                                                   R"(,"iat":)" + std::to_string(iat) + R"(,"iss":")" + iss +
                                                   R"(","nbf":)" + std::to_string(nbf) +
                                                   R"(,"sid":"sess_9","sub":"user_9"})");
  };
  const std::string app = "https://app.example", iss = "https://clerk.example.com";
  const std::vector<std::pair<std::string, std::string>> refused = {
      {"bad_issuer", token(app, "https://clerk.other.example", now_s - 10, now_s - 10)},
      {"bad_azp", token("https://other.example", iss, now_s - 10, now_s - 10)},
      {"not_yet_valid", token(app, iss, now_s + 600, now_s - 10)},
      {"issued_in_future", token(app, iss, now_s - 10, now_s + 600)},
      {"malformed", "junk"}};
  REQUIRE(a.check_with("Authorization: Bearer " + token(app, iss, now_s - 10, now_s - 10) + "\r\n") == 200);
  constexpr int times = 3;
  for (const auto& [outcome, tok] : refused)
    for (int i = 0; i < times; ++i) CHECK(a.check_with("Authorization: Bearer " + tok + "\r\n") == 401);
  for (const auto& [outcome, tok] : refused) {
    if (outcome == "malformed") continue;
    CHECK_MESSAGE(a.proc->wait_for_log("level=warn msg=auth status=401 outcome=" + outcome + " ", 5s), outcome);
  }
  a.proc->signal(SIGTERM);
  REQUIRE(a.proc->wait(15s) == 0);
  // Each kind's lines and their `repeated` counts add up to its requests.
  for (const auto& [outcome, tok] : refused) {
    INFO(outcome);
    const std::string level = outcome == "malformed" ? "level=info " : "level=warn ";
    int lines = 0, seen = 0;
    for (const auto& l : test::lines_of(a.proc->stderr_text())) {
      if (l.find(" msg=auth status=401 outcome=" + outcome + " ") == std::string::npos) continue;
      ++lines;
      CHECK(l.find(level) != std::string::npos);
      seen += 1 + std::stoi(l.substr(l.find(" repeated=") + 10));
    }
    CHECK(lines <= 2);
    CHECK(seen == times);
  }
}

TEST_CASE("clerk-sync-auth: a request it cannot check (too large, wrong path) leaves a line, never the token") {
  running_auth a({});
  auto& auth = *a.proc;
  const int port = a.port;

  // A client whose cookies pass the 16 KiB header limit: every check of it
  // fails (nginx answers 500), and the operator must learn why from here.
  const std::string token_like = "eyJhbGciOiJSUzI1NiJ9.secretpart.sig";
  const std::string cookies = "__session=" + token_like + "; big=" + std::string(17 * 1024, 'x');
  CHECK(test::send_http(port, "GET", "/auth", {{"Cookie", cookies}}, "").status == 431);
  CHECK_MESSAGE(auth.wait_for_log("msg=rejected status=431 outcome=header_limit", 5s), auth.stderr_text());
  // A proxy sending the check to another path (proxy_pass without a URI).
  CHECK(test::send_http(port, "GET", "/_clerk_auth?x=1", {{"Authorization", "Bearer " + token_like}}, "").status ==
        404);
  CHECK_MESSAGE(auth.wait_for_log("msg=not_found status=404 outcome=path path=/_clerk_auth ", 5s), auth.stderr_text());
  // A folded line is refused, as the receiver refuses it: a proxy that
  // drops the continuation passes on an empty Authorization, and the
  // application behind it may read another credential than the one checked.
  const auto tok = a.valid_token();
  CHECK(a.check_with("Authorization: Bearer " + tok + "\r\n") == 200);
  CHECK(a.check_with("Authorization:\r\n Bearer " + tok + "\r\n") == 400);
  CHECK_MESSAGE(auth.wait_for_log("msg=rejected status=400 outcome=obs_fold", 5s), auth.stderr_text());
  // At most 100 fields (Host and Connection are two of them).
  std::string many;
  for (int i = 0; i < 97; ++i) many += "X-A: b\r\n";
  CHECK(a.check_with(many + "Authorization: Bearer " + tok + "\r\n") == 200);
  CHECK(a.check_with(many + "X-A: b\r\nAuthorization: Bearer " + tok + "\r\n") == 431);
  CHECK_MESSAGE(auth.wait_for_log("msg=rejected status=431 outcome=header_fields", 5s), auth.stderr_text());

  auth.signal(SIGTERM);
  CHECK(auth.wait(15s) == 0);
  CHECK(auth.stderr_text().find("secretpart") == std::string::npos);
}

TEST_CASE("clerk-sync-auth: a close in any Connection line closes the connection after the answer") {
  // RFC 9112 9.6. Beast's message::keep_alive() reads the first Connection
  // line only, and its parser lets an HTTP/1.0 "keep-alive" outweigh a close.
  running_auth a({});
  for (const auto& [version, connection] :
       {std::pair{"HTTP/1.1", "Connection: keep-alive\r\nConnection: close\r\n"},
        std::pair{"HTTP/1.0", "Connection: keep-alive\r\nConnection: close\r\n"},
        std::pair{"HTTP/1.0", "Connection: keep-alive, close\r\n"}}) {
    const std::string request = std::string("GET /healthz ") + version + "\r\nHost: auth\r\n" + connection + "\r\n";
    INFO(request);
    test::raw_conn c(a.port);
    REQUIRE(c.send(request));
    CHECK(c.read_until("ok\n", 3s).starts_with(std::string(version) + " 200 "));
    CHECK(c.closed_within(3s));
  }
  // Keep-alive otherwise, HTTP/1.0's included.
  for (const std::string version : {"HTTP/1.1", "HTTP/1.0"}) {
    INFO(version);
    test::raw_conn c(a.port);
    REQUIRE(c.send("GET /healthz " + version + "\r\nHost: auth\r\nConnection: keep-alive\r\n\r\n"));
    CHECK(c.read_until("ok\n", 3s).starts_with(version + " 200 "));
    CHECK_FALSE(c.closed_within(300ms));
  }
  a.proc->signal(SIGTERM);
  CHECK(a.proc->wait(15s) == 0);
}

TEST_CASE("clerk-sync-auth: a request that declares a body gets 400 at once, Content-Length: 0 does not") {
  // A forward-auth check has no body; nginx sends none (and, configured as
  // the README says, no Content-Length either).
  running_auth a({});
  auto& auth = *a.proc;
  for (const std::string framing :
       {"Content-Length: 5\r\n\r\nhello", "Transfer-Encoding: chunked\r\n\r\n5\nhello",
        "Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n", "Transfer-Encoding: gzip\r\n\r\n",
        "Content-Length: 2000000\r\n\r\n"}) {
    INFO(framing);
    test::raw_conn c(a.port);
    REQUIRE(c.send("GET /auth HTTP/1.1\r\nHost: auth\r\n" + framing));
    // At once: not at the 10 s read timeout.
    CHECK(test::status_of(c.read_until("\r\n\r\n", 3s)) == 400);
    CHECK(c.closed_within(3s));
  }
  CHECK_MESSAGE(auth.wait_for_log("msg=rejected status=400 outcome=body", 5s), auth.stderr_text());

  test::raw_conn zero(a.port);
  for (int i = 0; i < 2; ++i) {
    REQUIRE(zero.send("GET /auth HTTP/1.1\r\nHost: auth\r\nContent-Length: 0\r\n\r\n"));
    CHECK(test::status_of(zero.read_until("unauthorized\n", 3s)) == 401);
  }
  auth.signal(SIGTERM);
  CHECK(auth.wait(15s) == 0);
  // Each of the five as `body` (one past Beast's 1 MiB body limit too), with
  // the rate-limited line's count.
  int bodies = 0;
  for (const auto& l : test::lines_of(auth.stderr_text()))
    if (l.find("msg=rejected status=400 outcome=body ") != std::string::npos)
      bodies += 1 + std::stoi(l.substr(l.find(" repeated=") + 10));
  CHECK_MESSAGE(bodies == 5, auth.stderr_text());
}

TEST_CASE("clerk-sync-auth: an early 400 reaches a client still sending its body, as the receiver's does") {
  // Answered before the client is done (a 4 MiB body), the connection
  // lingers: a close with the rest unread would reset it, and a client that
  // writes its whole request before reading (most do) would fail on the
  // write, never reading the answer.
  running_auth a({});
  {
    test::raw_conn c(a.port);
    CHECK(c.send("GET /auth HTTP/1.1\r\nHost: auth\r\nContent-Length: 4194304\r\n\r\n" +
                 std::string(4 * 1024 * 1024, 'x')));
    CHECK(test::status_of(c.read_until("\r\n\r\n", 5s)) == 400);
    CHECK(c.closed_within(5s));
  }
  // Still answering.
  test::raw_conn after(a.port);
  REQUIRE(after.send("GET /healthz HTTP/1.1\r\nHost: auth\r\n\r\n"));
  CHECK(test::status_of(after.read_until("ok\n", 5s)) == 200);
}

TEST_CASE("clerk-sync-auth: memory: a refused header of thousands of tiny fields is freed before the lingering close") {
  // Under the 16 KiB header limit, Beast parses each of the 2,600 fields (an
  // allocation each) before they are refused (over 100); the connection
  // then lingers for up to the read timeout, and must hold only its stream.
  running_auth a({});
  std::string header = "GET /auth HTTP/1.1\r\nHost: auth\r\n";
  for (int i = 0; i < 2600; ++i) header += "a:b\r\n";
  header += "Content-Length: 1\r\n\r\n";
  REQUIRE(header.size() < 16 * 1024);
  constexpr std::size_t n = 800;  // under the default soft limit of 1,024 descriptors, here and in auth
  std::vector<std::unique_ptr<test::raw_conn>> conns;
  std::size_t answered = 0;
  for (std::size_t i = 0; i < n; ++i) {
    conns.push_back(std::make_unique<test::raw_conn>(a.port));
    REQUIRE(conns.back()->send(header));
    // Each is answered, then lingers: the client keeps it open.
    if (test::status_of(conns.back()->read_until("\r\n\r\n", 10s)) == 431) ++answered;
  }
  std::size_t peak_kib = 0;
  {
    std::ifstream status("/proc/" + std::to_string(a.proc->pid()) + "/status");
    for (std::string line; std::getline(status, line);)
      if (line.starts_with("VmHWM:")) peak_kib = std::stoul(line.substr(6));
  }
  MESSAGE(n << " lingering connections after 2,600-field headers: auth peak RSS " << peak_kib / 1024 << " MiB");
  CHECK(answered == n);
  REQUIRE(peak_kib > 0);
  CHECK(peak_kib < 64 * 1024);  // each request held would be about 180 MiB
}

TEST_CASE("clerk-sync-auth: memory: headers of thousands of tiny fields that never end hold their bytes, not their fields") {
  // Beast reading the header itself parsed the lines as they came and kept
  // their fields: 4,000 empty fields sent in 16 pieces, the blank line never
  // sent, held about 240 KiB per connection until the read timeout (190 MiB
  // for these 800; how much depended on where the reads split the lines).
  running_auth a({});
  const std::string piece = [] {
    std::string p;
    for (int i = 0; i < 250; ++i) p += "a:\r\n";
    return p;
  }();
  constexpr std::size_t n = 800;
  std::vector<std::unique_ptr<test::raw_conn>> conns;
  for (std::size_t i = 0; i < n; ++i) {
    conns.push_back(std::make_unique<test::raw_conn>(a.port));
    // 29 bytes: the reads, of powers of two, end inside a line, which is
    // what cost (with 32, Beast's own reading held 34 MiB for all).
    REQUIRE(conns.back()->send("GET /auth HTTP/1.1\r\nHost: x\r\n"));
  }
  for (int round = 0; round < 16; ++round)  // 16,029 bytes: within the header limit, so waited for
    for (auto& c : conns) REQUIRE(c->send(piece));
  std::this_thread::sleep_for(1s);  // each read by now, over loopback
  std::size_t peak_kib = 0;
  {
    std::ifstream status("/proc/" + std::to_string(a.proc->pid()) + "/status");
    for (std::string line; std::getline(status, line);)
      if (line.starts_with("VmHWM:")) peak_kib = std::stoul(line.substr(6));
  }
  MESSAGE(n << " connections each 4,000 fields into a header: auth peak RSS " << peak_kib / 1024 << " MiB");
  REQUIRE(peak_kib > 0);
  CHECK(peak_kib < 64 * 1024);
  CHECK(a.proc->running());
}

TEST_CASE("clerk-sync-auth: a request cut off or timed out mid-way leaves a line, an idle connection none") {
  // A proxy's check that failed this way must leave a trace here; a proxy's
  // pooled connection that closes or times out between requests is normal.
  running_auth a({"--read-timeout-ms", "300"});
  auto& auth = *a.proc;
  const auto reset = [](test::raw_conn& c) {
    const linger abort_on_close{1, 0};
    REQUIRE(::setsockopt(c.fd(), SOL_SOCKET, SO_LINGER, &abort_on_close, sizeof abort_on_close) == 0);
  };  // closed by the caller's scope: with a zero linger, a reset
  { test::raw_conn closed(a.port); }
  {
    test::raw_conn c(a.port);
    reset(c);
  }
  {
    test::raw_conn silent(a.port);
    CHECK(silent.closed_within(5s));
  }
  {
    test::raw_conn kept(a.port);
    REQUIRE(kept.send("GET /healthz HTTP/1.1\r\nHost: auth\r\n\r\n"));
    CHECK(test::status_of(kept.read_until("ok\n", 5s)) == 200);
    CHECK(kept.closed_within(5s));  // idle after its answer, then timed out
  }

  {
    test::raw_conn slow(a.port);
    REQUIRE(slow.send("GET /auth HTTP/1.1\r\nHost: auth\r\n"));
    CHECK(slow.closed_within(5s));
  }
  CHECK_MESSAGE(auth.wait_for_log("msg=read_timeout stage=header outcome=closed", 5s), auth.stderr_text());
  {
    test::raw_conn cut(a.port);
    REQUIRE(cut.send("GET /auth HTTP/1.1\r\nHost: auth\r\nCookie: __sess"));
  }
  CHECK_MESSAGE(auth.wait_for_log("msg=read_incomplete stage=header", 5s), auth.stderr_text());

  auth.signal(SIGTERM);
  REQUIRE(auth.wait(15s) == 0);
  // The lines written and their `repeated` counts: the two requests, and
  // nothing from the idle connections.
  int timed_out = 0, incomplete = 0;
  for (const auto& l : test::lines_of(auth.stderr_text())) {
    const auto count = [&l] { return 1 + std::stoi(l.substr(l.find(" repeated=") + 10)); };
    if (l.find("msg=read_timeout") != std::string::npos) timed_out += count();
    if (l.find("msg=read_incomplete") != std::string::npos) incomplete += count();
  }
  CHECK_MESSAGE(timed_out == 1, auth.stderr_text());
  CHECK_MESSAGE(incomplete == 1, auth.stderr_text());

  // A request reset mid-way, in an instance of its own, so that its line is
  // the first of its kind (the others are held by the rate limit) and can
  // be waited for.
  running_auth b({"--read-timeout-ms", "300"});
  {
    test::raw_conn cut(b.port);
    REQUIRE(cut.send("GET /auth HTTP/1.1\r\nHost: auth\r\nCookie: __sess"));
    std::this_thread::sleep_for(100ms);  // read before the reset
    reset(cut);
  }
  CHECK_MESSAGE(b.proc->wait_for_log("msg=read_incomplete stage=header", 5s), b.proc->stderr_text());
}

TEST_CASE("clerk-sync-auth: a database the sessions projection never wrote, while the users one did, is a warning") {
  // Consumers of `users` only (a unit not enabled, or one writing another
  // file): no revocation would ever be refused, and nothing said so.
  running_auth a({"--projections-check-s", "0.3"});
  const auto offsets = [&](const std::string& projection) {
    test::store_offset(a.db, {.projection = projection, .next_offset = 5});
  };
  std::this_thread::sleep_for(1s);  // neither has written yet: nothing to say
  CHECK(a.proc->stderr_text().find("msg=projection_missing") == std::string::npos);
  offsets("users");
  CHECK_MESSAGE(a.proc->wait_for_log("level=warn msg=projection_missing projection=sessions", 10s),
                a.proc->stderr_text());
  CHECK(a.proc->stderr_text().find("revoked or ended sessions are let in") != std::string::npos);
  offsets("sessions");
  CHECK_MESSAGE(a.proc->wait_for_log("level=info msg=projection_written projection=sessions", 10s),
                a.proc->stderr_text());
  CHECK(test::count_of(a.proc->stderr_text(), "msg=projection_missing") == 1);
  a.proc->signal(SIGTERM);
  CHECK(a.proc->wait(15s) == 0);
}

TEST_CASE("clerk-sync-auth: a database file replaced while it runs is said at once, even right after one missing") {
  // The two lines shared one rate-limited key: the one saying that only a
  // restart mends it was held back for up to a minute behind the one for a
  // file moved away a moment before.
  running_auth a({});
  auto& auth = *a.proc;
  const auto tok = a.valid_token();
  const auto check = [&] { return a.check_with("Authorization: Bearer " + tok + "\r\n"); };
  const auto healthz = [&] { return test::send_http(a.port, "GET", "/healthz", {}, "").status; };
  REQUIRE(check() == 200);
  std::filesystem::rename(a.db, a.db + ".away");
  std::this_thread::sleep_for(1200ms);  // the path is looked at once a second
  CHECK(check() == 503);
  CHECK(healthz() == 503);
  CHECK_MESSAGE(auth.wait_for_log("msg=db_unavailable error=\"the database file at " + a.db + " is missing", 5s),
                auth.stderr_text());
  CHECK(auth.wait_for_log("msg=healthz status=503 error=\"the database file at " + a.db + " is missing", 5s));
  std::filesystem::copy_file(a.db + ".away", a.db);  // another file under the name
  CHECK(check() == 503);
  CHECK(healthz() == 503);
  CHECK_MESSAGE(auth.wait_for_log("msg=db_unavailable error=\"the database file at " + a.db + " was replaced", 3s),
                auth.stderr_text());
  CHECK(auth.wait_for_log("msg=healthz status=503 error=\"the database file at " + a.db + " was replaced", 3s));
  auth.signal(SIGTERM);
  CHECK(auth.wait(15s) == 0);
}

TEST_CASE("clerk-sync-auth: a projection that stops while the other goes on is a warning until it moves") {
  // The sessions consumer stopped (or failing every batch) while the users
  // one goes on: revocations since are let in, and nothing else said so.
  running_auth a({"--projections-check-s", "0.3"});
  const auto store_offset = [&](const std::string& projection, std::int64_t next) {
    test::store_offset(a.db, {.projection = projection, .next_offset = next});
  };
  {
    store::database db(a.db);  // both at once: one of them alone for two checks would be missing
    db.native().exec("INSERT INTO kafka_offsets(projection, topic, partition, next_offset, updated_at) VALUES "
                     "('users', 'clerk.events', 0, 5, 1), ('sessions', 'clerk.events', 0, 5, 1)");
  }
  // Users goes on, a record every 100 ms; a stall needs 30 s without a
  // move, however short the checks.
  std::int64_t users = 5;
  const auto deadline = std::chrono::steady_clock::now() + 45s;
  while (a.proc->stderr_text().find("msg=projection_stalled") == std::string::npos &&
         std::chrono::steady_clock::now() < deadline) {
    store_offset("users", ++users);
    std::this_thread::sleep_for(100ms);
  }
  CHECK_MESSAGE(a.proc->wait_for_log("level=warn msg=projection_stalled projection=sessions", 1s),
                a.proc->stderr_text());
  CHECK(a.proc->stderr_text().find("sessions revoked or ended since are let in") != std::string::npos);
  store_offset("sessions", users);
  CHECK_MESSAGE(a.proc->wait_for_log("level=info msg=projection_stall_over projection=sessions reason=moved", 10s),
                a.proc->stderr_text());
  CHECK(test::count_of(a.proc->stderr_text(), "msg=projection_stalled") == 1);
  CHECK(a.proc->stderr_text().find("msg=projection_missing") == std::string::npos);
  a.proc->signal(SIGTERM);
  CHECK(a.proc->wait(15s) == 0);
}

TEST_CASE("clerk-sync-auth: on SIGTERM a check on its way is answered, idle connections close at once, exit 0") {
  // The loop was stopped at the signal: a check whose header was still
  // arriving got no answer, which nginx turns into a 500 for that user.
  running_auth a({});
  test::raw_conn idle(a.port);
  test::raw_conn pooled(a.port);  // a proxy's connection after one answer
  REQUIRE(pooled.send("GET /healthz HTTP/1.1\r\nHost: auth\r\n\r\n"));
  CHECK(test::status_of(pooled.read_until("ok\n", 5s)) == 200);
  test::raw_conn coming(a.port);
  REQUIRE(coming.send("GET /auth HTTP/1.1\r\nHost: auth\r\n"));
  std::this_thread::sleep_for(300ms);  // read by the server before the signal
  a.proc->signal(SIGTERM);
  CHECK(idle.closed_within(2s));
  CHECK(pooled.closed_within(2s));
  REQUIRE(coming.send("Authorization: Bearer " + a.valid_token() + "\r\n\r\n"));
  const auto answer = coming.read_until("ok\n", 5s);
  CHECK_MESSAGE(test::status_of(answer) == 200, a.proc->stderr_text());
  CHECK(answer.find("Connection: close") != std::string::npos);
  CHECK(coming.closed_within(2s));
  CHECK(a.proc->wait(10s) == 0);
}
