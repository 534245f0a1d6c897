// verify-token: why is this session token refused? Prints the claims as JSON
// and exits 0 when the token is valid now, or the reason word with the
// figures behind it and exits 1. The token comes from the command line or
// stdin ("-"); it is never logged.
#include <chrono>
#include <cstdio>
#include <ctime>
#include <iostream>
#include <string>

#include "auth/decision.hpp"
#include "auth/options.hpp"
#include "commands.hpp"
#include "config/options.hpp"
#include "log/log.hpp"
#include "token/jwt.hpp"
#include "token/keys_file.hpp"

namespace clerk_sync::ctl {
namespace {

struct verify_args {
  std::string jwt_key_file;
  std::string jwks_file;
  std::vector<std::string> parties;
  std::string issuer;
  double skew_s = 5;
  bool allow_pending = false;
  std::string token;
};

std::string iso(std::int64_t s) {
  const auto t = static_cast<std::time_t>(s);
  std::tm tm{};
  ::gmtime_r(&t, &tm);
  char buf[32];
  std::strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%SZ", &tm);
  return buf;
}

std::string trim(std::string s) {
  const auto first = s.find_first_not_of(" \t\r\n");
  if (first == std::string::npos) return {};
  return s.substr(first, s.find_last_not_of(" \t\r\n") - first + 1);
}

// A claim as the operator reads it: quoted, control bytes and invalid
// UTF-8 escaped, cut. The kid is printed before any signature is checked,
// so a token handed in by anyone could otherwise write escape sequences or
// whole lines of its choosing to the terminal.
std::string shown(std::string_view claim) { return log::escape(log::format::json, log::cut(claim, 200)); }

// The figures behind a refusal, for the operator.
std::string explain(const token::verdict& v, const token::options& o, std::int64_t now_s) {
  const auto& c = v.claims;
  const std::string skew = std::to_string(o.clock_skew.count()) + " ms clock skew";
  switch (v.why) {
    case token::reason::expired:
      return "exp " + iso(c.exp) + " is " + std::to_string(now_s - c.exp) + " s before now " + iso(now_s) + " (" +
             skew + ")";
    case token::reason::not_yet_valid:
      return "nbf " + iso(c.nbf.value_or(0)) + " is " + std::to_string(c.nbf.value_or(0) - now_s) +
             " s after now " + iso(now_s) + " (" + skew + ")";
    case token::reason::issued_in_future:
      return "iat " + iso(c.iat.value_or(0)) + " is " + std::to_string(c.iat.value_or(0) - now_s) +
             " s after now " + iso(now_s) + " (" + skew + ")";
    case token::reason::bad_azp: return "azp " + shown(c.azp) + " is not one of the authorized parties";
    case token::reason::bad_issuer: return "iss " + shown(c.iss) + " is not " + o.issuer.value_or("");
    case token::reason::unknown_kid: return "no key in the JWKS has kid " + shown(c.kid);
    case token::reason::bad_signature: return "no configured key verifies the RS256 signature";
    case token::reason::unsupported_alg: return "only RS256 is accepted";
    case token::reason::malformed: return "not three base64url parts holding JSON objects, each member named once";
    case token::reason::bad_type: return "the header's typ is not JWT, or its cat is not a session token's (a JWT template, a machine token)";
    case token::reason::missing_sub: return "no sub (user id), or an empty one";
    case token::reason::missing_sid: return "no sid (session id) string: not a session token";
    case token::reason::bad_time_claim: return "exp missing, or exp/nbf/iat not numbers";
    case token::reason::session_pending: return "sts is pending (see --allow-pending)";
    case token::reason::ok: return "valid";
  }
  return "";
}

int verify_token(const verify_args& a) {
  token::key_set keys;
  try {
    keys = token::load_keys(a.jwt_key_file, a.jwks_file);
  } catch (const token::key_error& e) {
    throw config::usage_error(e.what());
  }
  std::string text = a.token;
  if (text == "-") std::getline(std::cin, text);
  text = trim(text);
  // Read as clerk-sync-auth reads an Authorization field, so that a value
  // it refuses unread is refused here too.
  const auto [tok, why] = auth::extract_token(text, std::nullopt);
  if (!tok) {
    std::printf("%.*s: %s\n", static_cast<int>(why.size()), why.data(),
                why == "missing_token" ? "no token given"
                                       : "neither a bare token nor \"Bearer <token>\" (that spelling, one space): "
                                         "clerk-sync-auth refuses it without reading the __session cookie, since an "
                                         "application behind the proxy may read another token from it");
    return exit_failed;
  }
  token::options o;
  o.authorized_parties = a.parties;
  if (!a.issuer.empty()) o.issuer = a.issuer;
  o.clock_skew = std::chrono::milliseconds(static_cast<std::int64_t>(a.skew_s * 1000.0));
  o.allow_pending = a.allow_pending;
  const auto now = std::chrono::system_clock::now();
  const auto v = token::verify(*tok, keys, o, now);
  if (v.ok()) {
    std::printf("%s\n", v.claims.payload.c_str());
    return exit_ok;
  }
  const auto now_s = std::chrono::duration_cast<std::chrono::seconds>(now.time_since_epoch()).count();
  std::printf("%.*s: %s\n", static_cast<int>(v.text().size()), v.text().data(), explain(v, o, now_s).c_str());
  return exit_failed;
}

}  // namespace

void add_token_commands(CLI::App& app, runner& run) {
  auto a = std::make_shared<verify_args>();
  auto* cmd = app.add_subcommand("verify-token",
                                 "Verify a Clerk session token without the network: claims as JSON and exit 0, "
                                 "or the reason and exit 1");
  cmd->add_option("--jwt-key-file", a->jwt_key_file, "PEM file of the instance's JWT public key(s)")
      ->envname("CLERK_JWT_KEY_FILE");
  cmd->add_option("--jwks-file", a->jwks_file, "JWKS document of the instance (kid picks the key)")
      ->envname("CLERK_JWKS_FILE");
  cmd->add_option("--authorized-party", a->parties, "an accepted azp origin (repeatable)")
      ->envname("CLERK_AUTHORIZED_PARTIES")
      ->delimiter(',')
      ->transform(config::origin(/*app_schemes=*/true));
  cmd->add_option("--issuer", a->issuer, "required iss, when given")
      ->envname("CLERK_ISSUER")
      ->transform(auth::issuer_url());
  cmd->add_option("--clock-skew-s", a->skew_s, "tolerance for exp, nbf and iat, in seconds")
      ->envname("CLERK_CLOCK_SKEW_S")
      ->check(config::seconds_between(0.0, 3600.0))
      ->capture_default_str();
  cmd->add_flag("--allow-pending", a->allow_pending, "accept a pending session (sts=pending)")
      ->envname("CLERK_ALLOW_PENDING");
  cmd->add_option("token", a->token, "the token, or - to read it from stdin")->required();
  cmd->callback([&run, a] { run = [a] { return verify_token(*a); }; });
}

}  // namespace clerk_sync::ctl
