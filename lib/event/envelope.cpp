#include "event/envelope.hpp"

#include <array>
#include <optional>
#include <string>

#include "event/bounded_json.hpp"

namespace clerk_sync::event {
namespace {

std::optional<std::string_view> string_member(const rapidjson::Value& obj, const char* name) {
  if (!obj.IsObject()) return std::nullopt;
  const auto it = obj.FindMember(name);
  if (it == obj.MemberEnd() || !it->value.IsString()) return std::nullopt;
  return std::string_view(it->value.GetString(), it->value.GetStringLength());
}

}  // namespace

std::string_view to_string(envelope_error e) {
  switch (e) {
    case envelope_error::not_json: return "not_json";
    case envelope_error::too_deep: return "too_deep";
    case envelope_error::no_type: return "no_type";
    case envelope_error::no_user_id: return "no_user_id";
  }
  return "unknown";
}

event_family family_of(std::string_view type) {
  if (type.starts_with("user.")) return event_family::user;
  if (type.starts_with("session.")) return event_family::session;
  return event_family::other;
}

namespace detail {

std::variant<envelope, envelope_error> envelope_of(const rapidjson::Value& doc) {
  if (!doc.IsObject()) return envelope_error::not_json;
  const auto type = string_member(doc, "type");
  if (!type || type->empty()) return envelope_error::no_type;
  envelope e{std::string(*type), family_of(*type), {}};
  if (e.family == event_family::other) return e;
  // The Kafka key: one user's events stay in order in one partition.
  const auto data = doc.FindMember("data");
  if (data == doc.MemberEnd()) return envelope_error::no_user_id;
  const auto user = string_member(data->value, e.family == event_family::user ? "id" : "user_id");
  if (!user || user->empty()) return envelope_error::no_user_id;
  e.user_id = std::string(*user);
  return e;
}

}  // namespace detail

std::variant<envelope, envelope_error> read_envelope(std::string_view body) {
  // Raw NUL is never valid JSON, and in-situ parsing would stop at it.
  if (body.find('\0') != std::string_view::npos) return envelope_error::not_json;
  // In-situ parsing of a private, NUL-terminated copy is several times faster
  // than a length-bounded parse, and a ~2 KiB copy is cheap. The DOM's first
  // chunk comes from the stack (RapidJSON's default is a 64 KiB malloc).
  std::string scratch(body);
  std::array<char, 8192> pool;
  rapidjson::MemoryPoolAllocator<> allocator(pool.data(), pool.size());
  rapidjson::Document doc(&allocator);
  switch (detail::parse_bounded<rapidjson::kParseDefaultFlags>(doc, scratch.data())) {
    case detail::parse_outcome::ok: break;
    case detail::parse_outcome::not_json: return envelope_error::not_json;
    case detail::parse_outcome::too_deep: return envelope_error::too_deep;
  }
  return detail::envelope_of(doc);
}

}  // namespace clerk_sync::event
