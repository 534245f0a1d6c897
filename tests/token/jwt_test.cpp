#include "token/jwt.hpp"

#include <doctest/doctest.h>

#include <random>
#include <string>

#include "token/signer.hpp"

namespace token = clerk_sync::token;
using clerk_sync::test::rsa_signer;
using namespace std::chrono_literals;

namespace {

// One key pair per test binary: RSA generation is the slow part.
const rsa_signer& signer() {
  static const rsa_signer s;
  return s;
}
const rsa_signer& other_signer() {
  static const rsa_signer s;
  return s;
}

const auto now = std::chrono::system_clock::time_point(std::chrono::seconds(1'800'000'000));
constexpr std::int64_t t = 1'800'000'000;

std::string payload(std::int64_t exp = t + 60, std::string extra = "") {
  return R"({"azp":"https://app.example","exp":)" + std::to_string(exp) + R"(,"iat":)" + std::to_string(t - 5) +
         R"(,"iss":"https://clerk.example","nbf":)" + std::to_string(t - 10) +
         R"(,"sid":"sess_1","sub":"user_1")" + extra + "}";
}
const std::string header = R"({"alg":"RS256","kid":"ins_1","typ":"JWT"})";

token::options opts() {
  token::options o;
  o.authorized_parties = {"https://app.example", "https://admin.example"};
  return o;
}

token::reason check(const std::string& tok, const token::options& o = opts()) {
  return token::verify(tok, token::key_set::from_pem(signer().public_pem()), o, now).why;
}

}  // namespace

TEST_CASE("token: a valid session token yields its claims") {
  const auto v = token::verify(signer().sign(header, payload()), token::key_set::from_pem(signer().public_pem()),
                               opts(), now);
  REQUIRE(v.ok());
  CHECK(v.text() == "ok");
  CHECK(v.claims.sub == "user_1");
  CHECK(v.claims.sid == "sess_1");
  CHECK(v.claims.azp == "https://app.example");
  CHECK(v.claims.iss == "https://clerk.example");
  CHECK(v.claims.kid == "ins_1");
  CHECK(v.claims.exp == t + 60);
  CHECK(v.claims.iat == t - 5);
  CHECK(v.claims.payload == payload());
}

TEST_CASE("token: time claims honour the clock skew at Clerk's boundaries") {
  CHECK(check(signer().sign(header, payload(t - 4))) == token::reason::ok);        // within the 5 s skew
  CHECK(check(signer().sign(header, payload(t - 5))) == token::reason::expired);   // exp * 1000 <= now - skew
  CHECK(check(signer().sign(header, payload(t - 3600))) == token::reason::expired);
  auto o = opts();
  o.clock_skew = 0s;
  CHECK(check(signer().sign(header, payload(t)), o) == token::reason::expired);
  CHECK(check(signer().sign(header, payload(t + 1)), o) == token::reason::ok);
  const std::string future_nbf = R"({"alg":"RS256"})";
  auto p = [](std::int64_t nbf, std::int64_t iat) {
    return R"({"exp":)" + std::to_string(t + 600) + R"(,"iat":)" + std::to_string(iat) + R"(,"nbf":)" +
           std::to_string(nbf) + R"(,"sid":"s","sub":"u","azp":"https://app.example"})";
  };
  CHECK(check(signer().sign(future_nbf, p(t + 5, t))) == token::reason::ok);
  CHECK(check(signer().sign(future_nbf, p(t + 6, t))) == token::reason::not_yet_valid);
  CHECK(check(signer().sign(future_nbf, p(t, t + 6))) == token::reason::issued_in_future);
  CHECK(check(signer().sign(future_nbf, R"({"sub":"u","sid":"s","azp":"https://app.example"})")) ==
        token::reason::bad_time_claim);
  CHECK(check(signer().sign(future_nbf, R"({"sub":"u","sid":"s","exp":"1900000000"})"), {}) ==
        token::reason::bad_time_claim);
  CHECK(check(signer().sign(future_nbf, R"({"sub":"u","sid":"s","exp":1900000000,"nbf":null})"), {}) ==
        token::reason::bad_time_claim);
}

TEST_CASE("token: a time claim with a fraction counts its whole seconds, as Clerk's setUTCSeconds does") {
  // Date#setUTCSeconds truncates toward zero: exp 1799999995.9 is
  // 1799999995000 ms to Clerk, so expired at now - 5 s; never 900 ms more.
  const std::string h = R"({"alg":"RS256"})";
  const auto p = [](const std::string& exp, const std::string& nbf, const std::string& iat) {
    return R"({"exp":)" + exp + R"(,"iat":)" + iat + R"(,"nbf":)" + nbf + R"(,"sid":"s","sub":"u"})";
  };
  const token::options o;
  CHECK(check(signer().sign(h, p("1799999995.9", "1799999990", "1799999990")), o) == token::reason::expired);
  CHECK(check(signer().sign(h, p("1799999996.1", "1799999990", "1799999990")), o) == token::reason::ok);
  // nbf and iat the other way: their fraction never makes them later.
  CHECK(check(signer().sign(h, p("1800000600", "1800000005.9", "1799999990")), o) == token::reason::ok);
  CHECK(check(signer().sign(h, p("1800000600", "1799999990", "1800000005.9")), o) == token::reason::ok);
  CHECK(check(signer().sign(h, p("1800000600", "1800000006.1", "1799999990")), o) == token::reason::not_yet_valid);
}

TEST_CASE("token: azp must be an authorized party when any are configured") {
  CHECK(check(signer().sign(header, payload(t + 60, R"(,"azp2":1)"))) == token::reason::ok);
  const std::string evil = R"({"exp":1800000060,"sid":"s","sub":"u","azp":"https://evil.example"})";
  CHECK(check(signer().sign(header, evil)) == token::reason::bad_azp);
  CHECK(check(signer().sign(header, R"({"exp":1800000060,"sid":"s","sub":"u"})")) == token::reason::bad_azp);
  CHECK(check(signer().sign(header, evil), {}) == token::reason::ok);
}

TEST_CASE("token: the issuer is checked when configured") {
  auto o = opts();
  o.issuer = "https://clerk.example";
  CHECK(check(signer().sign(header, payload()), o) == token::reason::ok);
  o.issuer = "https://other.example";
  CHECK(check(signer().sign(header, payload()), o) == token::reason::bad_issuer);
}

TEST_CASE("token: only RS256 signed by a configured key passes") {
  const std::string p = payload();
  CHECK(check(clerk_sync::test::unsigned_token(R"({"alg":"none"})", p)) == token::reason::unsupported_alg);
  CHECK(check(clerk_sync::test::unsigned_token(R"({"typ":"JWT"})", p)) == token::reason::unsupported_alg);
  // Algorithm confusion: the public key itself used as an HMAC secret.
  CHECK(check(clerk_sync::test::sign_hs256(R"({"alg":"HS256"})", p, signer().public_pem())) ==
        token::reason::unsupported_alg);
  CHECK(check(other_signer().sign(header, p)) == token::reason::bad_signature);
  CHECK(check(signer().sign(R"({"alg":"RS256","typ":"JOSE"})", p)) == token::reason::bad_type);
  // Clerk names the kind of token in `cat`: a session token's, the marker
  // of instances that stamp one on every kind, or none (older tokens) pass;
  // a JWT template's (any signed-in user mints one, with claims of the
  // template's choosing, sid included), a machine token's, an unknown one
  // or a non-string do not.
  CHECK(check(signer().sign(R"({"alg":"RS256","cat":"cl_B7d4PD111AAA"})", p)) == token::reason::ok);
  CHECK(check(signer().sign(R"({"alg":"RS256","cat":"cl_I7d4PD111III"})", p)) == token::reason::ok);
  CHECK(check(signer().sign(R"({"alg":"RS256","cat":"cl_B7d4PD222AAA"})", p)) == token::reason::bad_type);
  CHECK(check(signer().sign(R"({"alg":"RS256","cat":"cl_B7d4PD333AAA"})", p)) == token::reason::bad_type);
  CHECK(check(signer().sign(R"({"alg":"RS256","cat":"cl_B7d4PD444AAA"})", p)) == token::reason::bad_type);
  CHECK(check(signer().sign(R"({"alg":"RS256","cat":""})", p)) == token::reason::bad_type);
  CHECK(check(signer().sign(R"({"alg":"RS256","cat":null})", p)) == token::reason::bad_type);
  CHECK(check(signer().sign(R"({"alg":"RS384"})", p)) == token::reason::unsupported_alg);

  // Tampering with any part after signing.
  const std::string good = signer().sign(header, p);
  const auto d1 = good.find('.');
  const auto d2 = good.find('.', d1 + 1);
  const std::string other_payload = token::base64url_encode(payload(t + 6000));
  CHECK(check(good.substr(0, d1 + 1) + other_payload + good.substr(d2)) == token::reason::bad_signature);
  const std::string other_header = token::base64url_encode(R"({"alg":"RS256","kid":"ins_2"})");
  CHECK(check(other_header + good.substr(d1)) == token::reason::bad_signature);
  std::string flipped = good;
  flipped[d2 + 10] = flipped[d2 + 10] == 'A' ? 'B' : 'A';
  CHECK(check(flipped) == token::reason::bad_signature);
  CHECK(check(good.substr(0, d2 + 1)) == token::reason::bad_signature);
}

TEST_CASE("token: several PEM keys for rotation, and JWKS picks by kid") {
  const std::string p = payload();
  const auto both = token::key_set::from_pem(signer().public_pem() + "\n" + other_signer().public_pem());
  CHECK(both.size() == 2);
  CHECK(token::verify(other_signer().sign(header, p), both, opts(), now).ok());
  CHECK(token::verify(signer().sign(header, p), both, opts(), now).ok());

  const auto jwks = token::key_set::from_jwks(R"({"keys":[)" + signer().jwk("ins_1") + "," +
                                              other_signer().jwk("ins_2") + R"(,{"kty":"EC","kid":"x"}]})");
  CHECK(jwks.size() == 2);
  CHECK(token::verify(signer().sign(header, p), jwks, opts(), now).ok());
  CHECK(token::verify(other_signer().sign(R"({"alg":"RS256","kid":"ins_2"})", p), jwks, opts(), now).ok());
  CHECK(token::verify(signer().sign(R"({"alg":"RS256","kid":"ins_9"})", p), jwks, opts(), now).why ==
        token::reason::unknown_kid);
  // The right kid with the other key's signature: that key alone is tried.
  CHECK(token::verify(other_signer().sign(header, p), jwks, opts(), now).why == token::reason::bad_signature);
  // No kid: every key is tried.
  CHECK(token::verify(other_signer().sign(R"({"alg":"RS256"})", p), jwks, opts(), now).ok());
}

TEST_CASE("token: session claims: sub, sid, pending status") {
  CHECK(check(signer().sign(header, R"({"exp":1800000060,"sid":"s","azp":"https://app.example"})")) ==
        token::reason::missing_sub);
  CHECK(check(signer().sign(header, R"({"exp":1800000060,"sid":"s","sub":7,"azp":"https://app.example"})")) ==
        token::reason::missing_sub);
  // Found by the token fuzzer: an empty sub verified, a session of nobody.
  CHECK(check(signer().sign(header, R"({"exp":1800000060,"sid":"s","sub":"","azp":"https://app.example"})")) ==
        token::reason::missing_sub);
  CHECK(check(signer().sign(header, R"({"exp":1800000060,"sub":"u","azp":"https://app.example"})")) ==
        token::reason::missing_sid);
  // clerk-sync-auth puts sub and sid in response headers: a CR LF, any
  // control byte, a space or non-ASCII would forge one there.
  for (const char* bad : {R"(user_1\r\nX-Clerk-Role: admin)", R"(user_1\n)", R"(user 1)", R"(user_\u0000)",
                          R"(user_\u007f)", "user_\u00e9"}) {
    const std::string sub = std::string(R"(","sub":")") + bad + R"(","azp":"https://app.example"})";
    CHECK_MESSAGE(check(signer().sign(header, std::string(R"({"exp":1800000060,"sid":"sess_1)") + sub)) ==
                      token::reason::missing_sub,
                  bad);
    const std::string sid = std::string(R"({"exp":1800000060,"sub":"user_1","azp":"https://app.example","sid":")") +
                            bad + R"("})";
    CHECK_MESSAGE(check(signer().sign(header, sid)) == token::reason::missing_sid, bad);
  }
  CHECK(check(signer().sign(header, R"({"exp":1800000060,"sid":"sess_2Zx-9","sub":"user_2Zx~.9","azp":"https://app.example"})")) ==
        token::reason::ok);
  const std::string pending = payload(t + 60, R"(,"sts":"pending")");
  CHECK(check(signer().sign(header, pending)) == token::reason::session_pending);
  auto o = opts();
  o.allow_pending = true;
  CHECK(check(signer().sign(header, pending), o) == token::reason::ok);
  CHECK(check(signer().sign(header, payload(t + 60, R"(,"sts":"active")"))) == token::reason::ok);
}

TEST_CASE("token: malformed input is a verdict, never an exception") {
  for (const std::string_view bad : {"", ".", "..", "a.b", "a.b.c.d", "!!.??.**", "e30.e30.e30.", "e30.e30",
                                "bnVsbA.e30.", "e30.bnVsbA.", "W10.e30.", "e30.e30.A", "e30.e30.AB"})
    CHECK_MESSAGE(check(std::string(bad)) == token::reason::malformed, bad);
  CHECK(check("e30.e30.") == token::reason::unsupported_alg);

  // A member named twice, signed: RapidJSON would read the first, Clerk's
  // JSON.parse the last, so the two could disagree on what was signed.
  CHECK(check(signer().sign(R"({"alg":"RS256","typ":"JWT","typ":"at+jwt"})", payload())) ==
        token::reason::malformed);
  CHECK(check(signer().sign(R"({"alg":"RS256","alg":"RS256"})", payload())) == token::reason::malformed);
  const auto doubled_sub = payload(t + 60, R"(,"sub":"user_other")");
  REQUIRE(doubled_sub.find(R"("sub":"user_other")") != std::string::npos);
  CHECK(check(signer().sign(header, doubled_sub)) == token::reason::malformed);
  // RapidJSON ends a document at a NUL: signed claims, a NUL, then other
  // claims read as the first object; Clerk's JSON.parse refuses them.
  CHECK(check(signer().sign(header, payload() + std::string(1, '\0') + R"({"sub":"user_admin"})")) ==
        token::reason::malformed);
  CHECK(check(signer().sign(header + std::string(1, '\0'), payload())) == token::reason::malformed);
  // Members of the same name in nested objects are not duplicates.
  CHECK(check(signer().sign(header, payload(t + 60, R"(,"a":{"sub":1},"b":{"sub":2})"))) == token::reason::ok);

  // Random mutations of a valid token: any verdict but ok, and no throw.
  const std::string good = signer().sign(header, payload());
  const auto keys = token::key_set::from_pem(signer().public_pem());
  std::mt19937 rng(13);
  int refused = 0;
  for (int i = 0; i < 3000; ++i) {
    std::string m = good;
    const int edits = 1 + static_cast<int>(rng() % 3);
    for (int e = 0; e < edits; ++e) {
      const std::size_t at = rng() % m.size();
      m[at] = static_cast<char>(rng() % 256);
    }
    if (m == good) continue;
    const auto v = token::verify(m, keys, opts(), now);
    // A flip can only be harmless where base64url has slack; there is none.
    CHECK_FALSE(v.ok());
    ++refused;
  }
  CHECK(refused > 2900);
}

TEST_CASE("token: a signature with '=' padding is refused, so that a token has one spelling") {
  // Clerk's verifyToken accepts any number of '=' after the signature; each
  // would be a new cache entry and a new RSA verification in clerk-sync-auth.
  const std::string good = signer().sign(header, payload());
  REQUIRE(check(good) == token::reason::ok);
  for (const char* pad : {"=", "==", "====="}) CHECK_MESSAGE(check(good + pad) == token::reason::malformed, pad);
  // A JWKS's numbers may still be padded: they are the operator's.
  auto jwk = signer().jwk("ins_1");
  jwk.insert(jwk.find(R"(","e":")"), "==");  // a 2048-bit modulus: 256 bytes, two '=' in padded form
  const auto keys = token::key_set::from_jwks(R"({"keys":[)" + jwk + "]}");
  CHECK(token::verify(good, keys, opts(), now).why == token::reason::ok);
}

TEST_CASE("token: unusable key material is a key_error") {
  CHECK_THROWS_AS((void)token::key_set::from_pem("not a key"), token::key_error);
  CHECK_THROWS_AS((void)token::key_set::from_pem(""), token::key_error);
  // A block OpenSSL would stop at or skip is an error, not a key left out.
  const std::string good = signer().public_pem();
  auto damaged = other_signer().public_pem();
  damaged[damaged.find('\n') + 10] ^= 0x01;  // one base64 character of the key's body
  CHECK_THROWS_WITH_AS((void)token::key_set::from_pem(good + damaged),
                       "1 of 2 PEM blocks could not be read as a \"-----BEGIN PUBLIC KEY-----\" block (each block must be one)",
                       token::key_error);
  CHECK_THROWS_AS((void)token::key_set::from_pem(good + "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n"),
                  token::key_error);
  CHECK(token::key_set::from_pem(good + "\n" + other_signer().public_pem()).size() == 2);
  CHECK_THROWS_AS((void)token::key_set::from_jwks("[]"), token::key_error);
  CHECK_THROWS_AS((void)token::key_set::from_jwks(R"({"keys":[{"kty":"EC"}]})"), token::key_error);
  CHECK_THROWS_AS((void)token::key_set::from_jwks(R"({"keys":[{"kty":"RSA","n":"!!","e":"AQAB"}]})"),
                  token::key_error);
  CHECK_THROWS_AS((void)token::key_set::from_jwks("{"), token::key_error);
  // A key no signature should be trusted under stops start-up: a small
  // modulus, or an exponent of 1 (a "signature" equal to the padded hash
  // would verify) or an even one.
  CHECK_THROWS_WITH_AS((void)token::key_set::from_pem(rsa_signer(1024).public_pem()),
                       "PEM public key 1 is an RSA key of 1024 bits; at least 2048 are required", token::key_error);
  const auto jwk = signer().jwk("ins_e");
  const auto with_e = [&](const std::string& e) {
    auto j = jwk;
    const auto at = j.find(R"("e":")") + 5;
    j.replace(at, j.find('"', at) - at, e);
    return R"({"keys":[)" + j + "]}";
  };
  CHECK(token::key_set::from_jwks(with_e("AQAB")).size() == 1);
  CHECK(token::key_set::from_jwks(with_e("Aw")).size() == 1);  // 3
  for (const char* e : {"AQ", "Ag", "AAE", "AQAA"}) {             // 1, 2, 1 with a zero byte, 65536
    CAPTURE(e);
    CHECK_THROWS_WITH_AS((void)token::key_set::from_jwks(with_e(e)),
                         "the JWKS key with kid \"ins_e\": its RSA public exponent is even or below 3 (Clerk's is 65537)",
                         token::key_error);
  }
}

TEST_CASE("token: base64url is strict and round-trips") {
  for (const std::string& s : {std::string(), std::string("f"), std::string("fo"), std::string("foo"), std::string("foob"),
                              std::string("fooba"), std::string("foobar"), std::string("\0\xff\x10", 3)})
    CHECK(token::base64url_decode(token::base64url_encode(s)) == s);
  CHECK(token::base64url_encode("\xfb\xff") == "-_8");
  CHECK(token::base64url_decode("Zg") == std::optional<std::string>("f"));
  CHECK_FALSE(token::base64url_decode("Zg=="));  // RFC 7515: no padding
  CHECK_FALSE(token::base64url_decode("Zh"));     // stray trailing bits
  CHECK_FALSE(token::base64url_decode("Z"));      // a lone character
  CHECK_FALSE(token::base64url_decode("Zm9v+/"));  // standard alphabet
  CHECK_FALSE(token::base64url_decode("Zm 9v"));
}
