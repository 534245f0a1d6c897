#include "event/envelope.hpp"

#include <cstdint>
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

namespace {

// Reads the envelope while parsing, without building a document: the
// receiver needs three strings of a 2-5 KiB body. It follows envelope_of()
// exactly: the first top-level `type` and `data` members decide (as
// FindMember does), and in the first `data` member, when it is an object,
// the first `id` and `user_id`; a member of another JSON type counts as
// present but not a string.
class envelope_reader {
 public:
  using Ch = char;

  bool Null() { return value(); }
  bool Bool(bool) { return value(); }
  bool Int(int) { return value(); }
  bool Uint(unsigned) { return value(); }
  bool Int64(std::int64_t) { return value(); }
  bool Uint64(std::uint64_t) { return value(); }
  bool Double(double) { return value(); }
  bool RawNumber(const Ch*, rapidjson::SizeType, bool) { return value(); }
  bool String(const Ch* s, rapidjson::SizeType n, bool) { return value(std::string_view(s, n)); }
  bool Key(const Ch* s, rapidjson::SizeType n, bool) {
    const std::string_view k(s, n);
    next_ = nullptr;
    if (depth_ == 1) {
      if (k == "type") next_ = &type_;
      else if (k == "data") next_ = &data_;
    } else if (depth_ == 2 && in_data_) {
      if (k == "id") next_ = &id_;
      else if (k == "user_id") next_ = &user_id_;
    }
    return true;
  }
  bool StartObject() {
    if (depth_ == 0) root_is_object_ = true;
    if (depth_ == 1) in_data_ = next_ == &data_ && !data_.seen;
    value();
    ++depth_;
    return true;
  }
  bool EndObject(rapidjson::SizeType) {
    if (--depth_ == 1) in_data_ = false;
    return true;
  }
  bool StartArray() {
    value();
    ++depth_;
    return true;
  }
  bool EndArray(rapidjson::SizeType) {
    if (--depth_ == 1) in_data_ = false;
    return true;
  }

  [[nodiscard]] std::variant<envelope, envelope_error> result() const {
    if (!root_is_object_) return envelope_error::not_json;
    if (!type_.text || type_.text->empty()) return envelope_error::no_type;
    envelope e{std::string(*type_.text), family_of(*type_.text), {}};
    if (e.family == event_family::other) return e;
    const auto& user = e.family == event_family::user ? id_ : user_id_;
    if (!user.text || user.text->empty()) return envelope_error::no_user_id;
    e.user_id = std::string(*user.text);
    return e;
  }

 private:
  struct member {
    bool seen = false;
    std::optional<std::string_view> text;  // set when the member is a string
  };
  // A value: it fills the member its key named, if that member is still unseen.
  bool value(std::optional<std::string_view> text = std::nullopt) {
    if (next_ && !next_->seen) {
      next_->seen = true;
      next_->text = text;
    }
    next_ = nullptr;
    return true;
  }

  std::size_t depth_ = 0;
  bool root_is_object_ = false;
  bool in_data_ = false;  // inside the first top-level `data` object
  member* next_ = nullptr;
  member type_, data_, id_, user_id_;
};

}  // namespace

std::variant<envelope, envelope_error> read_envelope(std::string_view body) {
  // Raw NUL is never valid JSON, and in-situ parsing would stop at it.
  if (body.find('\0') != std::string_view::npos) return envelope_error::not_json;
  // In-situ parsing of a private, NUL-terminated copy is several times faster
  // than a length-bounded parse, and a ~2 KiB copy is cheap.
  bool number_too_big = false;
  auto read = [&number_too_big](std::string scratch) -> std::variant<envelope, envelope_error> {
    rapidjson::InsituStringStream in(scratch.data());
    rapidjson::Reader reader;
    envelope_reader envelope;
    detail::depth_limited<envelope_reader> handler(envelope);
    const auto parsed =
        reader.Parse<rapidjson::kParseIterativeFlag | rapidjson::kParseInsituFlag>(in, handler);
    if (handler.too_deep()) return envelope_error::too_deep;
    number_too_big = parsed.Code() == rapidjson::kParseErrorNumberTooBig;
    if (parsed.IsError()) return envelope_error::not_json;
    return envelope.result();
  };
  auto result = read(std::string(body));
  // A number too large for a double: read again as 0, as parse_bounded() does.
  if (number_too_big) result = read(detail::numbers_rewritten(body, false));
  return result;
}

}  // namespace clerk_sync::event
