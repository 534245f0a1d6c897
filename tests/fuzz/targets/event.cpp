// The consumers' full decode of a Clerk event body (event::decode), the body
// being the whole input. Properties: decode returns (never throws); a decoded
// event has a type, a normalized timestamp and the data its type implies,
// with the user id its type names (a user.* type it does not know is
// `other`); decoding is deterministic; a body is refused as not JSON exactly
// when RapidJSON, asked apart of each number too large for a double, finds it
// not JSON; a user's fields are what a plain
// document reading finds (FindMember, the first of duplicate keys), the
// reference for decode's one pass over the user object.

#include <rapidjson/document.h>

#include <charconv>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <variant>

#include "event/bounded_json.hpp"
#include "event/clerk_event.hpp"
#include "fuzz_input.hpp"
#include "json_oracle.hpp"

namespace ev = clerk_sync::event;

namespace {

void check_scalar(const std::optional<ev::scalar>& s) {
  if (!s) return;
  if (s->composite) FUZZ_CHECK(s->text == "object" || s->text == "array" || s->text == "boolean");
}

void check_user(const ev::user& u) {
  FUZZ_CHECK(!u.id.empty());
  for (const auto* s : {&u.keys.role, &u.keys.referral_code, &u.keys.referrer_id, &u.keys.points_balance,
                        &u.keys.g2a_balance, &u.keys.nft_count})
    check_scalar(*s);
}

// The reference reading, on a document parsed as decode parses (numbers as text).
using json = rapidjson::Value;

const json* member(const json& obj, const char* name) {
  if (!obj.IsObject()) return nullptr;
  const auto it = obj.FindMember(name);
  return it == obj.MemberEnd() ? nullptr : &it->value;
}

std::optional<std::string> text(const json* v) {
  if (!v || !v->IsString()) return std::nullopt;
  return std::string(v->GetString(), v->GetStringLength());
}

// A millisecond field: the whole text read as a 64-bit integer, or absent.
std::optional<std::int64_t> millis(const json& obj, const char* name) {
  const auto t = text(member(obj, name));
  if (!t) return std::nullopt;
  std::int64_t v = 0;
  const auto [end, ec] = std::from_chars(t->data(), t->data() + t->size(), v);
  if (ec != std::errc() || end != t->data() + t->size()) return std::nullopt;
  return v;
}

// Why decode must refuse this user object, by the reference reading; empty
// when it must not.
std::string refusal(const json& user) {
  const auto id = text(member(user, "id"));
  if (!id || id->empty()) return "user without data.id";
  if (!millis(user, "updated_at")) return "user without a numeric updated_at";
  if (const json* b = member(user, "banned"); b && !b->IsNull() && !b->IsBool())
    return "user whose banned is not a boolean";
  if (const json* m = member(user, "public_metadata"); !m || m->IsNull()) return "user without public_metadata";
  for (const char* meta : {"public_metadata", "private_metadata"})
    if (const json* m = member(user, meta); m && !m->IsNull() && !m->IsObject())
      return std::string("user whose ") + meta + " is not an object";
  return "";
}

// Public's value when it can be one (not empty, not an object or array),
// else private's when there is one, else public's.
std::optional<ev::scalar> metadata(const json& user, const char* key) {
  std::optional<ev::scalar> found[2];
  for (int i = 0; i < 2; ++i) {
    const json* meta = member(user, i == 0 ? "public_metadata" : "private_metadata");
    const json* v = meta ? member(*meta, key) : nullptr;
    if (!v || v->IsNull()) continue;
    if (v->IsString())
      found[i] = ev::scalar{*text(v), false};
    else
      found[i] = ev::scalar{v->IsObject() ? "object" : v->IsArray() ? "array" : "boolean", true};
  }
  if (found[0] && !found[0]->composite && !found[0]->text.empty()) return found[0];
  return found[1] ? found[1] : found[0];
}

void check_against_document(const ev::user& u, const json& data) {
  FUZZ_CHECK(refusal(data).empty());
  FUZZ_CHECK(text(member(data, "id")) == u.id);
  std::optional<std::string> email;
  const auto primary = text(member(data, "primary_email_address_id"));
  const json* list = member(data, "email_addresses");
  if (primary && list && list->IsArray())
    for (const auto& e : list->GetArray())
      if (text(member(e, "id")) == primary) {
        email = text(member(e, "email_address"));
        break;
      }
  FUZZ_CHECK(u.email == email);
  FUZZ_CHECK(u.first_name == text(member(data, "first_name")));
  FUZZ_CHECK(u.last_name == text(member(data, "last_name")));
  FUZZ_CHECK(u.username == text(member(data, "username")));
  FUZZ_CHECK(u.image_url == text(member(data, "image_url")));
  const json* banned = member(data, "banned");
  FUZZ_CHECK(u.banned == (banned && banned->IsBool() && banned->GetBool()));
  FUZZ_CHECK(millis(data, "updated_at") == u.updated_at);
  FUZZ_CHECK(millis(data, "created_at") == u.created_at);
  FUZZ_CHECK(millis(data, "last_sign_in_at") == u.last_sign_in_at);
  FUZZ_CHECK(u.keys.role == metadata(data, "role"));
  FUZZ_CHECK(u.keys.referral_code == metadata(data, "referral_code"));
  FUZZ_CHECK(u.keys.referrer_id == metadata(data, "referrer_id"));
  FUZZ_CHECK(u.keys.points_balance == metadata(data, "points_balance"));
  FUZZ_CHECK(u.keys.g2a_balance == metadata(data, "g2a_balance"));
  FUZZ_CHECK(u.keys.nft_count == metadata(data, "nft_count"));
}

// The body parsed as decode parses it: numbers as text, one too large for a
// double (which RapidJSON refuses even then) read as its text too;
// iteratively, since a body within the depth limit may nest 10,000 levels.
void parse_reference(rapidjson::Document& doc, std::string_view body) {
  constexpr unsigned flags = rapidjson::kParseNumbersAsStringsFlag | rapidjson::kParseIterativeFlag;
  doc.Parse<flags>(body.data(), body.size());
  if (doc.GetParseError() != rapidjson::kParseErrorNumberTooBig) return;
  const auto quoted = ev::detail::numbers_rewritten(body, true);
  doc.Parse<flags>(quoted.data(), quoted.size());
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const auto body = clerk_sync::fuzz::text(data, size);
  const auto decoded = ev::decode(body);
  // Refused as not JSON exactly when it is not (depth apart: the oracle has
  // no limit), so that no rewrite of a number makes a broken body valid or
  // a valid one broken.
  if (const auto* err = std::get_if<ev::decode_error>(&decoded);
      !err || !err->reason.starts_with("not JSON: nested deeper"))
    FUZZ_CHECK(clerk_sync::fuzz::json_root(std::string(body)).has_value() ==
               !(err && err->reason.starts_with("not JSON")));
  if (const auto* err = std::get_if<ev::decode_error>(&decoded)) {
    FUZZ_CHECK(!err->reason.empty());
    FUZZ_CHECK(std::holds_alternative<ev::decode_error>(ev::decode(body)));
    // A user refused for its fields: the reference refuses it for the same
    // reason. These reasons come after a successful parse within the depth
    // limit, so a plain parse is safe. (A session's embedded user is not
    // refused here: the session keeps the reason, checked below.)
    FUZZ_CHECK(!err->reason.starts_with("embedded "));
    if (err->reason.starts_with("user without ")) {
      rapidjson::Document doc;
      parse_reference(doc, body);
      FUZZ_CHECK(!doc.HasParseError());
      const json* user = member(doc, "data");
      FUZZ_CHECK(user && user->IsObject() && refusal(*user) == err->reason);
    }
    return 0;
  }
  const auto& e = std::get<ev::clerk_event>(decoded);
  FUZZ_CHECK(!e.type.empty());

  const bool session_type = e.type.starts_with("session.");
  if (e.type == "user.deleted") {
    FUZZ_CHECK(std::holds_alternative<ev::user_deleted>(e.data));
  } else if (e.type == "user.created" || e.type == "user.updated") {
    FUZZ_CHECK(std::holds_alternative<ev::user>(e.data));
  } else if (session_type) {
    FUZZ_CHECK(std::holds_alternative<ev::session>(e.data));
  } else {
    FUZZ_CHECK(std::holds_alternative<ev::other>(e.data));
  }
  if (const auto* u = std::get_if<ev::user>(&e.data)) check_user(*u);
  if (const auto* s = std::get_if<ev::session>(&e.data)) {
    FUZZ_CHECK(!s->id.empty() && !s->user_id.empty() && !s->status.empty());
    if (s->embedded_user) check_user(*s->embedded_user);
  }
  // Decoded, so the body is JSON within the depth limit: a plain parse is safe.
  // Length-bounded, so that it reads every byte one at a time: RapidJSON's SSE2
  // string scan, if ever switched on for decode, lets 0x1A-0x1F through.
  if (std::holds_alternative<ev::user>(e.data) || std::holds_alternative<ev::session>(e.data)) {
    rapidjson::Document doc;
    parse_reference(doc, body);
    FUZZ_CHECK(!doc.HasParseError());
    const json* d = member(doc, "data");
    FUZZ_CHECK(d != nullptr);
    if (const auto* u = std::get_if<ev::user>(&e.data)) check_against_document(*u, *d);
    if (const auto* s = std::get_if<ev::session>(&e.data); s && s->embedded_user)
      check_against_document(*s->embedded_user, *member(*d, "user"));
    // An embedded user left out: the reference refuses it for the same
    // reason, or it names another user than the session.
    if (const auto* s = std::get_if<ev::session>(&e.data); s && !s->embedded_user_error.empty()) {
      FUZZ_CHECK(!s->embedded_user);
      const json* user = member(*d, "user");
      FUZZ_CHECK(user && user->IsObject());
      const std::string_view why = std::string_view(s->embedded_user_error);
      FUZZ_CHECK(why.starts_with("embedded "));
      if (why == "embedded user id differs from data.user_id")
        FUZZ_CHECK(refusal(*user).empty());
      else
        FUZZ_CHECK(refusal(*user) == why.substr(9));
    } else if (s) {
      // Otherwise an embedded user object is kept.
      const json* user = member(*d, "user");
      FUZZ_CHECK(!(user && user->IsObject()) || s->embedded_user);
    }
  }

  // Other types, user.* ones Clerk may add included, carry no user id.
  FUZZ_CHECK(ev::user_id_of(e).empty() == std::holds_alternative<ev::other>(e.data));

  // Normalized once is normalized: a value in ms stays as it is.
  if (e.timestamp_ms >= 100'000'000'000) FUZZ_CHECK(ev::normalize_timestamp_ms(e.timestamp_ms) == e.timestamp_ms);

  const auto again = ev::decode(body);
  const auto& e2 = std::get<ev::clerk_event>(again);
  FUZZ_CHECK(e2.type == e.type && e2.timestamp_ms == e.timestamp_ms && ev::user_id_of(e2) == ev::user_id_of(e));
  return 0;
}
