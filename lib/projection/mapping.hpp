#pragma once
// The pure part of the projections: which projections exist, and how a
// decoded Clerk event becomes the row each one writes (or why it cannot).
// No I/O; thread-safe. The ordering rules that need the stored row (last
// writer wins, tombstones, terminal sessions) live in applier.cpp's SQL.

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <variant>
#include <vector>

#include "event/clerk_event.hpp"

namespace clerk_sync::projection {

enum class kind { users, referrals, balances, sessions };

inline constexpr kind all_kinds[] = {kind::users, kind::referrals, kind::balances, kind::sessions};

[[nodiscard]] std::string_view name(kind k);
[[nodiscard]] std::optional<kind> parse_kind(std::string_view name);
// "users,sessions" -> {users, sessions} (order kept, duplicates dropped);
// nullopt names the first unknown entry through `bad`.
[[nodiscard]] std::optional<std::vector<kind>> parse_kinds(std::string_view list, std::string* bad = nullptr);

// The five roles of Go2Asia; spacer is the default.
inline constexpr std::string_view known_roles[] = {"spacer", "vip", "pro-curator", "partner", "admin"};

// Canonical exact decimal text: "007.50" -> "7.5", "1e3" -> "1000",
// "-0.0" -> "0". nullopt when `text` is not a decimal number.
[[nodiscard]] std::optional<std::string> normalize_decimal(std::string_view text);

struct user_row {
  std::string id;
  std::optional<std::string> email, first_name, last_name, username, image_url;
  std::string role = "spacer";
  bool banned = false;
  std::optional<std::int64_t> created_at;
  std::int64_t updated_at = 0;
  std::optional<std::int64_t> last_sign_in_at;
  // Set when metadata named a role outside known_roles (kept as spacer).
  std::optional<std::string> rejected_role;
};

struct referral_row {
  std::string user_id;
  std::optional<std::string> referral_code;
  std::optional<std::string> referrer_id;
  std::int64_t updated_at = 0;
  bool self_referral_refused = false;  // metadata named the user as their own referrer
};

struct balance_row {
  std::string user_id;
  std::int64_t points_balance = 0;  // absent keys mean zero
  std::string g2a_balance = "0";
  std::int64_t nft_count = 0;
  std::int64_t updated_at = 0;
};

struct session_row {
  std::string id;
  std::string user_id;
  std::string status;
  std::optional<std::int64_t> created_at;
  std::int64_t updated_at = 0;
  std::optional<std::int64_t> last_active_at;
  std::optional<std::int64_t> expire_at;
  std::optional<std::int64_t> ended_at;  // updated_at of a terminal status
};

// ended, removed, revoked, expired, abandoned, replaced.
[[nodiscard]] bool is_terminal(std::string_view session_status);

// A reason the event cannot be mapped for this projection: dead letter.
struct mapping_error {
  std::string reason;
};

[[nodiscard]] user_row map_user(const event::user& u);
[[nodiscard]] std::variant<referral_row, mapping_error> map_referral(const event::user& u);
[[nodiscard]] std::variant<balance_row, mapping_error> map_balance(const event::user& u);
[[nodiscard]] session_row map_session(const event::session& s);

}  // namespace clerk_sync::projection
