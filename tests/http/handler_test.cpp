#include "http/handler.hpp"

#include <doctest/doctest.h>

#include <map>
#include <tuple>
#include <vector>

#include "support/support.hpp"

namespace http = clerk_sync::http;
namespace verify = clerk_sync::verify;
using namespace std::chrono_literals;

namespace {

const std::string secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
const auto now = std::chrono::system_clock::time_point(std::chrono::seconds(1'700'000'000));

struct request {
  std::string method = "POST";
  std::string target = "/webhooks/clerk";
  std::map<std::string, std::string> headers;
  std::string body;

  http::decision classify(http::readiness ready = http::readiness::ready) const {
    const http::request_view v{method, target, body, [this](std::string_view n) -> std::optional<std::string_view> {
                                 const auto it = headers.find(std::string(n));
                                 if (it == headers.end()) return std::nullopt;
                                 return std::string_view(it->second);
                               }};
    return http::classify(v, {"/webhooks/clerk", {verify::parse_secret(secret)}, 300s}, now, ready);
  }
  // What the header alone decides; the body is not given.
  std::optional<http::decision> classify_header() const {
    const http::request_view v{method, target, {}, [this](std::string_view n) -> std::optional<std::string_view> {
                                 const auto it = headers.find(std::string(n));
                                 if (it == headers.end()) return std::nullopt;
                                 return std::string_view(it->second);
                               }};
    return http::classify_header(v, {"/webhooks/clerk", {verify::parse_secret(secret)}, 300s}, now,
                                 http::readiness::ready)
        .decided;
  }
};

request signed_request(std::string body, std::string id = "msg_1", std::int64_t ts = 1'700'000'000,
                       std::string prefix = "svix-") {
  request r;
  r.headers[prefix + "id"] = id;
  r.headers[prefix + "timestamp"] = std::to_string(ts);
  r.headers[prefix + "signature"] = verify::sign(verify::parse_secret(secret), id, ts, body);
  r.body = std::move(body);
  return r;
}

}  // namespace

TEST_CASE("user.* and session.* are published with the user id as key - the record headers follow the design") {
  const auto user_body =
      clerk_sync::test::read_file(clerk_sync::test::source_path("tests/fixtures/svix/bodies/user.created.json"));
  const auto d = signed_request(user_body).classify();
  REQUIRE(d.publish.has_value());
  CHECK(d.publish->key == "user_2g7np7Hrk0SN6kj5EDMLDaKNL0S");
  CHECK(d.publish->type == "user.created");
  CHECK(d.msg == "published");
  const auto h = http::record_headers(*d.publish, 1234);
  REQUIRE(h.size() == 4);
  CHECK(clerk_sync::kafka::find_header(h, "svix-id") == "msg_1");
  CHECK(clerk_sync::kafka::find_header(h, "svix-timestamp") == "1700000000");
  CHECK(clerk_sync::kafka::find_header(h, "clerk-event-type") == "user.created");
  CHECK(clerk_sync::kafka::find_header(h, "received-at") == "1234");

  const auto session_body =
      clerk_sync::test::read_file(clerk_sync::test::source_path("tests/fixtures/svix/bodies/session.created.json"));
  const auto s = signed_request(session_body, "msg_2", 1'700'000'000, "webhook-").classify();
  REQUIRE(s.publish.has_value());
  CHECK(s.publish->key == "user_2g7np7Hrk0SN6kj5EDMLDaKNL0S");  // data.user_id, not the session id
  CHECK(s.publish->svix_id == "msg_2");
}

TEST_CASE("other verified types are ignored with 200 - bodies that are not usable events get 400") {
  auto d = signed_request(R"({"type":"email.created","data":{"id":"ema_1"}})").classify();
  CHECK_FALSE(d.publish);
  CHECK(d.answer.status == 200);
  CHECK(d.answer.body == R"({"status":"ignored"})");
  CHECK(d.msg == "ignored");

  const std::string with_nul("{\"type\":\"user.created\",\"data\":{\"id\":\"u\"}}\0{", 43);
  CHECK(signed_request(with_nul).classify().answer.status == 400);

  for (const std::string body : {"not json", "[1,2]", R"({"data":{"id":"user_1"}})", R"({"type":7})",
                                 R"({"type":"user.created","data":{}})", R"({"type":"user.created"})",
                                 R"({"type":"session.created","data":{"id":"sess_1"}})",
                                 R"({"type":"user.updated","data":{"id":42}})"}) {
    CAPTURE(body);
    const auto r = signed_request(body).classify();
    CHECK_FALSE(r.publish);
    CHECK(r.answer.status == 400);
    CHECK(r.msg == "rejected");
    CHECK(r.verified);  // signed: a delivery from Clerk, logged line by line
  }
  CHECK(d.verified);
}

TEST_CASE("what the end user writes into unsafe_metadata never makes their events a 400: a huge number, deep nesting") {
  // Sent whole with every later event about them (a ban, a revocation):
  // a 400 would keep those out of Kafka for good.
  for (const std::string& value : {std::string("1e400"), std::string(400, '9'),
                                   std::string(4096, '[') + std::string(4096, ']')}) {
    const auto d = signed_request(R"({"type":"user.updated","data":{"id":"user_1","banned":true,"updated_at":2,)"
                                  R"("unsafe_metadata":{"x":)" + value + "}}}")
                       .classify();
    REQUIRE_MESSAGE(d.publish.has_value(), d.outcome);
    CHECK(d.publish->key == "user_1");
  }
}

TEST_CASE("signature and header problems: 400 for missing or malformed headers, 401 for bad signature or time") {
  const std::string body = R"({"type":"user.created","data":{"id":"user_1"}})";
  auto r = signed_request(body);
  r.headers.erase("svix-signature");
  CHECK(r.classify().answer.status == 400);

  r = signed_request(body);
  r.headers["svix-timestamp"] = "17e8";
  CHECK(r.classify().answer.status == 400);

  r = signed_request(body);
  r.body[5] = 'X';  // one byte changed after signing
  CHECK(r.classify().answer.status == 401);
  CHECK_FALSE(r.classify().verified);

  CHECK(signed_request(body, "msg_1", 1'700'000'000 - 301).classify().answer.status == 401);
  CHECK(signed_request(body, "msg_1", 1'700'000'000 + 301).classify().answer.status == 401);
  CHECK(signed_request(body, "msg_1", 1'700'000'000 - 300).classify().publish.has_value());

  // A signed body that is not JSON is still checked for its signature first.
  r = signed_request("not json");
  r.headers["svix-signature"] = "v1,AAAA";
  CHECK(r.classify().answer.status == 401);
}

TEST_CASE("routing: unknown path 404, wrong method 405 with Allow, probes answer GET") {
  request r;
  r.target = "/elsewhere";
  CHECK(r.classify().answer.status == 404);
  CHECK_FALSE(r.classify().verified);
  r.target = "/webhooks/clerk";
  r.method = "GET";
  const auto d = r.classify();
  CHECK(d.answer.status == 405);
  CHECK(d.answer.allow == "POST");
  r.target = "/healthz";
  CHECK(r.classify(http::readiness::kafka_unreachable).answer.status == 200);
  r.target = "/readyz";
  CHECK(r.classify(http::readiness::ready).answer.status == 200);
  const auto not_ready = r.classify(http::readiness::kafka_unreachable);
  CHECK(not_ready.answer.status == 503);
  CHECK(not_ready.answer.body == R"({"status":"kafka_unreachable"})");
  CHECK(not_ready.answer.retry_after_s.has_value());
  const auto no_topic = r.classify(http::readiness::topic_missing);
  CHECK(no_topic.answer.status == 503);
  CHECK(no_topic.answer.body == R"({"status":"topic_missing"})");
  const auto no_tls = r.classify(http::readiness::tls_failed);
  CHECK(no_tls.answer.status == 503);
  CHECK(no_tls.answer.body == R"({"status":"tls_failed"})");
  r.method = "POST";
  CHECK(r.classify().answer.status == 405);
}

TEST_CASE("answers after publishing: partition and offset on 200, Retry-After on 503") {
  CHECK(http::published(2, 41).body == R"({"status":"published","partition":2,"offset":41})");
  const auto u = http::unavailable("deadline", 7);
  CHECK(u.status == 503);
  CHECK(u.retry_after_s == 7);
  CHECK(http::too_large().status == 413);
}

TEST_CASE("the header alone: a signed delivery waits for its body, and what cannot verify is decided as classify() decides it") {
  const auto body = clerk_sync::test::read_file(clerk_sync::test::source_path("tests/fixtures/svix/bodies/user.created.json"));
  for (const std::string prefix : {"svix-", "webhook-"}) {
    CAPTURE(prefix);
    CHECK_FALSE(signed_request(body, "msg_1", 1'700'000'000, prefix).classify_header().has_value());
  }
  // A signature of another body still has to be read to be found wrong.
  auto other = signed_request(body);
  other.body = "{}";
  CHECK_FALSE(other.classify_header().has_value());
  // Decided now, as classify() decides it once the body is read.
  auto missing = signed_request(body);
  missing.headers.erase("svix-signature");
  auto stale = signed_request(body, "msg_2", 1'700'000'000 - 301);
  auto junk = signed_request(body);
  junk.headers["svix-signature"] = "v1,bm90IGEgc2lnbmF0dXJl v2," + std::string(44, 'A');
  auto garbage = signed_request(body);
  garbage.headers["svix-signature"] = "garbage";
  auto elsewhere = signed_request(body);
  elsewhere.target = "/other";
  for (const auto& [r, status, outcome] : std::vector<std::tuple<request, int, std::string>>{
           {missing, 400, "missing_header"},
           {stale, 401, "timestamp_too_old"},
           {junk, 401, "no_matching_signature"},
           {garbage, 400, "malformed_signature"},
           {elsewhere, 404, "path"}}) {
    CAPTURE(outcome);
    const auto early = r.classify_header();
    REQUIRE(early.has_value());
    const auto late = r.classify();
    CHECK(early->answer.status == status);
    CHECK(early->outcome == outcome);
    CHECK(late.answer.status == status);
    CHECK(late.outcome == outcome);
    CHECK(early->answer.body == late.answer.body);
  }
  CHECK(stale.classify_header()->svix_id == "msg_2");
}
