#include "projection/mapping.hpp"

#include <algorithm>
#include <charconv>

namespace clerk_sync::projection {
namespace {

bool is_digit(char c) { return c >= '0' && c <= '9'; }

// Decimal text in and out, at most: far past the 309 digits of the largest
// double, so that an amount too large for one survives written out in
// digits, and any text normalize_decimal() gives reads back as itself.
constexpr std::size_t max_decimal_text = 1000;

// Shown in dead-letter reasons; metadata is user data, so keep it short.
std::string excerpt(std::string_view s) {
  return s.size() <= 40 ? std::string(s) : std::string(s.substr(0, 40)) + "...";
}

// "an object", "an array", "a boolean": what a composite scalar is.
std::string what(const event::scalar& v) { return (v.text == "boolean" ? "a " : "an ") + v.text; }

// A key's text; nullopt when absent or empty; an error when composite.
std::variant<std::optional<std::string>, mapping_error> text_key(const std::optional<event::scalar>& v,
                                                                 const char* key) {
  if (!v || v->text.empty()) return std::nullopt;
  if (v->composite) return mapping_error{std::string(key) + " is " + what(*v)};
  return v->text;
}

// An integer key (points, NFTs): exact decimal text without a fraction that
// fits in 64 bits. Absent means zero.
std::variant<std::int64_t, mapping_error> integer_key(const std::optional<event::scalar>& v, const char* key) {
  if (!v) return std::int64_t{0};
  if (v->composite) return mapping_error{std::string(key) + " is " + what(*v)};
  const auto canon = normalize_decimal(v->text);
  if (!canon) return mapping_error{std::string(key) + " is not a number: " + excerpt(v->text)};
  if (canon->find('.') != std::string::npos)
    return mapping_error{std::string(key) + " is not an integer: " + excerpt(v->text)};
  std::int64_t out = 0;
  const auto* end = canon->data() + canon->size();
  const auto [ptr, ec] = std::from_chars(canon->data(), end, out);
  if (ec != std::errc() || ptr != end) return mapping_error{std::string(key) + " is out of range: " + excerpt(v->text)};
  return out;
}

}  // namespace

std::string_view name(kind k) {
  switch (k) {
    case kind::users: return "users";
    case kind::referrals: return "referrals";
    case kind::balances: return "balances";
    case kind::sessions: return "sessions";
  }
  return "?";
}

std::optional<kind> parse_kind(std::string_view n) {
  for (const kind k : all_kinds)
    if (name(k) == n) return k;
  return std::nullopt;
}

std::optional<std::vector<kind>> parse_kinds(std::string_view list, std::string* bad) {
  std::vector<kind> out;
  while (true) {
    const auto comma = list.find(',');
    std::string_view item = list.substr(0, comma);
    while (!item.empty() && item.front() == ' ') item.remove_prefix(1);
    while (!item.empty() && item.back() == ' ') item.remove_suffix(1);
    const auto k = parse_kind(item);
    if (!k) {
      if (bad) *bad = std::string(item);
      return std::nullopt;
    }
    if (std::find(out.begin(), out.end(), *k) == out.end()) out.push_back(*k);
    if (comma == std::string_view::npos) break;
    list.remove_prefix(comma + 1);
  }
  return out;
}

std::optional<std::string> normalize_decimal(std::string_view s) {
  // Bounded input: metadata is user data and an exponent could ask for a
  // gigabyte of zeros.
  if (s.empty() || s.size() > max_decimal_text) return std::nullopt;
  std::size_t i = 0;
  bool negative = false;
  if (s[i] == '+' || s[i] == '-') negative = s[i++] == '-';
  std::string digits;
  std::size_t int_len = 0;
  while (i < s.size() && is_digit(s[i])) digits += s[i++], ++int_len;
  if (i < s.size() && s[i] == '.') {
    ++i;
    while (i < s.size() && is_digit(s[i])) digits += s[i++];
  }
  if (digits.empty()) return std::nullopt;
  long exponent = 0;
  if (i < s.size() && (s[i] == 'e' || s[i] == 'E')) {
    ++i;
    bool exp_negative = false;
    if (i < s.size() && (s[i] == '+' || s[i] == '-')) exp_negative = s[i++] == '-';
    if (i == s.size()) return std::nullopt;
    while (i < s.size() && is_digit(s[i])) {
      exponent = exponent * 10 + (s[i++] - '0');
      // Past this the output (checked below) could not fit either.
      if (exponent > static_cast<long>(max_decimal_text)) return std::nullopt;
    }
    if (exp_negative) exponent = -exponent;
  }
  if (i != s.size()) return std::nullopt;

  long point = static_cast<long>(int_len) + exponent;  // decimal point position within `digits`
  std::size_t lead = 0;
  while (lead < digits.size() && digits[lead] == '0') ++lead;
  digits.erase(0, lead);
  point -= static_cast<long>(lead);
  while (!digits.empty() && static_cast<long>(digits.size()) > point && digits.back() == '0') digits.pop_back();
  if (digits.empty()) return std::string("0");

  std::string out = negative ? "-" : "";
  const auto size = static_cast<long>(digits.size());
  if (point <= 0) {
    out += "0.";
    out.append(static_cast<std::size_t>(-point), '0');
    out += digits;
  } else if (point >= size) {
    out += digits;
    out.append(static_cast<std::size_t>(point - size), '0');
  } else {
    out += digits.substr(0, static_cast<std::size_t>(point));
    out += '.';
    out += digits.substr(static_cast<std::size_t>(point));
  }
  if (out.size() > max_decimal_text) return std::nullopt;
  return out;
}

bool is_terminal(std::string_view st) {
  return st == "ended" || st == "removed" || st == "revoked" || st == "expired" || st == "abandoned" ||
         st == "replaced";
}

user_row map_user(const event::user& u) {
  user_row r;
  r.id = u.id;
  r.email = u.email;
  r.first_name = u.first_name;
  r.last_name = u.last_name;
  r.username = u.username;
  r.image_url = u.image_url;
  r.banned = u.banned;
  r.created_at = u.created_at;
  r.updated_at = u.updated_at;
  r.last_sign_in_at = u.last_sign_in_at;
  if (const auto& role = u.keys.role) {
    const bool known = !role->composite && std::find(std::begin(known_roles), std::end(known_roles),
                                                     role->text) != std::end(known_roles);
    if (known)
      r.role = role->text;
    else
      r.rejected_role = role->composite ? what(*role) : excerpt(role->text);  // unknown roles grant nothing: spacer
  }
  return r;
}

std::variant<referral_row, mapping_error> map_referral(const event::user& u) {
  referral_row r;
  r.user_id = u.id;
  r.updated_at = u.updated_at;
  // An object or a boolean was read as no code (giving the user's away for
  // good) or as a referrer named "true" (kept for good): a dead letter.
  auto code = text_key(u.keys.referral_code, "referral_code");
  if (auto* e = std::get_if<mapping_error>(&code)) return *e;
  r.referral_code = std::move(std::get<0>(code));
  auto referrer = text_key(u.keys.referrer_id, "referrer_id");
  if (auto* e = std::get_if<mapping_error>(&referrer)) return *e;
  r.referrer_id = std::move(std::get<0>(referrer));
  if (r.referrer_id == u.id) {
    r.referrer_id.reset();
    r.self_referral_refused = true;
  }
  return r;
}

std::variant<balance_row, mapping_error> map_balance(const event::user& u) {
  balance_row r;
  r.user_id = u.id;
  r.updated_at = u.updated_at;
  auto points = integer_key(u.keys.points_balance, "points_balance");
  if (auto* e = std::get_if<mapping_error>(&points)) return *e;
  r.points_balance = std::get<std::int64_t>(points);
  auto nfts = integer_key(u.keys.nft_count, "nft_count");
  if (auto* e = std::get_if<mapping_error>(&nfts)) return *e;
  r.nft_count = std::get<std::int64_t>(nfts);
  if (r.nft_count < 0) return mapping_error{"nft_count is negative"};
  if (const auto& g = u.keys.g2a_balance) {
    if (g->composite) return mapping_error{"g2a_balance is " + what(*g)};
    auto canon = normalize_decimal(g->text);
    if (!canon) return mapping_error{"g2a_balance is not a decimal number: " + excerpt(g->text)};
    r.g2a_balance = std::move(*canon);
  }
  return r;
}

session_row map_session(const event::session& s) {
  session_row r;
  r.id = s.id;
  r.user_id = s.user_id;
  r.status = s.status;
  r.created_at = s.created_at;
  r.updated_at = s.updated_at;
  r.last_active_at = s.last_active_at;
  r.expire_at = s.expire_at;
  if (is_terminal(s.status)) r.ended_at = s.updated_at;
  return r;
}

}  // namespace clerk_sync::projection
