#pragma once
// Clerk session tokens (compact JWS, RS256 only), verified without the
// network as Clerk's `verifyToken` does with `jwtKey`: header, signature,
// then the claims (sub, azp, iss, exp, nbf, iat; then sid and sts).
// verify() is pure: the token bytes, the keys, the options and the clock are
// parameters; it never throws for bad input and returns a verdict with a
// stable reason word. key_set is immutable and shareable across threads.
// Errors: key_error for unusable key material (a start-up mistake, exit 2).
// OpenSSL and RapidJSON stay inside jwt.cpp.

#include <chrono>
#include <cstdint>
#include <memory>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>
#include <vector>

namespace clerk_sync::token {

// Key material that cannot be used: not PEM, not RSA, a JWKS with no RSA
// signing key. Never carries the key itself.
struct key_error : std::runtime_error {
  using std::runtime_error::runtime_error;
};

// The public keys a token may be signed with. PEM keys carry no kid: every
// one is tried (rotation). JWKS keys: the token's `kid` picks the key; a
// token without a kid is tried against all.
class key_set {
 public:
  // One or more "-----BEGIN PUBLIC KEY-----" blocks (Clerk's "JWT public
  // key", SPKI). Throws key_error when there is none or one is not RSA.
  [[nodiscard]] static key_set from_pem(std::string_view text);
  // A JWKS document {"keys":[{"kty":"RSA","kid":…,"n":…,"e":…}, …]}. Keys
  // that are not RSA, marked `use: enc`, or for another `alg` are left out.
  // Throws key_error when no usable key remains.
  [[nodiscard]] static key_set from_jwks(std::string_view json);

  key_set();
  ~key_set();
  key_set(const key_set&);
  key_set& operator=(const key_set&);
  key_set(key_set&&) noexcept;
  key_set& operator=(key_set&&) noexcept;

  [[nodiscard]] std::size_t size() const;
  [[nodiscard]] bool uses_kid() const;

  struct impl;

 private:
  explicit key_set(std::shared_ptr<const impl> i);
  std::shared_ptr<const impl> impl_;
  friend struct verifier_access;
};

inline constexpr std::chrono::seconds default_clock_skew{5};

struct options {
  // When not empty, `azp` must be one of these (exact origin strings).
  std::vector<std::string> authorized_parties;
  // When set, `iss` must equal it.
  std::optional<std::string> issuer;
  std::chrono::milliseconds clock_skew = default_clock_skew;
  // A token whose `sts` is "pending" (session not finished: tasks left) is
  // refused unless this is set.
  bool allow_pending = false;
};

enum class reason {
  ok,
  malformed,         // not three base64url parts of JSON objects, or a member named twice
  bad_type,          // header `typ` present and not "JWT", or `cat` not a session token's
  unsupported_alg,   // anything but RS256: none, HS*, ES*, RS384, …
  unknown_kid,       // JWKS mode: no key has the token's kid
  bad_signature,     // no configured key verifies the signature
  missing_sub,       // `sub` absent, not a string, or empty (Clerk lets "" through)
  bad_azp,           // authorized parties configured, `azp` not among them
  bad_issuer,        // issuer configured, `iss` differs
  bad_time_claim,    // `exp` absent or not a number; `nbf`/`iat` present, not numbers
  expired,           // exp <= now - skew
  not_yet_valid,     // nbf > now + skew
  issued_in_future,  // iat > now + skew
  missing_sid,       // `sid` absent or not a string: not a session token
  session_pending,   // `sts` = "pending" and not allowed
};

// A stable word for logs and tools: "ok", "malformed", "bad_signature", …
[[nodiscard]] std::string_view to_string(reason r);

struct claim_set {
  std::string sub;  // user id
  std::string sid;  // session id
  std::string azp;
  std::string iss;
  std::string sts;                 // "" when absent
  std::string kid;                 // from the header; "" when absent
  std::int64_t exp = 0;            // seconds since epoch (whole seconds)
  std::optional<std::int64_t> nbf;
  std::optional<std::int64_t> iat;
  std::string payload;             // the decoded payload JSON, as signed
};

struct verdict {
  reason why = reason::malformed;
  // Filled as far as decoding got (empty when malformed); trust it only
  // when ok().
  claim_set claims;
  [[nodiscard]] bool ok() const { return why == reason::ok; }
  [[nodiscard]] std::string_view text() const { return to_string(why); }
};

// Verifies one compact JWS (the token bytes exactly as received, without
// "Bearer "). Never throws for any input.
[[nodiscard]] verdict verify(std::string_view token, const key_set& keys, const options& opts,
                             std::chrono::system_clock::time_point now);

// base64url without padding (RFC 7515); for tools and tests that build tokens.
[[nodiscard]] std::string base64url_encode(std::string_view bytes);
// Strict base64url (RFC 7515): url alphabet, no '=' padding, zero trailing
// bits; nullopt otherwise. Each byte string then has one encoding, so a
// token has one spelling (Clerk also accepts any number of '=' after the
// signature: each would be a new entry of clerk-sync-auth's cache).
[[nodiscard]] std::optional<std::string> base64url_decode(std::string_view text);

}  // namespace clerk_sync::token
