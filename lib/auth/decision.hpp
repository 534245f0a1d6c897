#pragma once
// clerk-sync-auth's answer, as pure functions: where the token is in a
// request (Authorization: Bearer, else the __session cookie, as Clerk's
// authenticateRequest looks), and what to answer given the token's verdict
// and what the synced tables say about the user and the session. No I/O;
// thread-safe.

#include <optional>
#include <string>
#include <string_view>

#include "token/jwt.hpp"

namespace clerk_sync::auth {

// The outcome of an Authorization field that is no token.
inline constexpr std::string_view bad_authorization = "bad_authorization";

// Where a request's token is, or why it has none to check.
struct request_token {
  std::optional<std::string_view> token;
  std::string_view outcome;  // without a token: "missing_token" or "bad_authorization"
};

// The token from `Authorization: Bearer <t>` or a bare `Authorization: <t>`
// (anything else there: "bad_authorization", never the cookie), else from
// the first `__session` cookie of a Cookie header (none when that one is
// empty), as Clerk reads it.
[[nodiscard]] request_token extract_token(std::optional<std::string_view> authorization,
                                          std::optional<std::string_view> cookie);

// What the users table holds for the token's `sub` (nullopt: no row yet).
struct user_row {
  std::string role;
  bool banned = false;
  bool deleted = false;
};

// What the sessions table holds for the token's `sid` (nullopt: no row yet).
struct session_row {
  std::string status;
};

// Whether an outcome is a refusal of a token whose signature verified that
// points to this service's setup rather than to the token: an issuer or
// authorized party other than the one Clerk writes, a host clock behind
// Clerk's (not_yet_valid, issued_in_future); and an Authorization field
// that is no token (bad_authorization), which a site sending its own
// (Basic behind auth_basic, an API key) sends with every request. Set up
// wrong, it refuses every user.
[[nodiscard]] bool setup_refusal(std::string_view outcome);

// A session status after which the session never comes back (DESIGN §2).
[[nodiscard]] bool terminal_session_status(std::string_view status);

inline constexpr std::string_view default_role = "spacer";

struct decision {
  int status = 401;         // 200, 401 or 403
  std::string_view outcome;  // stable word for the log: "ok", a token reason, "banned", "session_revoked", …
  std::string role;         // for 200: the synced role, or default_role when the user has no row yet
                            // or the row's role is none of projection::known_roles
};

// A valid token is refused when the user is banned or deleted (403), else
// when the synced session is terminal (401). A user or session without a
// row yet (the consumer has not caught up) is let through: the token itself
// was valid.
[[nodiscard]] decision decide(const token::verdict& v, const std::optional<user_row>& user,
                              const std::optional<session_row>& session);

}  // namespace clerk_sync::auth
