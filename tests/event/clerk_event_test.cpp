#include "event/clerk_event.hpp"

#include <doctest/doctest.h>

#include <chrono>

#include "event/envelope.hpp"
#include "support/support.hpp"

namespace ev = clerk_sync::event;

namespace {

ev::clerk_event decode_ok(const std::string& body) {
  auto r = ev::decode(body);
  if (auto* err = std::get_if<ev::decode_error>(&r)) FAIL("decode failed: " << err->reason);
  return std::get<ev::clerk_event>(r);
}

ev::clerk_event fixture(const std::string& name) {
  return decode_ok(clerk_sync::test::read_file(clerk_sync::test::source_path("tests/fixtures/clerk/" + name)));
}

std::string reason_of(const std::string& body) {
  auto r = ev::decode(body);
  REQUIRE(std::holds_alternative<ev::decode_error>(r));
  return std::get<ev::decode_error>(r).reason;
}

}  // namespace

TEST_CASE("Clerk's example user.created decodes, with its seconds timestamp normalized to ms") {
  const auto e = fixture("user.created.json");
  CHECK(e.type == "user.created");
  CHECK(e.timestamp_ms == 1716883200000);
  const auto& u = std::get<ev::user>(e.data);
  CHECK(u.id == "user_2g7np7Hrk0SN6kj5EDMLDaKNL0S");
  CHECK(u.first_name == "John");
  CHECK(u.last_name == "Doe");
  CHECK_FALSE(u.username.has_value());
  CHECK_FALSE(u.email.has_value());  // email_addresses is empty in the example
  CHECK(u.updated_at == 1716883200000);
  CHECK(u.last_sign_in_at == 1716883200000);
  CHECK(ev::user_id_of(e) == u.id);
}

TEST_CASE("the primary email is the entry named by primary_email_address_id - ms timestamps stay ms") {
  const auto docs = fixture("docs_user_created.json");
  CHECK(docs.timestamp_ms == 1654012591835);
  CHECK(std::get<ev::user>(docs.data).email == "example@example.org");
  const auto real = fixture("real_user_created.json");
  const auto& u = std::get<ev::user>(real.data);
  CHECK(u.email == "user@example.com");
  CHECK_FALSE(u.last_sign_in_at.has_value());  // null in the real delivery
  CHECK(u.updated_at == 1744276393626);

  const auto e = decode_ok(R"({"type":"user.updated","timestamp":1,"data":{"id":"u1","updated_at":5,"public_metadata":{},
      "primary_email_address_id":"b","email_addresses":[{"id":"a","email_address":"a@x"},{"id":"b","email_address":"b@x"}]}})");
  CHECK(std::get<ev::user>(e.data).email == "b@x");
}

TEST_CASE("user.deleted carries only the id - every session example decodes with its embedded user") {
  const auto d = fixture("user.deleted.json");
  CHECK(std::get<ev::user_deleted>(d.data).id == "user_2g7np7Hrk0SN6kj5EDMLDaKNL0S");
  CHECK(d.timestamp_ms == 1716883200000);
  for (const char* status : {"created", "pending", "ended", "removed", "revoked"}) {
    const auto e = fixture(std::string("session.") + status + ".json");
    const auto& s = std::get<ev::session>(e.data);
    CHECK(s.id == "sess_2g7np7Hrk0SN6kj5EDMLDaKNL0S");
    CHECK(s.user_id == "user_2g7np7Hrk0SN6kj5EDMLDaKNL0S");
    CHECK(s.status == (std::string(status) == "created" ? "active" : status));
    CHECK(s.expire_at == 1716969600000);
    REQUIRE(s.embedded_user.has_value());
    CHECK(s.embedded_user->first_name == "John");
  }
}

TEST_CASE("metadata: public before private, unsafe never - numbers keep their exact text") {
  const auto e = decode_ok(R"({"type":"user.updated","timestamp":1716883200000,"data":{"id":"u1","updated_at":5,
      "public_metadata":{"role":"vip","g2a_balance":123456789012345678901234567890.000000000000000001},
      "private_metadata":{"role":"admin","points_balance":"42","referrer_id":"u2","nft_count":null},
      "unsafe_metadata":{"nft_count":99,"referral_code":"EVIL"}}})");
  const auto& k = std::get<ev::user>(e.data).keys;
  CHECK(k.role->text == "vip");
  CHECK(k.g2a_balance->text == "123456789012345678901234567890.000000000000000001");
  CHECK(k.points_balance->text == "42");
  CHECK(k.referrer_id->text == "u2");
  CHECK_FALSE(k.nft_count.has_value());      // null in private, absent in public; unsafe ignored
  CHECK_FALSE(k.referral_code.has_value());  // only in unsafe_metadata
  const auto obj = decode_ok(R"({"type":"user.created","data":{"id":"u","updated_at":1,"public_metadata":{"g2a_balance":{"x":1}}}})");
  CHECK(std::get<ev::user>(obj.data).keys.g2a_balance->composite);
}

TEST_CASE("metadata: the first of duplicate keys counts, a null, empty or composite public value falls back") {
  const auto keys = [](const std::string& pub, const std::string& priv) {
    return std::get<ev::user>(decode_ok(R"({"type":"user.updated","data":{"id":"u","updated_at":1,"public_metadata":)" +
                                        pub + R"(,"private_metadata":)" + priv + "}}")
                                  .data)
        .keys;
  };
  CHECK(keys(R"({"role":"vip","role":"admin"})", "{}").role->text == "vip");
  // The first is null: as absent in public, so private's answers.
  CHECK(keys(R"({"role":null,"role":"vip"})", R"({"role":"admin"})").role->text == "admin");
  CHECK(keys("{}", R"({"role":"admin","role":"vip"})").role->text == "admin");
  CHECK_FALSE(keys("{}", "null").role.has_value());
  // A public value that cannot be one (empty, an object, an array) does not
  // hide private's: an empty public referral_code gave the user's code away.
  CHECK(keys(R"({"referral_code":""})", R"({"referral_code":"X"})").referral_code->text == "X");
  CHECK(keys(R"({"role":""})", R"({"role":"admin"})").role->text == "admin");
  CHECK(keys(R"({"g2a_balance":{}})", R"({"g2a_balance":"5"})").g2a_balance->text == "5");
  CHECK(keys(R"({"points_balance":[]})", R"({"points_balance":7})").points_balance->text == "7");
  // Without one in private, public's stands, an object amount included.
  CHECK(keys(R"({"g2a_balance":{}})", "{}").g2a_balance->composite);
  CHECK(keys(R"({"referral_code":""})", "{}").referral_code->text.empty());
  // A boolean is no value of these keys: composite, as an object is.
  CHECK(keys(R"({"referrer_id":true})", R"({"referrer_id":"user_r"})").referrer_id->text == "user_r");
  CHECK(*keys(R"({"referrer_id":false})", "{}").referrer_id == ev::scalar{"boolean", true});
}

TEST_CASE("a user whose metadata is no object, or whose banned is no boolean, is refused: read as empty, it reset the user") {
  const auto user = [](const std::string& fields) {
    return R"({"type":"user.updated","data":{"id":"u","updated_at":1,)" + fields + "}}";
  };
  // Read as an object without keys, [1,2] made an admin a spacer and zeroed
  // the balances; "true" read as false unbanned a banned user.
  CHECK(reason_of(user(R"("public_metadata":[1,2])")) == "user whose public_metadata is not an object");
  CHECK(reason_of(user(R"("public_metadata":{},"private_metadata":"x")")) ==
        "user whose private_metadata is not an object");
  CHECK(reason_of(user(R"("banned":"true")")) == "user whose banned is not a boolean");
  CHECK(reason_of(user(R"("banned":1)")) == "user whose banned is not a boolean");
  // Clerk always sends public_metadata (`{}` when empty): one missing or
  // null is no whole user, and read as empty it reset the user just the
  // same. private_metadata may be null (Clerk's own examples).
  CHECK(reason_of(user(R"("banned":true)")) == "user without public_metadata");
  CHECK(reason_of(user(R"("public_metadata":null,"private_metadata":{"role":"admin"})")) ==
        "user without public_metadata");
  const auto ok = decode_ok(user(R"("banned":null,"public_metadata":{},"private_metadata":null)"));
  CHECK_FALSE(std::get<ev::user>(ok.data).banned);
  CHECK(std::get<ev::user>(decode_ok(user(R"("banned":true,"public_metadata":{})")).data).banned);
}

TEST_CASE("a session's embedded user that is refused leaves the session, and says why") {
  const auto session = [](const std::string& user) {
    return std::get<ev::session>(decode_ok(R"({"type":"session.created","data":{"id":"s","user_id":"u1",)"
                                           R"("status":"active","updated_at":5,"user":)" + user + "}}")
                                     .data);
  };
  const auto other = session(R"({"id":"u2","updated_at":5,"public_metadata":{}})");
  CHECK_FALSE(other.embedded_user.has_value());
  CHECK(other.embedded_user_error == "embedded user id differs from data.user_id");
  const auto bad = session(R"({"id":"u1"})");
  CHECK_FALSE(bad.embedded_user.has_value());
  CHECK(bad.embedded_user_error == "embedded user without a numeric updated_at");
  // A user cut short (its metadata left out) would unban, demote and zero.
  const auto short_user = session(R"({"id":"u1","updated_at":5})");
  CHECK_FALSE(short_user.embedded_user.has_value());
  CHECK(short_user.embedded_user_error == "embedded user without public_metadata");
  const auto good = session(R"({"id":"u1","updated_at":5,"public_metadata":{"role":"vip"}})");
  REQUIRE(good.embedded_user.has_value());
  CHECK(good.embedded_user->keys.role->text == "vip");
  CHECK(good.embedded_user_error.empty());
}

TEST_CASE("bodies that cannot be decoded say why - unknown types and fields are ignored") {
  CHECK(reason_of("not json").starts_with("not JSON"));
  CHECK(reason_of("[1,2]") == "body is not a JSON object");
  CHECK(reason_of(R"({"data":{}})") == "event without type");
  CHECK(reason_of(R"({"type":"user.created","data":{"updated_at":1}})") == "user without data.id");
  CHECK(reason_of(R"({"type":"user.updated","data":{"id":"u"}})") == "user without a numeric updated_at");
  CHECK(reason_of(R"({"type":"session.created","data":{"id":"s","updated_at":1}})") ==
        "session without data.user_id");
  CHECK(reason_of(R"({"type":"user.deleted","data":{"id":"u"}})") == "user.deleted without a numeric timestamp");
  const auto other = decode_ok(R"({"type":"email.created","data":{"whatever":true}})");
  CHECK(std::holds_alternative<ev::other>(other.data));
  const auto extra = decode_ok(R"({"type":"user.created","new_field":[1],"data":{"id":"u","updated_at":1,"x":{},"public_metadata":{}}})");
  CHECK(std::get<ev::user>(extra.data).id == "u");
}

TEST_CASE("envelope timestamps below 10^11 are seconds") {
  CHECK(ev::normalize_timestamp_ms(1716883200) == 1716883200000);
  CHECK(ev::normalize_timestamp_ms(1716883200123) == 1716883200123);
  // A negative time (from the fuzzer: -922337203689185525 overflowed when scaled) is no time.
  CHECK(ev::normalize_timestamp_ms(-922337203689185525) == 0);
  CHECK(reason_of(R"({"type":"user.deleted","timestamp":-92230000000133408,"data":{"id":"u"}})") ==
        "user.deleted without a numeric timestamp");
}

TEST_CASE("a number too large for a double anywhere in the body neither refuses the event nor loses its text") {
  // RapidJSON refuses a whole document over one such number, even when
  // numbers are read as text; unsafe_metadata is the end user's to write.
  const std::string digits400(400, '7');
  const auto e = decode_ok(R"({"type":"user.updated","timestamp":1716883200000,"data":{"id":"u1","updated_at":5,
      "banned":true,"public_metadata":{"g2a_balance":1e400,"points_balance":-0.5E+1},
      "private_metadata":{"nft_count":)" + digits400 + R"(},
      "unsafe_metadata":{"x":1e400,"y":[-)" + digits400 + R"(.5e-3,1,"1e400"]}}})");
  const auto& u = std::get<ev::user>(e.data);
  CHECK(u.banned);
  CHECK(u.updated_at == 5);
  CHECK(u.keys.g2a_balance->text == "1e400");
  CHECK(u.keys.points_balance->text == "-0.5E+1");
  CHECK(u.keys.nft_count->text == digits400);
  // Still not JSON: a huge number does not hide a broken body, nor make one valid.
  CHECK(reason_of(R"({"type":"user.updated","data":{"id":"u","updated_at":1,"x":1e400,}})").starts_with("not JSON"));
  for (const char* broken : {R"({"a":1e400,"b":01})", R"({"a":1e400,"b":1.})", R"({"a":1e400,"b":-})",
                             R"({"a":1e400,"b":1e})", R"({"a":1e400 2})", R"({"a":1e400,"b":"x)",
                             // a run that is no single number, and a number where a key belongs
                             R"({"a":1e400.5})", R"({"a":1e400e5})", R"({"a":-1e400.0e-1})", R"({"a":1e400,7:8})",
                             R"({"a":[1e400],"b":{"c":1,2:3}})"})
    CHECK_MESSAGE(reason_of(broken).starts_with("not JSON"), broken);
}

TEST_CASE("a body of long digit runs after a number too large for a double is read in linear time") {
  // Each run ends in no number (a dot with no digit after it): a rewrite
  // that rescanned a run from each of its characters took minutes on 1 MiB.
  std::string body = R"({"type":"user.updated","data":{"id":"u","updated_at":1,"x":1e400,"y":[)";
  while (body.size() < 1024 * 1024) body += std::string(100'000, '1') + ".,";
  body += "1]}}";
  const auto started = std::chrono::steady_clock::now();
  CHECK(reason_of(body).starts_with("not JSON"));
  CHECK(std::holds_alternative<ev::envelope_error>(ev::read_envelope(body)));
  // Milliseconds when linear; a wide bound for a loaded machine.
  CHECK(std::chrono::steady_clock::now() - started < std::chrono::seconds(10));
}
