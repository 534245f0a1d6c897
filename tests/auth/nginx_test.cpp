// clerk-sync-auth behind a real client: Debian's nginx with auth_request in
// front of a small upstream, all on loopback, with the users and sessions
// tables fed the production way (signed webhooks -> the real receiver ->
// the test broker -> clerk-sync-consumer). A valid token reaches the
// upstream with the X-Clerk-* headers; a missing or tampered one is refused;
// a user banned by a signed user.updated, or a session revoked by a signed
// session.revoked, is refused within a second of the consumer committing it.
#include <doctest/doctest.h>

#include <csignal>
#include <fstream>
#include <thread>

#include "consumer/harness.hpp"
#include "receiver/harness.hpp"
#include "support/process.hpp"
#include "support/support.hpp"
#include "token/signer.hpp"
#include "verify/svix.hpp"

using namespace std::chrono_literals;
namespace cs = clerk_sync;
namespace test = clerk_sync::test;

namespace {

std::int64_t now_ms() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::system_clock::now().time_since_epoch())
      .count();
}

std::string user_body(const std::string& type, const std::string& id, bool banned, std::int64_t at) {
  return R"({"data":{"id":")" + id + R"(","object":"user","first_name":"Ada","banned":)" +
         (banned ? "true" : "false") + R"(,"public_metadata":{"role":"pro-curator"},"private_metadata":{},)" +
         R"("email_addresses":[],"created_at":1700000000000,"updated_at":)" + std::to_string(at) +
         R"(},"object":"event","timestamp":)" + std::to_string(at) + R"(,"type":")" + type + R"("})";
}

std::string session_body(const std::string& type, const std::string& status, const std::string& id,
                         const std::string& user, std::int64_t at) {
  return R"({"data":{"object":"session","id":")" + id + R"(","user_id":")" + user + R"(","status":")" + status +
         R"(","created_at":1700000000000,"updated_at":)" + std::to_string(at) + R"(,"last_active_at":)" +
         std::to_string(at) + R"(,"expire_at":)" + std::to_string(at + 86'400'000) +
         R"(},"object":"event","timestamp":)" + std::to_string(at) + R"(,"type":")" + type + R"("})";
}

void send(const test::receiver& recv, const std::string& secret, const std::string& body) {
  const auto e = test::sign_event(secret, body);
  const auto r = test::post_event(recv.port(), e);
  REQUIRE_MESSAGE(r.status == 200, r.status << " " << r.body);
}

std::string nginx_conf(const std::filesystem::path& dir, int port, int auth_port, int upstream_port) {
  const std::string d = dir.string();
  const std::string p = std::to_string(port);
  return "daemon off;\nmaster_process off;\npid " + d + "/nginx.pid;\nerror_log " + d + "/error.log warn;\n" +
         "events { worker_connections 64; }\n"
         "http {\n"
         "  access_log off;\n"
         "  client_body_temp_path " + d + "/t1; proxy_temp_path " + d + "/t2; fastcgi_temp_path " + d + "/t3;\n"
         "  uwsgi_temp_path " + d + "/t4; scgi_temp_path " + d + "/t5;\n"
         "  server {\n"
         "    listen 127.0.0.1:" + p + ";\n"
         "    location = /_clerk_auth {\n"
         "      internal;\n"
         "      proxy_pass http://127.0.0.1:" + std::to_string(auth_port) + "/auth;\n"
         "      proxy_pass_request_body off;\n"
         "      proxy_set_header Content-Length \"\";\n"
         "    }\n"
         "    location / {\n"
         "      auth_request /_clerk_auth;\n"
         "      auth_request_set $clerk_user $upstream_http_x_clerk_user_id;\n"
         "      auth_request_set $clerk_session $upstream_http_x_clerk_session_id;\n"
         "      auth_request_set $clerk_role $upstream_http_x_clerk_role;\n"
         "      proxy_set_header X-Clerk-User-Id $clerk_user;\n"
         "      proxy_set_header X-Clerk-Session-Id $clerk_session;\n"
         "      proxy_set_header X-Clerk-Role $clerk_role;\n"
         "      proxy_pass http://127.0.0.1:" + std::to_string(upstream_port) + ";\n"
         "    }\n"
         "  }\n"
         "}\n";
}

bool wait_http(int port, const std::string& target, std::chrono::milliseconds timeout) {
  const auto until = std::chrono::steady_clock::now() + timeout;
  while (std::chrono::steady_clock::now() < until) {
    if (test::send_http(port, "GET", target, {}, "", 2s).status != 0) return true;
    std::this_thread::sleep_for(50ms);
  }
  return false;
}

// Polls `sql` until it yields 1; returns when it did, or nullopt after `timeout`.
std::optional<std::chrono::steady_clock::time_point> wait_row(const std::string& db, const std::string& sql,
                                                              std::chrono::milliseconds timeout) {
  const auto until = std::chrono::steady_clock::now() + timeout;
  while (std::chrono::steady_clock::now() < until) {
    if (test::query_int(db, sql) == 1) return std::chrono::steady_clock::now();
    std::this_thread::sleep_for(5ms);
  }
  return std::nullopt;
}

}  // namespace

TEST_CASE("nginx auth_request in front of an upstream, with bans and revocations from signed webhooks") {
  REQUIRE_MESSAGE(std::filesystem::exists("/usr/sbin/nginx"), "run scripts/bootstrap (nginx)");
  const auto cfg = test::broker();
  const auto topic = test::fresh_topic("auth", 2);
  const auto secret = test::random_secret();
  test::temp_dir dir;
  const std::string db = (dir / "clerk-sync.db").string();
  const test::rsa_signer signer;
  std::ofstream(dir / "jwt.pem") << signer.public_pem();

  test::receiver recv(cfg.brokers, topic, secret);
  REQUIRE(recv.wait_ready(30s));
  auto consumer = test::start_consumer(
      {"--projection", "users,sessions", "--db", db, "--topic", topic, "--batch-latency-ms", "5"});
  REQUIRE_MESSAGE(consumer->wait_for_log("msg=assigned", 30s), consumer->stderr_text());

  const std::int64_t t0 = now_ms();
  send(recv, secret, user_body("user.created", "user_ok", false, t0));
  send(recv, secret, user_body("user.created", "user_ban", false, t0));
  send(recv, secret, session_body("session.created", "active", "sess_ok", "user_ok", t0));
  send(recv, secret, session_body("session.created", "active", "sess_ban", "user_ban", t0));
  send(recv, secret, session_body("session.created", "active", "sess_rev", "user_ok", t0));
  REQUIRE(wait_row(db, "SELECT count(*) = 2 FROM users", 60s));
  REQUIRE(wait_row(db, "SELECT count(*) = 3 FROM sessions", 60s));

  const int auth_port = test::free_port();
  test::process auth(test::binary_path("app/auth/clerk-sync-auth"),
                     {"--listen", "127.0.0.1:" + std::to_string(auth_port), "--db", db, "--jwt-key-file",
                      (dir / "jwt.pem").string(), "--authorized-party", "https://app.example"},
                     {{"CLERK_JWKS_FILE", ""}, {"CLERK_AUTHORIZED_PARTIES", ""}, {"NOTIFY_SOCKET", ""}});
  REQUIRE_MESSAGE(auth.wait_for_log("msg=listening", 15s), auth.stderr_text());
  const int upstream_port = test::free_port();
  test::process upstream("/usr/bin/python3", {test::source_path("tests/auth/upstream.py").string(),
                                              std::to_string(upstream_port)});
  REQUIRE(wait_http(upstream_port, "/", 15s));
  const int port = test::free_port();
  std::ofstream(dir / "nginx.conf") << nginx_conf(dir.path(), port, auth_port, upstream_port);
  test::process nginx("/usr/sbin/nginx", {"-p", dir.path().string(), "-c", (dir / "nginx.conf").string(), "-e",
                                          (dir / "error.log").string()});
  REQUIRE_MESSAGE(wait_http(port, "/", 15s), test::read_file(dir / "error.log"));

  const auto exp = t0 / 1000 + 600;
  const auto token = [&](const std::string& user, const std::string& sid) {
    return signer.sign(R"({"alg":"RS256","kid":"ins_test","typ":"JWT"})",
                       R"({"azp":"https://app.example","exp":)" + std::to_string(exp) + R"(,"iat":)" +
                           std::to_string(t0 / 1000 - 5) + R"(,"sid":")" + sid + R"(","sub":")" + user + R"("})");
  };
  const auto get = [&](const std::map<std::string, std::string>& headers) {
    return test::send_http(port, "GET", "/app/page", headers, "", 10s);
  };

  const std::string ok_token = token("user_ok", "sess_ok");
  auto r = get({{"Authorization", "Bearer " + ok_token}});
  CHECK(r.status == 200);
  CHECK(r.body.find("path=/app/page") != std::string::npos);
  CHECK(r.body.find("x-clerk-user-id=user_ok\n") != std::string::npos);
  CHECK(r.body.find("x-clerk-session-id=sess_ok\n") != std::string::npos);
  CHECK(r.body.find("x-clerk-role=pro-curator\n") != std::string::npos);
  r = get({{"Cookie", "__client_uat=1; __session=" + ok_token}});
  CHECK(r.status == 200);
  CHECK(r.body.find("x-clerk-user-id=user_ok\n") != std::string::npos);
  // A request with a body: the check gets neither it nor its Content-Length
  // (as configured), so clerk-sync-auth, which refuses a body, answers it.
  r = test::send_http(port, "POST", "/app/page", {{"Authorization", "Bearer " + ok_token}}, R"({"a":1})", 10s);
  CHECK(r.status == 200);
  CHECK(r.body.find("x-clerk-user-id=user_ok\n") != std::string::npos);

  // Refused before the upstream sees anything.
  CHECK(get({}).status == 401);
  std::string tampered = ok_token;
  tampered[tampered.size() - 5] = tampered[tampered.size() - 5] == 'A' ? 'B' : 'A';
  CHECK(get({{"Authorization", "Bearer " + tampered}}).status == 401);
  CHECK(get({{"Authorization", "Bearer " + test::sign_hs256(R"({"alg":"HS256"})", "{}", signer.public_pem())}})
            .status == 401);
  const auto direct = test::send_http(auth_port, "GET", "/auth", {{"Authorization", "Bearer " + tampered}}, "", 10s);
  CHECK(direct.status == 401);
  CHECK(direct.headers.at("www-authenticate") == "Bearer error=\"invalid_token\"");

  // A ban through a signed webhook: refused within a second of the commit.
  const std::string ban_token = token("user_ban", "sess_ban");
  CHECK(get({{"Authorization", "Bearer " + ban_token}}).status == 200);  // cached from here on
  const auto sent = std::chrono::steady_clock::now();
  send(recv, secret, user_body("user.updated", "user_ban", true, now_ms()));
  const auto applied = wait_row(db, "SELECT banned FROM users WHERE id = 'user_ban'", 60s);
  REQUIRE(applied);
  std::optional<std::chrono::steady_clock::time_point> refused;
  while (std::chrono::steady_clock::now() < *applied + 1s) {
    if (get({{"Authorization", "Bearer " + ban_token}}).status == 403) {
      refused = std::chrono::steady_clock::now();
      break;
    }
    std::this_thread::sleep_for(10ms);
  }
  REQUIRE_MESSAGE(refused, "still let through a second after the consumer applied the ban");
  const auto ms = [](auto d) { return std::chrono::duration_cast<std::chrono::milliseconds>(d).count(); };
  MESSAGE("ban: webhook to commit " << ms(*applied - sent) << " ms, commit to first 403 " << ms(*refused - *applied)
                                    << " ms");
  CHECK(get({{"Authorization", "Bearer " + ok_token}}).status == 200);  // others unaffected

  // A revocation the same way: 401 within a second of the commit.
  const std::string rev_token = token("user_ok", "sess_rev");
  CHECK(get({{"Authorization", "Bearer " + rev_token}}).status == 200);
  send(recv, secret, session_body("session.revoked", "revoked", "sess_rev", "user_ok", now_ms()));
  const auto revoked = wait_row(db, "SELECT status = 'revoked' FROM sessions WHERE id = 'sess_rev'", 60s);
  REQUIRE(revoked);
  bool refused_rev = false;
  while (std::chrono::steady_clock::now() < *revoked + 1s && !refused_rev) {
    refused_rev = get({{"Authorization", "Bearer " + rev_token}}).status == 401;
    if (!refused_rev) std::this_thread::sleep_for(10ms);
  }
  CHECK(refused_rev);
  CHECK(get({{"Authorization", "Bearer " + ok_token}}).status == 200);

  // The log has a line per check let in, lines for the refused ones, and never a token.
  auth.signal(SIGTERM);
  CHECK(auth.wait(15s) == 0);
  const auto log = auth.stderr_text();
  CHECK(log.find("msg=auth status=200 outcome=ok user=user_ok") != std::string::npos);
  CHECK(log.find("outcome=banned") != std::string::npos);
  CHECK(log.find("outcome=session_revoked") != std::string::npos);
  CHECK(log.find(ok_token.substr(0, 20)) == std::string::npos);
  CHECK(log.find(ok_token.substr(ok_token.size() - 20)) == std::string::npos);
  consumer->signal(SIGTERM);
  CHECK(consumer->wait(20s) == 0);
}
