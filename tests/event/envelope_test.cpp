#include "event/envelope.hpp"

#include <doctest/doctest.h>

#include "event/clerk_event.hpp"

namespace ev = clerk_sync::event;

namespace {

std::string nested(std::size_t depth, const std::string& open = "[", const std::string& close = "]") {
  std::string s;
  s.reserve(depth * (open.size() + close.size()));
  for (std::size_t i = 0; i < depth; ++i) s += open;
  for (std::size_t i = 0; i < depth; ++i) s += close;
  return s;
}

// A user.updated whose public_metadata holds a value nested `depth` levels
// below the top-level object (which is level 1; data 2; public_metadata 3).
std::string user_with_metadata_depth(std::size_t depth) {
  return R"({"type":"user.updated","data":{"id":"user_1","updated_at":1,"public_metadata":{"x":)" +
         nested(depth - 3) + "}}}";
}

ev::envelope_error error_of(const std::string& body) {
  const auto r = ev::read_envelope(body);
  REQUIRE(std::holds_alternative<ev::envelope_error>(r));
  return std::get<ev::envelope_error>(r);
}

}  // namespace

TEST_CASE("the envelope gives the type and the Kafka key: data.id for user.*, data.user_id for session.*") {
  const auto u = std::get<ev::envelope>(ev::read_envelope(R"({"type":"user.created","data":{"id":"user_1"}})"));
  CHECK(u.type == "user.created");
  CHECK(u.family == ev::event_family::user);
  CHECK(u.user_id == "user_1");
  const auto s = std::get<ev::envelope>(
      ev::read_envelope(R"({"type":"session.ended","data":{"id":"sess_1","user_id":"user_2"}})"));
  CHECK(s.family == ev::event_family::session);
  CHECK(s.user_id == "user_2");
  const auto o = std::get<ev::envelope>(ev::read_envelope(R"({"type":"email.created","data":{}})"));
  CHECK(o.family == ev::event_family::other);
  CHECK(o.user_id.empty());

  CHECK(error_of("not json") == ev::envelope_error::not_json);
  CHECK(error_of("[1,2]") == ev::envelope_error::not_json);
  CHECK(error_of(std::string("{\"type\":\"user.created\"}\0", 24)) == ev::envelope_error::not_json);
  CHECK(error_of(R"({"type":7,"data":{"id":"u"}})") == ev::envelope_error::no_type);
  CHECK(error_of(R"({"type":"","data":{"id":"u"}})") == ev::envelope_error::no_type);
  CHECK(error_of(R"({"type":"user.updated","data":{"id":42}})") == ev::envelope_error::no_user_id);
  CHECK(error_of(R"({"type":"session.created","data":{"id":"sess_1"}})") == ev::envelope_error::no_user_id);
  CHECK(ev::to_string(ev::envelope_error::too_deep) == "too_deep");
}

TEST_CASE("nesting is limited to 10,000 levels, and 200,000 levels are an error value, not a crash") {
  CHECK(std::holds_alternative<ev::envelope>(ev::read_envelope(user_with_metadata_depth(ev::max_depth))));
  CHECK(error_of(user_with_metadata_depth(ev::max_depth + 1)) == ev::envelope_error::too_deep);
  CHECK(error_of(nested(200'000)) == ev::envelope_error::too_deep);
  CHECK(error_of(nested(200'000, "{\"a\":", "}")) == ev::envelope_error::too_deep);
  // Deep and broken at once: still an answer.
  CHECK(error_of(nested(200'000).substr(0, 300'000)) == ev::envelope_error::too_deep);
  // Brackets inside strings are not nesting.
  const auto in_string = R"({"type":"user.created","data":{"id":"u","first_name":")" + nested(1000) + R"("}})";
  CHECK(std::get<ev::envelope>(ev::read_envelope(in_string)).user_id == "u");
}

TEST_CASE("the consumer's full decode refuses the same deep bodies as a dead-letter reason") {
  const auto deep = ev::decode(user_with_metadata_depth(ev::max_depth + 1));
  REQUIRE(std::holds_alternative<ev::decode_error>(deep));
  CHECK(std::get<ev::decode_error>(deep).reason == "not JSON: nested deeper than 10000 levels");
  const auto huge = ev::decode(nested(200'000));
  REQUIRE(std::holds_alternative<ev::decode_error>(huge));
  CHECK(std::get<ev::decode_error>(huge).reason.starts_with("not JSON"));
  CHECK(std::holds_alternative<ev::clerk_event>(ev::decode(user_with_metadata_depth(ev::max_depth))));
}

TEST_CASE("a number too large for a double in a field the end user writes does not refuse the envelope") {
  const auto body = R"({"type":"user.updated","data":{"id":"user_1","updated_at":1,"unsafe_metadata":{"x":1e400,"y":)" +
                    std::string(400, '9') + "}}}";
  CHECK(std::get<ev::envelope>(ev::read_envelope(body)).user_id == "user_1");
  // Where it stands for the type or the key, it is no string: refused as before.
  CHECK(error_of(R"({"type":1e400,"data":{"id":"u"}})") == ev::envelope_error::no_type);
  CHECK(error_of(R"({"type":"user.updated","data":{"id":1e400}})") == ev::envelope_error::no_user_id);
  CHECK(error_of(R"({"type":"user.updated","data":{"id":"u","x":1e400},})") == ev::envelope_error::not_json);
  // Nor does it make a broken body valid: a run that is no single number
  // (rewritten as 0 it would read as 0.5 or 0e5), a number where a key belongs.
  for (const char* broken : {R"({"type":"user.updated","data":{"id":"u","x":1e400.5}})",
                             R"({"type":"user.updated","data":{"id":"u","x":1e400e5}})",
                             R"({"type":"user.updated","data":{"id":"u","x":1e400,7:8}})"})
    CHECK_MESSAGE(error_of(broken) == ev::envelope_error::not_json, broken);
  CHECK(error_of(R"({"type":"user.updated","data":{"id":"u","x":1e400,"y":)" + nested(ev::max_depth) + "}}") ==
        ev::envelope_error::too_deep);
}
