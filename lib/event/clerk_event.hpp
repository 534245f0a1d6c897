#pragma once
// Decoding of Clerk webhook bodies (user.* and session.*) into plain structs.
// Pure: bytes in, struct or reason out; no I/O, no clock. Unknown fields are
// ignored; metadata values are kept as exact text (numbers are never turned
// into doubles). Thread-safe (no shared state).

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <variant>

namespace clerk_sync::event {

// A value read from metadata: the text of a JSON string or number exactly as
// sent ("12.5" and 12.5 both give 12.5); an object, an array or a boolean,
// which no Go2Asia key can be, is marked `composite` (text "object",
// "array", "boolean").
struct scalar {
  std::string text;
  bool composite = false;
  friend bool operator==(const scalar&, const scalar&) = default;
};

// The Go2Asia keys of a user, each looked up in public_metadata first, then
// private_metadata; unsafe_metadata is never read. nullopt: absent or null.
struct go2asia_keys {
  std::optional<scalar> role;
  std::optional<scalar> referral_code;
  std::optional<scalar> referrer_id;
  std::optional<scalar> points_balance;
  std::optional<scalar> g2a_balance;
  std::optional<scalar> nft_count;
};

// Clerk's user object, the fields clerk-sync keeps.
struct user {
  std::string id;
  std::optional<std::string> email;  // the entry whose id is primary_email_address_id
  std::optional<std::string> first_name;
  std::optional<std::string> last_name;
  std::optional<std::string> username;
  std::optional<std::string> image_url;
  bool banned = false;
  std::optional<std::int64_t> created_at;
  std::int64_t updated_at = 0;
  std::optional<std::int64_t> last_sign_in_at;
  go2asia_keys keys;
};

// Clerk's session object; `embedded_user` only in newer deliveries.
struct session {
  std::string id;
  std::string user_id;
  std::string status;  // data.status, or derived from the event type when absent
  std::optional<std::int64_t> created_at;
  std::int64_t updated_at = 0;
  std::optional<std::int64_t> last_active_at;
  std::optional<std::int64_t> expire_at;
  std::optional<user> embedded_user;
  // Why the embedded user was refused ("embedded user without …"), then
  // left out; empty when there was none or it decoded. The session itself
  // stands: a revocation must reach the sessions table whatever the user
  // beside it says, while the user-derived projections dead-letter it.
  std::string embedded_user_error;
};

// user.deleted carries only the id.
struct user_deleted {
  std::string id;
};

// A verified event of a type clerk-sync does not project (email.created...).
struct other {};

struct clerk_event {
  std::string type;
  std::int64_t timestamp_ms = 0;  // envelope timestamp, normalized to ms
  std::variant<user, user_deleted, session, other> data;
};

// The Clerk user id the event is about (data.id or data.user_id); empty for other.
[[nodiscard]] std::string_view user_id_of(const clerk_event& e);

struct decode_error {
  std::string reason;
};

// Decodes a raw webhook body. A body that is not JSON, lacks `type`, or lacks
// the ids its type needs is a decode_error (dead letter).
[[nodiscard]] std::variant<clerk_event, decode_error> decode(std::string_view body);

// Clerk's envelope `timestamp` is ms in real deliveries but seconds in its
// published examples: values below 10^11 (year 5138 in seconds) are seconds.
// Zero or negative is no time (0).
[[nodiscard]] std::int64_t normalize_timestamp_ms(std::int64_t t);

}  // namespace clerk_sync::event
