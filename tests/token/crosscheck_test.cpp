// lib/token against a peer nobody here wrote: the official @clerk/backend
// (npm, pinned in tests/token/crosscheck/package-lock.json, installed into
// .local/node by scripts/bootstrap) mints and judges a few hundred tokens —
// valid, expired, not yet valid, wrong or missing azp, tampered header,
// payload and signature, alg none, HS256 signed with the public key, unknown
// kid, truncated — and lib/token must reach the same verdict, for the same
// reason, on every one but the one deliberate difference: a signature
// followed by '=' padding, which Clerk accepts and lib/token refuses (RFC
// 7515 has none, and each padding would be a new entry of clerk-sync-auth's
// cache). Fails, never skips, when node or the SDK is missing.
#include "token/jwt.hpp"

#include <doctest/doctest.h>
#include <rapidjson/document.h>

#include <map>

#include "support/process.hpp"
#include "support/support.hpp"

using namespace clerk_sync;

namespace {

// lib/token's reason -> Clerk's TokenVerificationErrorReason.
std::string clerk_word(token::reason r) {
  switch (r) {
    case token::reason::ok: return "ok";
    case token::reason::malformed:
    case token::reason::bad_type: return "token-invalid";
    case token::reason::unsupported_alg: return "token-invalid-algorithm";
    case token::reason::bad_signature: return "token-invalid-signature";
    case token::reason::missing_sub:
    case token::reason::bad_time_claim: return "token-verification-failed";
    case token::reason::bad_azp: return "token-invalid-authorized-parties";
    case token::reason::bad_issuer: return "token-invalid-issuer";
    case token::reason::expired: return "token-expired";
    case token::reason::not_yet_valid: return "token-not-active-yet";
    case token::reason::issued_in_future: return "token-iat-in-the-future";
    default: return "(" + std::string(token::to_string(r)) + ": no Clerk equivalent)";
  }
}

}  // namespace

TEST_CASE("token crosscheck: @clerk/backend verifyToken and lib/token agree on every token") {
  const int count = 400;  // 20 of each of the 20 kinds
  const auto modules = test::source_path(".local/node/node_modules");
  REQUIRE_MESSAGE(std::filesystem::exists(modules / "@clerk/backend"), "run scripts/bootstrap");
  const auto r = test::run("/usr/bin/node",
                           {test::source_path("tests/token/crosscheck/clerk_verdicts.cjs").string(), modules.string(),
                            std::to_string(count)},
                           {}, std::chrono::seconds(300));
  REQUIRE_MESSAGE(r.status == 0, r.err);
  rapidjson::Document doc;
  doc.Parse(r.out.data(), r.out.size());
  REQUIRE(doc.IsObject());

  const auto pem = token::key_set::from_pem(doc["pem"].GetString());
  const std::string jwks_text = [&] {
    // Re-serialize the JWKS member for key_set::from_jwks.
    const auto& k = doc["jwks"]["keys"][0];
    return std::string(R"({"keys":[{"kty":"RSA","kid":")") + k["kid"].GetString() + R"(","n":")" +
           k["n"].GetString() + R"(","e":")" + k["e"].GetString() + R"("}]})";
  }();
  const auto jwks = token::key_set::from_jwks(jwks_text);
  token::options opts;
  for (const auto& p : doc["authorized_parties"].GetArray()) opts.authorized_parties.emplace_back(p.GetString());
  opts.clock_skew = std::chrono::milliseconds(doc["clock_skew_ms"].GetInt64());

  std::map<std::string, int> accepted;
  std::map<std::string, int> seen;
  int compared = 0;
  for (const auto& v : doc["verdicts"].GetArray()) {
    const std::string kind = v["kind"].GetString();
    const std::string tok = v["token"].GetString();
    const bool clerk_ok = v["ok"].GetBool();
    const std::string clerk_reason = v["reason"].GetString();
    const auto now = std::chrono::system_clock::now();
    const auto ours = token::verify(tok, pem, opts, now);
    INFO(kind << ": clerk " << clerk_reason << ", lib/token " << ours.text());
    if (kind == "padded_signature") {
      CHECK(clerk_ok);
      CHECK(ours.why == token::reason::malformed);
    } else {
      CHECK(ours.ok() == clerk_ok);
      CHECK(clerk_word(ours.why) == clerk_reason);
    }
    // With a JWKS, the kid must name a key: Clerk's jwtKey mode ignores it.
    const auto by_kid = token::verify(tok, jwks, opts, now);
    if (kind.rfind("unknown_kid", 0) == 0)
      CHECK(by_kid.why == token::reason::unknown_kid);
    else if (kind != "tampered_header")  // a changed kid may name no key
      CHECK(by_kid.why == ours.why);
    ++seen[kind];
    if (clerk_ok) ++accepted[kind];
    ++compared;
  }
  CHECK(compared == count);
  CHECK(seen.size() == 20);
  // The sample holds both verdicts, so agreement is not trivial.
  CHECK(accepted["valid"] == 20);
  CHECK(accepted["expired_within_skew"] == 20);
  CHECK(accepted["unknown_kid_right_key"] == 20);
  CHECK(accepted["expired"] == 0);
  CHECK(accepted["hs256_with_public_key"] == 0);
  CHECK(accepted["alg_none"] == 0);
  CHECK(accepted["padded_signature"] == 20);
  MESSAGE("compared " << compared << " tokens with @clerk/backend");
}
