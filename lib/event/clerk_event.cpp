#include "event/clerk_event.hpp"

#include <rapidjson/error/en.h>

#include <charconv>
#include <string>

#include "event/bounded_json.hpp"

namespace clerk_sync::event {
namespace {

using json = rapidjson::Value;

// Numbers are parsed as strings (kParseNumbersAsStringsFlag): an amount too
// large for a double must survive exactly, so every number is text here.
constexpr unsigned parse_flags = rapidjson::kParseNumbersAsStringsFlag;

const json* member(const json& obj, const char* name) {
  if (!obj.IsObject()) return nullptr;
  const auto it = obj.FindMember(name);
  return it == obj.MemberEnd() ? nullptr : &it->value;
}

std::optional<std::string> text(const json* v) {
  if (!v || !v->IsString()) return std::nullopt;
  return std::string(v->GetString(), v->GetStringLength());
}
std::optional<std::string> text(const json& obj, const char* name) { return text(member(obj, name)); }

std::optional<std::int64_t> to_int64(std::string_view s) {
  std::int64_t out = 0;
  const auto* end = s.data() + s.size();
  const auto [ptr, ec] = std::from_chars(s.data(), end, out);
  if (ec != std::errc() || ptr != end) return std::nullopt;
  return out;
}

// A millisecond value: a JSON integer (or its string form); anything else is absent.
std::optional<std::int64_t> millis(const json* v) {
  if (!v || !v->IsString()) return std::nullopt;
  return to_int64(std::string_view(v->GetString(), v->GetStringLength()));
}
std::optional<std::int64_t> millis(const json& obj, const char* name) { return millis(member(obj, name)); }

bool key_is(const json& key, std::string_view name) {
  return key.GetStringLength() == name.size() && std::string_view(key.GetString(), name.size()) == name;
}

// The members of a user object that clerk-sync reads, found in one pass (the
// first of duplicate keys, as FindMember would).
struct user_fields {
  const json* id = nullptr;
  const json* primary_email_address_id = nullptr;
  const json* email_addresses = nullptr;
  const json* first_name = nullptr;
  const json* last_name = nullptr;
  const json* username = nullptr;
  const json* image_url = nullptr;
  const json* banned = nullptr;
  const json* created_at = nullptr;
  const json* updated_at = nullptr;
  const json* last_sign_in_at = nullptr;
  const json* public_metadata = nullptr;
  const json* private_metadata = nullptr;

  explicit user_fields(const json& data) {
    const std::pair<std::string_view, const json**> wanted[] = {
        {"id", &id},
        {"primary_email_address_id", &primary_email_address_id},
        {"email_addresses", &email_addresses},
        {"first_name", &first_name},
        {"last_name", &last_name},
        {"username", &username},
        {"image_url", &image_url},
        {"banned", &banned},
        {"created_at", &created_at},
        {"updated_at", &updated_at},
        {"last_sign_in_at", &last_sign_in_at},
        {"public_metadata", &public_metadata},
        {"private_metadata", &private_metadata},
    };
    for (const auto& m : data.GetObject())
      for (const auto& [name, slot] : wanted)
        if (!*slot && key_is(m.name, name)) {
          *slot = &m.value;
          break;
        }
  }
};

// The Go2Asia keys' members of one metadata object, found in one pass (the
// first of duplicate keys, as FindMember would); all null when it is no object.
struct go2asia_members {
  const json* role = nullptr;
  const json* referral_code = nullptr;
  const json* referrer_id = nullptr;
  const json* points_balance = nullptr;
  const json* g2a_balance = nullptr;
  const json* nft_count = nullptr;

  explicit go2asia_members(const json* meta) {
    if (!meta || !meta->IsObject()) return;
    const std::pair<std::string_view, const json**> wanted[] = {
        {"role", &role},
        {"referral_code", &referral_code},
        {"referrer_id", &referrer_id},
        {"points_balance", &points_balance},
        {"g2a_balance", &g2a_balance},
        {"nft_count", &nft_count},
    };
    for (const auto& m : meta->GetObject())
      for (const auto& [name, slot] : wanted)
        if (!*slot && key_is(m.name, name)) {
          *slot = &m.value;
          break;
        }
  }
};

std::optional<scalar> metadata_value(const json* v) {
  if (!v || v->IsNull()) return std::nullopt;
  if (v->IsString()) return scalar{std::string(v->GetString(), v->GetStringLength()), false};
  return scalar{v->IsObject() ? "object" : v->IsArray() ? "array" : "boolean", true};
}

// public_metadata wins over private_metadata; unsafe_metadata is end-user
// writable from the browser and is deliberately never consulted. A public
// value that cannot be one (an empty string, an object, an array) does not
// hide a private one: an empty public referral_code released the code the
// user held in private to the next user who claimed it, for good, and an
// empty public role made an admin a spacer. Without a private value the
// public one stands (an object amount, a boolean referrer is a dead letter).
std::optional<scalar> go2asia_value(const json* in_public, const json* in_private) {
  auto pub = metadata_value(in_public);
  if (pub && !pub->composite && !pub->text.empty()) return pub;
  if (auto priv = metadata_value(in_private)) return priv;
  return pub;
}

std::optional<std::string> primary_email(const user_fields& f) {
  const json* primary = f.primary_email_address_id;
  const json* list = f.email_addresses;
  if (!primary || !primary->IsString() || !list || !list->IsArray()) return std::nullopt;
  const std::string_view want(primary->GetString(), primary->GetStringLength());
  for (const auto& e : list->GetArray()) {
    const json* id = member(e, "id");
    if (id && id->IsString() && std::string_view(id->GetString(), id->GetStringLength()) == want)
      return text(member(e, "email_address"));
  }
  return std::nullopt;
}

// Fills `u` from a user object, in place (a user is a dozen strings, and
// each move of one through variants cost about 400 instructions).
std::optional<decode_error> decode_user(const json& data, user& u) {
  const user_fields f(data);
  auto id = text(f.id);
  if (!id || id->empty()) return decode_error{"user without data.id"};
  u.id = std::move(*id);
  u.email = primary_email(f);
  u.first_name = text(f.first_name);
  u.last_name = text(f.last_name);
  u.username = text(f.username);
  u.image_url = text(f.image_url);
  u.created_at = millis(f.created_at);
  const auto updated = millis(f.updated_at);
  if (!updated) return decode_error{"user without a numeric updated_at"};
  // Clerk always sends a boolean; anything else, read as false, unbanned a
  // banned user.
  if (f.banned && !f.banned->IsNull()) {
    if (!f.banned->IsBool()) return decode_error{"user whose banned is not a boolean"};
    u.banned = f.banned->GetBool();
  }
  u.updated_at = *updated;
  u.last_sign_in_at = millis(f.last_sign_in_at);
  // Clerk's metadata are objects; another value, read as one without keys,
  // reset a user's role, balances and referral code. Clerk always sends
  // public_metadata (`{}` when empty; private_metadata may be null): one
  // missing or null is no whole user (a session's embedded user cut short)
  // and would do the same.
  if (!f.public_metadata || f.public_metadata->IsNull()) return decode_error{"user without public_metadata"};
  for (const auto& [meta, refused] : {std::pair(f.public_metadata, "user whose public_metadata is not an object"),
                                      std::pair(f.private_metadata, "user whose private_metadata is not an object")})
    if (meta && !meta->IsNull() && !meta->IsObject()) return decode_error{refused};
  const go2asia_members pub(f.public_metadata), priv(f.private_metadata);
  u.keys.role = go2asia_value(pub.role, priv.role);
  u.keys.referral_code = go2asia_value(pub.referral_code, priv.referral_code);
  u.keys.referrer_id = go2asia_value(pub.referrer_id, priv.referrer_id);
  u.keys.points_balance = go2asia_value(pub.points_balance, priv.points_balance);
  u.keys.g2a_balance = go2asia_value(pub.g2a_balance, priv.g2a_balance);
  u.keys.nft_count = go2asia_value(pub.nft_count, priv.nft_count);
  return std::nullopt;
}

std::optional<decode_error> decode_session(const json& data, std::string_view type, session& s) {
  auto id = text(data, "id");
  auto user_id = text(data, "user_id");
  if (!id || id->empty()) return decode_error{"session without data.id"};
  if (!user_id || user_id->empty()) return decode_error{"session without data.user_id"};
  s.id = std::move(*id);
  s.user_id = std::move(*user_id);
  s.status = text(data, "status").value_or(std::string(type.substr(type.find('.') + 1)));
  // "session." or "status": "" would store a session in no known state.
  if (s.status.empty()) return decode_error{"session without a status"};
  s.created_at = millis(data, "created_at");
  const auto updated = millis(data, "updated_at");
  if (!updated) return decode_error{"session without a numeric updated_at"};
  s.updated_at = *updated;
  s.last_active_at = millis(data, "last_active_at");
  s.expire_at = millis(data, "expire_at");
  if (const json* u = member(data, "user"); u && u->IsObject()) {
    auto& eu = s.embedded_user.emplace();
    if (const auto err = decode_user(*u, eu)) {
      s.embedded_user.reset();
      s.embedded_user_error = "embedded " + err->reason;
    } else if (eu.id != s.user_id) {
      s.embedded_user.reset();
      s.embedded_user_error = "embedded user id differs from data.user_id";
    }
  }
  return std::nullopt;
}

// decode(), filling `e` in place.
std::optional<decode_error> decode_into(std::string_view body, clerk_event& e) {
  // In-situ parsing (strings point into our own copy) saves an allocation
  // per string; it stops at a NUL byte, so refuse those first.
  if (body.find('\0') != std::string_view::npos) return decode_error{"not JSON: NUL byte in body"};
  std::string buffer;
  rapidjson::Document doc;
  rapidjson::ParseResult parsed;
  switch (detail::parse_bounded<parse_flags>(doc, body, buffer, &parsed)) {
    case detail::parse_outcome::ok: break;
    case detail::parse_outcome::too_deep:
      return decode_error{"not JSON: nested deeper than " + std::to_string(max_depth) + " levels"};
    case detail::parse_outcome::not_json:
      return decode_error{std::string("not JSON: ") + rapidjson::GetParseError_En(parsed.Code()) +
                          " at byte " + std::to_string(parsed.Offset())};
  }
  const auto env = detail::envelope_of(doc);
  if (const auto* err = std::get_if<envelope_error>(&env)) {
    switch (*err) {
      case envelope_error::no_type: return decode_error{"event without type"};
      case envelope_error::no_user_id: break;  // a reason by type below
      default: return decode_error{"body is not a JSON object"};
    }
  }
  e.type = *text(doc, "type");
  if (const auto ts = millis(doc, "timestamp")) e.timestamp_ms = normalize_timestamp_ms(*ts);
  const json* data = member(doc, "data");
  const auto family = family_of(e.type);
  if (family == event_family::other) {
    e.data = other{};
    return std::nullopt;
  }
  if (!data || !data->IsObject()) return decode_error{"event without a data object"};
  if (e.type == "user.deleted") {
    const auto id = text(*data, "id");
    if (!id || id->empty()) return decode_error{"user.deleted without data.id"};
    if (e.timestamp_ms <= 0) return decode_error{"user.deleted without a numeric timestamp"};
    e.data = user_deleted{*id};
  } else if (e.type == "user.created" || e.type == "user.updated") {
    return decode_user(*data, e.data.emplace<user>());
  } else if (family == event_family::session) {
    return decode_session(*data, e.type, e.data.emplace<session>());
  } else {
    e.data = other{};  // a user.* type Clerk may add later: ignored
  }
  return std::nullopt;
}

}  // namespace

std::int64_t normalize_timestamp_ms(std::int64_t t) {
  if (t <= 0) return 0;  // no time at all (and t * 1000 could overflow)
  return t < 100'000'000'000 ? t * 1000 : t;
}

std::string_view user_id_of(const clerk_event& e) {
  if (const auto* u = std::get_if<user>(&e.data)) return u->id;
  if (const auto* d = std::get_if<user_deleted>(&e.data)) return d->id;
  if (const auto* s = std::get_if<session>(&e.data)) return s->user_id;
  return {};
}

std::variant<clerk_event, decode_error> decode(std::string_view body) {
  std::variant<clerk_event, decode_error> out;  // one event, filled where it is returned
  if (auto err = decode_into(body, std::get<clerk_event>(out))) out = std::move(*err);
  return out;
}

}  // namespace clerk_sync::event
