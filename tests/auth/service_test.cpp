#include "auth/service.hpp"

#include <doctest/doctest.h>

#include <SQLiteCpp/SQLiteCpp.h>

#include <filesystem>
#include <thread>

#include "auth/cache.hpp"
#include "auth/decision.hpp"
#include "store/database.hpp"
#include "support/support.hpp"
#include "token/signer.hpp"

using namespace clerk_sync;
using namespace std::chrono_literals;
using sv = std::optional<std::string_view>;

namespace {

const auto now = std::chrono::system_clock::time_point(std::chrono::seconds(1'800'000'000));

std::string claims(const std::string& sub, const std::string& sid, std::int64_t exp = 1'800'000'060) {
  return R"({"azp":"https://app.example","exp":)" + std::to_string(exp) + R"(,"iat":1799999990,"sid":")" + sid +
         R"(","sub":")" + sub + R"("})";
}

}  // namespace

TEST_CASE("auth: the token comes from Bearer, else the __session cookie") {
  const auto token_of = [](sv authorization, sv cookie) { return auth::extract_token(authorization, cookie).token; };
  const auto outcome_of = [](sv authorization, sv cookie) {
    return auth::extract_token(authorization, cookie).outcome;
  };
  CHECK(token_of(sv("Bearer abc.def.ghi"), std::nullopt) == sv("abc.def.ghi"));
  CHECK(token_of(sv(" Bearer abc.def.ghi\t"), std::nullopt) == sv("abc.def.ghi"));
  CHECK(token_of(sv("Bearer h1"), sv("__session=c1")) == sv("h1"));
  // A bare token is the token, as every Clerk SDK reads it.
  CHECK(token_of(sv("abc.def.ghi"), sv("__session=c1")) == sv("abc.def.ghi"));
  // Anything else in Authorization is refused, never read as the cookie:
  // Clerk's newer SDKs skip another scheme (lower-case bearer too) and read
  // the cookie, older ones take the whole value, so an application behind
  // the proxy could read another token than the one checked.
  for (const sv a : {sv("bearer abc"), sv("BEARER abc"), sv("Basic dXNlcjpwYXNz"), sv("Bearer  abc"),
                     sv("Bearer abc def"), sv("Bearer\tabc")}) {
    CAPTURE(a);
    CHECK(token_of(a, sv("__session=c1")) == std::nullopt);
    CHECK(outcome_of(a, sv("__session=c1")) == "bad_authorization");
  }
  // Said at warn: a site that sends its own Authorization has every
  // request refused so.
  CHECK(auth::setup_refusal("bad_authorization"));
  // So is a kid the JWKS file lacks: after Clerk rotates its key, every
  // token until the file is updated. A token past its time is a user's.
  CHECK(auth::setup_refusal("unknown_kid"));
  CHECK_FALSE(auth::setup_refusal("expired"));
  CHECK_FALSE(auth::setup_refusal("bad_signature"));
  // An empty field is no field: the cookie is read.
  CHECK(token_of(sv(""), sv("__session=c1")) == sv("c1"));
  CHECK(token_of(sv("  "), sv("__session=c1")) == sv("c1"));
  CHECK(token_of(std::nullopt, sv("a=1; __session=tok.en.x; b=2")) == sv("tok.en.x"));
  CHECK(token_of(std::nullopt, sv("__session_abc=x; __client_uat=1")) == std::nullopt);
  CHECK(token_of(std::nullopt, sv("__session=\"q.t.x\"")) == sv("q.t.x"));
  CHECK(token_of(std::nullopt, sv("__session=")) == std::nullopt);
  CHECK(token_of(std::nullopt, std::nullopt) == std::nullopt);
  CHECK(auth::extract_token(std::nullopt, sv("a=1")).outcome == "missing_token");
  // Of two __session cookies the first, and none when it is empty; a Bearer
  // token still wins over the cookies, as in Clerk.
  CHECK(token_of(std::nullopt, sv("__session=a.b.c; __session=d.e.f")) == sv("a.b.c"));
  CHECK(token_of(std::nullopt, sv("x=1; __session =; __session=a.b.c")) == std::nullopt);
  CHECK(token_of(sv("Bearer h1"), sv("__session=a.b.c; __session=d.e.f")) == sv("h1"));
}

TEST_CASE("auth: decide maps the verdict and the synced rows to 200, 401 or 403") {
  token::verdict ok;
  ok.why = token::reason::ok;
  token::verdict expired;
  expired.why = token::reason::expired;
  CHECK(auth::decide(expired, auth::user_row{"admin", false, false}, std::nullopt).status == 401);
  CHECK(auth::decide(expired, std::nullopt, std::nullopt).outcome == "expired");
  const auto d = auth::decide(ok, auth::user_row{"pro-curator", false, false}, auth::session_row{"active"});
  CHECK(d.status == 200);
  CHECK(d.role == "pro-curator");
  CHECK(auth::decide(ok, std::nullopt, std::nullopt).role == "spacer");
  CHECK(auth::decide(ok, std::nullopt, std::nullopt).outcome == "ok_unsynced");
  CHECK(auth::decide(ok, auth::user_row{"vip", true, false}, std::nullopt).status == 403);
  CHECK(auth::decide(ok, auth::user_row{"vip", false, true}, std::nullopt).outcome == "deleted");
  for (const char* s : {"ended", "removed", "revoked", "expired", "abandoned", "replaced"})
    CHECK_MESSAGE(auth::decide(ok, auth::user_row{"vip", false, false}, auth::session_row{s}).status == 401, s);
  CHECK(auth::decide(ok, auth::user_row{"vip", false, false}, auth::session_row{"revoked"}).outcome ==
        "session_revoked");
  CHECK(auth::decide(ok, auth::user_row{"vip", false, false}, auth::session_row{"pending"}).status == 200);
}

namespace {

// A database at dir/clerk-sync.db holding user_a (an admin), the options and
// a valid token of user_a: for the tests below.
struct one_user_database {
  test::rsa_signer signer;
  test::temp_dir dir;
  std::string path = (dir / "clerk-sync.db").string();
  token::options opts;
  std::string bearer = "Bearer " + signer.sign(R"({"alg":"RS256","typ":"JWT"})", claims("user_a", "sess_a"));
  one_user_database() {
    store::database live(path);
    store::exec(live, "INSERT INTO users(id, role, banned, updated_at) VALUES ('user_a','admin',0,1)");
    opts.authorized_parties = {"https://app.example"};
  }
  [[nodiscard]] auth::service service(auth::lookup& db) const {
    return {token::key_set::from_pem(signer.public_pem()), opts, 100, db};
  }
};

}  // namespace

TEST_CASE("auth: a banned or deleted user gets 403 even once their session is revoked") {
  // Clerk revokes the sessions of a user it bans or deletes; the two
  // projections apply both, in either order. A 401 would send the user to
  // sign in again instead of saying they may not.
  token::verdict ok;
  ok.why = token::reason::ok;
  for (const char* s : {"ended", "removed", "revoked", "expired", "abandoned", "replaced"}) {
    INFO(s);
    const auto banned = auth::decide(ok, auth::user_row{"vip", true, false}, auth::session_row{s});
    CHECK(banned.status == 403);
    CHECK(banned.outcome == "banned");
    const auto deleted = auth::decide(ok, auth::user_row{"vip", false, true}, auth::session_row{s});
    CHECK(deleted.status == 403);
    CHECK(deleted.outcome == "deleted");
  }

  one_user_database f;
  {
    store::database live(f.path);
    store::exec(live, "UPDATE users SET banned = 1 WHERE id = 'user_a';"
                      "INSERT INTO sessions(id, user_id, status, updated_at) VALUES ('sess_a','user_a','revoked',2)");
  }
  auth::lookup db(f.path);
  auto svc = f.service(db);
  const auto r = svc.check(f.bearer, std::nullopt, now);
  CHECK(r.status == 403);
  CHECK(r.outcome == "banned");
}

TEST_CASE("auth: a role the consumers never write grants nothing and never reaches a header") {
  // The role is copied into X-Clerk-Role, and Beast writes a field value as
  // given: a row edited by hand could add a header with a CR LF, or claim a
  // role the consumer would have kept as spacer.
  token::verdict ok;
  ok.why = token::reason::ok;
  for (const char* role :
       {"admin\r\nX-Clerk-User-Id: user_admin", "admin\nX: 1", "vip, admin", "overlord", "Admin", ""}) {
    const auto d = auth::decide(ok, auth::user_row{role, false, false}, std::nullopt);
    CHECK_MESSAGE(d.status == 200, role);
    CHECK_MESSAGE(d.role == "spacer", role);
  }
  for (const char* role : {"spacer", "vip", "pro-curator", "partner", "admin"})
    CHECK(auth::decide(ok, auth::user_row{role, false, false}, std::nullopt).role == role);
}

TEST_CASE("auth: the cache serves a token until it expires, and only valid ones") {
  auth::token_cache cache(2, 5s);
  token::claim_set c;
  c.sub = "u";
  c.exp = 1'800'000'010;
  c.payload = std::string(8'000, 'p');  // no check reads it: not kept
  cache.store("t1", c, now);
  REQUIRE(cache.find("t1", now) != nullptr);
  CHECK(cache.find("t1", now)->sub == "u");
  CHECK(cache.find("t1", now)->payload.empty());
  CHECK(cache.find("t1", now + 14s) != nullptr);   // within the skew past exp
  CHECK(cache.find("t1", now + 15s) == nullptr);   // exp * 1000 <= now - skew
  CHECK(cache.size() == 0);
  c.exp = 1'799'999'000;
  cache.store("old", c, now);
  CHECK(cache.size() == 0);
  c.exp = 1'800'000'100;
  cache.store("a", c, now);
  cache.store("b", c, now);
  cache.store("c", c, now);  // full of live entries: starts over
  CHECK(cache.size() == 1);
  auth::token_cache off(0, 5s);
  off.store("a", c, now);
  CHECK(off.find("a", now) == nullptr);
}

TEST_CASE("auth: service reads the synced tables on every request, cached token or not") {
  const test::rsa_signer signer;
  test::temp_dir dir;
  const auto path = (dir / "clerk-sync.db").string();
  {
    store::database db(path);
    store::exec(db,
                "INSERT INTO users(id, role, banned, updated_at) VALUES ('user_a','admin',0,1),('user_b','vip',1,1);"
                "INSERT INTO users(id, role, banned, updated_at, deleted_at) VALUES ('user_d','vip',0,1,5);"
                "INSERT INTO sessions(id, user_id, status, updated_at) VALUES"
                " ('sess_a','user_a','active',1),('sess_r','user_a','revoked',1)");
  }
  auth::lookup db(path);
  token::options opts;
  opts.authorized_parties = {"https://app.example"};
  auth::service svc(token::key_set::from_pem(signer.public_pem()), opts, 100, db);
  const std::string header = R"({"alg":"RS256","typ":"JWT"})";
  const auto bearer = [](const std::string& t) { return "Bearer " + t; };

  const std::string a = signer.sign(header, claims("user_a", "sess_a"));
  auto r = svc.check(bearer(a), std::nullopt, now);
  CHECK(r.status == 200);
  CHECK(r.role == "admin");
  CHECK(r.user == "user_a");
  CHECK(r.session == "sess_a");
  CHECK_FALSE(r.cached);
  r = svc.check(std::nullopt, "__session=" + a, now);
  CHECK(r.status == 200);
  CHECK(r.cached);

  CHECK(svc.check(bearer(signer.sign(header, claims("user_b", "sess_b"))), std::nullopt, now).status == 403);
  CHECK(svc.check(bearer(signer.sign(header, claims("user_d", "sess_d"))), std::nullopt, now).outcome == "deleted");
  CHECK(svc.check(bearer(signer.sign(header, claims("user_a", "sess_r"))), std::nullopt, now).status == 401);
  r = svc.check(bearer(signer.sign(header, claims("user_new", "sess_new"))), std::nullopt, now);
  CHECK(r.status == 200);
  CHECK(r.role == "spacer");
  CHECK(svc.check(std::nullopt, std::nullopt, now).outcome == "missing_token");

  // A ban committed by another connection applies to the cached token at once.
  {
    SQLite::Database writer(path, SQLite::OPEN_READWRITE);
    writer.exec("UPDATE users SET banned = 1 WHERE id = 'user_a'");
  }
  r = svc.check(bearer(a), std::nullopt, now);
  CHECK(r.cached);
  CHECK(r.status == 403);
  CHECK(r.outcome == "banned");
  // Past its exp, the cached token is verified again, and refused.
  CHECK(svc.check(bearer(a), std::nullopt, now + 3600s).outcome == "expired");
}

TEST_CASE("auth: a file that is not a clerk-sync database is refused at open") {
  test::temp_dir dir;
  CHECK_THROWS_AS(auth::lookup((dir / "missing.db").string()), store::open_error);
}


TEST_CASE("auth: of two __session cookies the first is checked, as Clerk reads it, an empty one included") {
  // A browser holds two when cookies of the name were set for a parent
  // domain and for the host; the one Clerk's SDK behind the proxy reads is
  // the first, and so is the one checked here. An empty first one is a
  // signed-out request, whatever follows it (it let the next one in).
  one_user_database f;
  auth::lookup db(f.path);
  auto svc = f.service(db);
  const std::string valid = f.bearer.substr(7);
  CHECK(svc.check(std::nullopt, "__session=" + valid + "; __session=forged.token.x", now).status == 200);
  CHECK(svc.check(std::nullopt, "__session=" + valid + "; __session=" + valid, now).status == 200);
  const auto forged_first = svc.check(std::nullopt, "__session=forged.token.x; __session=" + valid, now);
  CHECK(forged_first.status == 401);
  CHECK(forged_first.outcome != "ok");
  const auto empty_first = svc.check(std::nullopt, "__session=; __session=" + valid, now);
  CHECK(empty_first.status == 401);
  CHECK(empty_first.outcome == "missing_token");
  // A Bearer token is taken before any cookie, as before.
  CHECK(svc.check(f.bearer, "__session=; __session=y", now).status == 200);
}

TEST_CASE("auth: a database moved over the path is noticed and fails closed, never read through the old file's WAL") {
  one_user_database f;
  const auto rebuilt = (f.dir / "rebuild.db").string();
  {
    store::database next(rebuilt);
    store::exec(next, "INSERT INTO users(id, role, banned, updated_at) VALUES ('user_a','admin',1,2)");
  }
  auth::lookup db(f.path, 0ms);
  auto svc = f.service(db);
  CHECK(svc.check(f.bearer, std::nullopt, now).status == 200);
  // The README's swap with this service left running: it would answer
  // from the old file (200 for a user the new one bans) for as long as it
  // ran. It refuses instead, and says why, until restarted.
  std::filesystem::rename(rebuilt, f.path);
  for (int i = 0; i < 3; ++i) {
    const auto r = svc.check(f.bearer, std::nullopt, now);
    CHECK(r.status == 503);
    CHECK(r.outcome == "db_unavailable");
  }
  CHECK_THROWS_WITH_AS(db.reopen(), doctest::Contains("was replaced while this service ran"), store::db_error);
  CHECK(db.file_problem().value_or("").find("was replaced while this service ran") != std::string::npos);
  // Restarted after the swap: the new file's ban applies.
  auth::lookup restarted(f.path, 0ms);
  CHECK(f.service(restarted).check(f.bearer, std::nullopt, now).outcome == "banned");
}

TEST_CASE("auth: a database path missing for a while answers 503 meanwhile, and the same file again serves") {
  one_user_database f;
  const auto aside = (f.dir / "aside.db").string();
  // The service's own recheck interval: a second between looks at the path.
  auth::lookup db(f.path, 1s);
  auto svc = f.service(db);
  CHECK(svc.check(f.bearer, std::nullopt, now).status == 200);
  CHECK_FALSE(svc.database_problem());
  // Moved away and back (a mistaken mv, a restore): the same inode. Every
  // check while it is away answers 503, not only the one that noticed.
  std::filesystem::rename(f.path, aside);
  std::this_thread::sleep_for(1100ms);  // past the recheck interval
  for (int i = 0; i < 3; ++i) CHECK(svc.check(f.bearer, std::nullopt, now).status == 503);
  CHECK(svc.database_problem().value_or("").find("is missing") != std::string::npos);
  std::filesystem::rename(aside, f.path);
  const auto back = svc.check(f.bearer, std::nullopt, now);
  CHECK(back.status == 200);
  CHECK(back.role == "admin");
  CHECK_FALSE(svc.database_problem());
}

TEST_CASE("auth: /healthz's database problem is any a check meets, not only the path's") {
  one_user_database f;
  auth::lookup db(f.path);
  auto svc = f.service(db);
  CHECK(svc.check(f.bearer, std::nullopt, now).status == 200);
  CHECK_FALSE(svc.database_problem());
  // The path still names the file it opened, but the file no longer holds
  // what a check reads (a damaged file, an I/O error, a schema it cannot
  // read): every check answers 503, and a monitor of /healthz must hear it.
  {
    SQLite::Database writer(f.path, SQLite::OPEN_READWRITE);
    writer.exec("DROP TABLE sessions");
  }
  CHECK(svc.check(f.bearer, std::nullopt, now).status == 503);
  const auto problem = svc.database_problem();
  REQUIRE(problem);
  CHECK_MESSAGE(problem->find("sessions") != std::string::npos, *problem);
}
