#include "auth/decision.hpp"

#include <algorithm>
#include <array>
#include <iterator>

#include "projection/mapping.hpp"

namespace clerk_sync::auth {
namespace {

std::string_view trim(std::string_view s) {
  while (!s.empty() && (s.front() == ' ' || s.front() == '\t')) s.remove_prefix(1);
  while (!s.empty() && (s.back() == ' ' || s.back() == '\t')) s.remove_suffix(1);
  return s;
}

// The row's role when it is one the consumers write; else the default. A
// role they never write (a file edited by hand, or by another tool) grants
// nothing, as the consumer keeps an unknown role as spacer, and never
// reaches X-Clerk-Role, where a CR LF would add a header of the row's choosing.
std::string role_of(const std::optional<user_row>& user) {
  if (user && std::find(std::begin(projection::known_roles), std::end(projection::known_roles), user->role) !=
                  std::end(projection::known_roles))
    return user->role;
  return std::string(default_role);
}

}  // namespace

request_token extract_token(std::optional<std::string_view> authorization, std::optional<std::string_view> cookie) {
  // Only what every Clerk SDK reads as the same token: `Bearer <t>`, the
  // scheme spelled so, or a bare token. An application behind the proxy
  // that checks the request itself would read another token from anything
  // else (Clerk's newer SDKs skip another scheme, a lower-case `bearer`
  // included, and read the __session cookie; older ones take the whole
  // value), so it is refused rather than read either way: a banned user's
  // or a revoked session's token must not pass the application while the
  // proxy checked another one. An empty field is no field, as in Clerk.
  if (const auto a = authorization ? trim(*authorization) : std::string_view(); !a.empty()) {
    constexpr std::string_view scheme = "Bearer ";
    const auto t = a.starts_with(scheme) ? a.substr(scheme.size()) : a;
    // Two memchr scans: find_first_of tests each byte against the set, a
    // tenth of the cached check's time over a token's 800 bytes.
    if (t.empty() || t.find(' ') != std::string_view::npos || t.find('\t') != std::string_view::npos)
      return {std::nullopt, bad_authorization};
    return {t, {}};
  }
  // The first __session, even an empty one, as Clerk's own request parsing
  // takes it (the first of a name): an application behind the proxy that
  // reads it with Clerk's SDK sees the same token. Two are not refused: a
  // browser holds several when cookies of one name were set for a parent
  // domain and for the host (Clerk apps on sibling subdomains, the reason
  // Clerk now also writes a suffixed __session_<id>), and a 401 would send
  // such a user to sign in again and again. (A browser sends the one of
  // the longer path first, then the older: RFC 6265 5.4.)
  if (cookie) {
    std::string_view rest = *cookie;
    while (!rest.empty()) {
      const auto semi = rest.find(';');
      const auto pair = trim(rest.substr(0, semi));
      rest = semi == std::string_view::npos ? std::string_view() : rest.substr(semi + 1);
      const auto eq = pair.find('=');
      if (eq == std::string_view::npos || trim(pair.substr(0, eq)) != "__session") continue;
      auto value = trim(pair.substr(eq + 1));
      if (value.size() >= 2 && value.front() == '"' && value.back() == '"') value = value.substr(1, value.size() - 2);
      if (value.empty()) break;  // signed out, whatever follows
      return {value, {}};
    }
  }
  return {std::nullopt, "missing_token"};
}

bool setup_refusal(std::string_view outcome) {
  using token::reason;
  // A site that sends its own Authorization (behind auth_basic, an API key
  // beside the session cookie) has every request refused so.
  if (outcome == bad_authorization) return true;
  // unknown_kid: a JWKS file left behind Clerk's key rotation refuses every
  // token so (anyone may send a token with a kid of their own, but the line
  // is rate-limited).
  for (const auto r : {reason::bad_issuer, reason::bad_azp, reason::not_yet_valid, reason::issued_in_future,
                       reason::unknown_kid})
    if (outcome == token::to_string(r)) return true;
  return false;
}

bool terminal_session_status(std::string_view status) {
  constexpr std::array<std::string_view, 6> terminal = {"ended", "removed", "revoked", "expired", "abandoned",
                                                         "replaced"};
  for (const auto t : terminal)
    if (status == t) return true;
  return false;
}

decision decide(const token::verdict& v, const std::optional<user_row>& user,
                const std::optional<session_row>& session) {
  if (!v.ok()) return {401, v.text(), {}};
  // The user before the session: Clerk revokes the sessions of a user it
  // bans or deletes, and once the sessions projection has applied that, a
  // 401 would send the user to sign in again rather than say they may not.
  if (user && user->deleted) return {403, "deleted", {}};
  if (user && user->banned) return {403, "banned", {}};
  if (session && terminal_session_status(session->status)) {
    if (session->status == "ended") return {401, "session_ended", {}};
    if (session->status == "removed") return {401, "session_removed", {}};
    if (session->status == "revoked") return {401, "session_revoked", {}};
    return {401, "session_over", {}};
  }
  return {200, user ? "ok" : "ok_unsynced", role_of(user)};
}

}  // namespace clerk_sync::auth
