#include "verify/svix.hpp"

#include <doctest/doctest.h>
#include <rapidjson/document.h>

#include <map>

#include "support/support.hpp"

namespace verify = clerk_sync::verify;
using namespace std::chrono_literals;

namespace {

struct vector_case {
  std::string name, secret, id, timestamp, payload, signature;
};

std::string payload_of(const rapidjson::Value& v) {
  if (v.HasMember("payload")) return v["payload"].GetString();
  const auto& rep = v["payload_repeat"];
  return std::string(rep["count"].GetUint(), rep["char"].GetString()[0]);
}

struct vectors {
  std::map<std::string, vector_case> valid;  // by name
  std::vector<vector_case> invalid, multi_valid;
};

vectors load_vectors() {
  const auto text = clerk_sync::test::read_file(clerk_sync::test::source_path("tests/fixtures/svix/svix-vectors.json"));
  rapidjson::Document doc;
  doc.Parse(text.data(), text.size());
  REQUIRE_FALSE(doc.HasParseError());
  vectors out;
  for (const auto& v : doc["valid"].GetArray())
    out.valid[v["name"].GetString()] = {v["name"].GetString(), v["secret"].GetString(), v["id"].GetString(),
                                        v["timestamp"].GetString(), payload_of(v), v["signature"].GetString()};
  auto like = [&](const rapidjson::Value& v) {
    const std::string base = v["like"].GetString();
    const auto it = out.valid.find(base);
    REQUIRE(it != out.valid.end());
    auto c = it->second;
    c.name = v["name"].GetString();
    c.signature = v["signature"].GetString();
    return c;
  };
  for (const auto& v : doc["invalid"].GetArray()) out.invalid.push_back(like(v));
  for (const auto& v : doc["multi_valid"].GetArray()) out.multi_valid.push_back(like(v));
  REQUIRE(out.valid.size() == 6);
  REQUIRE(out.invalid.size() == 5);
  return out;
}

std::chrono::system_clock::time_point at(std::int64_t seconds) {
  return std::chrono::system_clock::time_point(std::chrono::seconds(seconds));
}

verify::verdict check(const vector_case& c, std::int64_t now_offset = 0) {
  const verify::signed_headers h{c.id, c.timestamp, c.signature};
  return verify::verify(c.payload, h, {verify::parse_secret(c.secret)}, at(std::stoll(c.timestamp) + now_offset));
}

}  // namespace

TEST_CASE("every published valid vector verifies, and sign() reproduces its signature") {
  const auto v = load_vectors();
  for (const auto& [name, c] : v.valid) {
    CAPTURE(name);
    CHECK(check(c).ok());
    CHECK(verify::sign(verify::parse_secret(c.secret), c.id, c.timestamp, c.payload) == c.signature);
    CHECK(verify::sign(verify::parse_secret(c.secret), c.id, std::stoll(c.timestamp), c.payload) == c.signature);
  }
  CHECK(verify::parse_secret(v.valid.at("C (18-byte key)").secret).size() == 18);
}

TEST_CASE("every published invalid vector is rejected with 401 - decoys plus one valid entry pass") {
  const auto v = load_vectors();
  for (const auto& c : v.invalid) {
    CAPTURE(c.name);
    const auto r = check(c);
    CHECK(r.why == verify::reason::no_matching_signature);
    CHECK(r.http_status() == 401);
  }
  for (const auto& c : v.multi_valid) {
    CAPTURE(c.name);
    CHECK(check(c).ok());
  }
}

TEST_CASE("timestamps: exactly the tolerance passes, one second more fails either way - strict integers only") {
  const auto c = load_vectors().valid.at("A");
  CHECK(check(c, 300).ok());
  CHECK(check(c, -300).ok());
  CHECK(check(c, 301).why == verify::reason::timestamp_too_old);
  CHECK(check(c, -301).why == verify::reason::timestamp_too_new);
  const auto k = verify::parse_secret(c.secret);
  const auto now = at(std::stoll(c.timestamp));
  CHECK(verify::verify(c.payload, {c.id, c.timestamp, c.signature}, {k}, now + 60s, 30s).why ==
        verify::reason::timestamp_too_old);
  for (const std::string bad : {" 1614265330", "1614265330 ", "+1614265330", "1614265330.0", "0x10", "", "abc",
                                "1234567890123456789012"}) {
    CAPTURE(bad);
    const auto r = verify::verify(c.payload, {c.id, bad, c.signature}, {k}, now);
    CHECK(r.http_status() == 400);
  }
  // A timestamp changed after signing fails the signature, not the window.
  const auto moved = std::to_string(std::stoll(c.timestamp) + 1);
  CHECK(verify::verify(c.payload, {c.id, moved, c.signature}, {k}, now).why ==
        verify::reason::no_matching_signature);
}

TEST_CASE("a missing header fails for svix-* and webhook-* names alike - webhook-* names are accepted") {
  const auto c = load_vectors().valid.at("B");
  const auto k = verify::parse_secret(c.secret);
  const auto now = at(std::stoll(c.timestamp));
  for (const std::string prefix : {"svix-", "webhook-"}) {
    std::map<std::string, std::string> all{
        {prefix + "id", c.id}, {prefix + "timestamp", c.timestamp}, {prefix + "signature", c.signature}};
    auto lookup = [](const std::map<std::string, std::string>& m) {
      return [&m](std::string_view name) -> std::optional<std::string_view> {
        const auto it = m.find(std::string(name));
        if (it == m.end()) return std::nullopt;
        return std::string_view(it->second);
      };
    };
    CHECK(verify::verify(c.payload, verify::pick_headers(lookup(all)), {k}, now).ok());
    for (const auto& [name, value] : all) {
      CAPTURE(name);
      auto less = all;
      less.erase(name);
      const auto r = verify::verify(c.payload, verify::pick_headers(lookup(less)), {k}, now);
      CHECK(r.why == verify::reason::missing_header);
      CHECK(r.http_status() == 400);
    }
  }
}

TEST_CASE("several secrets: any one may match (rotation) - a body changed by one byte fails") {
  const auto c = load_vectors().valid.at("A");
  const auto right = verify::parse_secret(c.secret);
  const auto other = verify::parse_secret(load_vectors().valid.at("B").secret);
  const auto now = at(std::stoll(c.timestamp));
  CHECK(verify::verify(c.payload, {c.id, c.timestamp, c.signature}, {other, right}, now).ok());
  CHECK_FALSE(verify::verify(c.payload, {c.id, c.timestamp, c.signature}, {other}, now).ok());
  CHECK(verify::verify(c.payload, {c.id, c.timestamp, c.signature}, {}, now).why == verify::reason::no_secret);
  auto changed = c.payload;
  changed[3] = static_cast<char>(changed[3] ^ 1);
  CHECK_FALSE(verify::verify(changed, {c.id, c.timestamp, c.signature}, {right}, now).ok());
  CHECK_FALSE(verify::verify(c.payload, {c.id + "x", c.timestamp, c.signature}, {right}, now).ok());
  // Extra spaces and junk entries around a valid one are skipped.
  CHECK(verify::verify(c.payload, {c.id, c.timestamp, "  junk v1 v1," + c.signature.substr(3) + "  "}, {right}, now)
            .ok());
}

TEST_CASE("the headers alone: present, in the window, and a v1 entry of a signature's shape, whatever its value") {
  const auto c = load_vectors().valid.at("A");
  const auto k = verify::parse_secret(c.secret);
  const auto now = at(std::stoll(c.timestamp));
  const auto sig = c.signature.substr(3);  // 44 characters
  REQUIRE(sig.size() == 44);
  struct header_case {
    std::string signature;
    verify::reason why;  // check_headers' verdict
  };
  for (const header_case& h : std::vector<header_case>{
           {c.signature, verify::reason::ok},
           {"v1," + std::string(43, 'A') + "=", verify::reason::ok},  // the shape, not the value
           {"junk v2," + sig + " v1," + sig.substr(1), verify::reason::no_matching_signature},
           {"v1," + sig + "=", verify::reason::no_matching_signature},
           {"v1a," + sig, verify::reason::no_matching_signature},  // another version: a signature, not ours
           // No entry of a signature's shape: malformed, 400 (DESIGN's table), not a wrong signature.
           {"v1" + sig, verify::reason::malformed_signature},
           {"garbage", verify::reason::malformed_signature},
           {",x v, " + sig, verify::reason::malformed_signature},
           {"v1,", verify::reason::no_matching_signature},  // a published invalid vector
           {" ", verify::reason::malformed_signature},
           {"", verify::reason::missing_header},
       }) {
    CAPTURE(h.signature);
    const verify::signed_headers headers{c.id, c.timestamp, h.signature};
    CHECK(verify::check_headers(headers, {k}, now).why == h.why);
  }
  CHECK(verify::check_headers({c.id, c.timestamp, c.signature}, {k}, now + 301s).why ==
        verify::reason::timestamp_too_old);
  CHECK(verify::check_headers({c.id, c.timestamp, c.signature}, {}, now).why == verify::reason::no_secret);
  CHECK(verify::check_headers({c.id, "1e9", c.signature}, {k}, now).why == verify::reason::bad_timestamp);
  const auto garbage = verify::verify(c.payload, {c.id, c.timestamp, "garbage"}, {k}, now);
  CHECK(garbage.why == verify::reason::malformed_signature);
  CHECK(garbage.http_status() == 400);
  CHECK(garbage.text() == "malformed_signature");
  // Judged after the timestamp, as the svix libraries do.
  CHECK(verify::check_headers({c.id, c.timestamp, "garbage"}, {k}, now + 301s).why ==
        verify::reason::timestamp_too_old);
}

TEST_CASE("secrets: whsec_ alone, empty or bad base64 are errors that never echo the value") {
  CHECK_THROWS_AS((void)verify::parse_secret("whsec_"), verify::secret_error);
  CHECK_THROWS_AS((void)verify::parse_secret(""), verify::secret_error);
  CHECK_THROWS_AS((void)verify::parse_secret("whsec_abcde"), verify::secret_error);  // length
  CHECK_THROWS_AS((void)verify::parse_secret("whsec_abc=="), verify::secret_error);  // padding past the length
  CHECK_THROWS_AS((void)verify::parse_secret("whsec_ab!d"), verify::secret_error);   // alphabet
  CHECK_THROWS_AS((void)verify::parse_secret("whsec_a=bc"), verify::secret_error);   // inner padding
  try {
    (void)verify::parse_secret("whsec_SECRETVALUE!");
    FAIL("no throw");
  } catch (const verify::secret_error& e) {
    CHECK(std::string(e.what()).find("SECRETVALUE") == std::string::npos);
  }
  const std::string key("\x00\x01\xfe\xff key", 8);
  CHECK(verify::parse_secret(verify::format_secret(key)) == key);
  CHECK(verify::parse_secret("MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw") ==
        verify::parse_secret("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"));
}

TEST_CASE("a secret without its trailing '=' padding is the same key, as svix's libraries read it") {
  // Keys of 1, 2 and 3 bytes past a multiple of three: two, one and no '='.
  for (const auto& key : {std::string("0123456789abcdef0"), std::string("0123456789abcdef01"),
                                std::string("0123456789abcdef012")}) {
    const auto padded = verify::format_secret(key);
    std::string unpadded = padded;
    while (unpadded.back() == '=') unpadded.pop_back();
    INFO(key.size());
    CHECK(verify::parse_secret(unpadded) == key);
    CHECK(verify::parse_secret(padded) == key);
  }
  // The vectors' secret of 24 bytes needs no padding; Clerk's of 32 bytes needs one '='.
  const std::string clerk = "whsec_" + std::string(43, 'A') + "=";
  CHECK(verify::parse_secret(clerk.substr(0, clerk.size() - 1)) == verify::parse_secret(clerk));
  CHECK(verify::parse_secret(clerk).size() == 32);
  // Cut short by a character more, it would be another key (every webhook
  // 401): only the canonical spelling, the bits past the last byte zero, is
  // taken, so that start-up stops instead.
  const auto full = verify::format_secret(std::string(32, '\xff'));  // whsec_////…//8=
  CHECK(verify::parse_secret(full.substr(0, full.size() - 1)).size() == 32);
  CHECK_THROWS_AS((void)verify::parse_secret(full.substr(0, full.size() - 2)), verify::secret_error);
  CHECK_THROWS_AS((void)verify::parse_secret(full.substr(0, full.size() - 3)), verify::secret_error);
  CHECK_THROWS_AS((void)verify::parse_secret("whsec_AB=="), verify::secret_error);  // B's low bits set
  CHECK(verify::parse_secret("whsec_AA==") == std::string(1, '\0'));
}

TEST_CASE("secret lists: spaces or commas in the variable, one per line in the file") {
  const std::string a = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw", b = "whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD";
  CHECK(verify::parse_secret_list(a).size() == 1);
  CHECK(verify::parse_secret_list(a + " " + b).size() == 2);
  CHECK(verify::parse_secret_list(a + "," + b).size() == 2);
  CHECK(verify::parse_secret_list(" " + a + ", " + b + " ").size() == 2);
  CHECK_THROWS_AS((void)verify::parse_secret_list(""), verify::secret_error);
  CHECK_THROWS_AS((void)verify::parse_secret_list(" , "), verify::secret_error);
  CHECK_THROWS_AS((void)verify::parse_secret_list(a + " whsec_"), verify::secret_error);
  const auto keys = verify::parse_secret_file("# rotation\n" + a + "\r\n\n" + b + "\n");
  REQUIRE(keys.size() == 2);
  CHECK(keys[1] == verify::parse_secret(b));
  CHECK_THROWS_AS((void)verify::parse_secret_file("\n# nothing\n"), verify::secret_error);
}
