// The receiver's envelope read (event::read_envelope), the body being the
// whole input. Properties: it returns (never throws, never recurses on the
// input's nesting); an envelope has a type, and a user id exactly when its
// family is user or session; it agrees with the consumers' full decode on
// the type, the family and the Kafka key of every body both accept; it says
// not a JSON object exactly when RapidJSON, asked apart of each number too
// large for a double, does.

#include <cstdint>
#include <string_view>
#include <variant>

#include <string>

#include "event/bounded_json.hpp"
#include "event/clerk_event.hpp"
#include "event/envelope.hpp"
#include "fuzz_input.hpp"
#include "json_oracle.hpp"

namespace ev = clerk_sync::event;

namespace {

// The envelope as the consumers read it: from a parsed document.
std::variant<ev::envelope, ev::envelope_error> from_document(std::string_view body) {
  if (body.find('\0') != std::string_view::npos) return ev::envelope_error::not_json;
  std::string scratch;
  rapidjson::Document doc;
  switch (ev::detail::parse_bounded<rapidjson::kParseDefaultFlags>(doc, body, scratch)) {
    case ev::detail::parse_outcome::ok: break;
    case ev::detail::parse_outcome::not_json: return ev::envelope_error::not_json;
    case ev::detail::parse_outcome::too_deep: return ev::envelope_error::too_deep;
  }
  return ev::detail::envelope_of(doc);
}

bool same(const std::variant<ev::envelope, ev::envelope_error>& a,
          const std::variant<ev::envelope, ev::envelope_error>& b) {
  if (a.index() != b.index()) return false;
  if (const auto* x = std::get_if<ev::envelope_error>(&a)) return *x == std::get<ev::envelope_error>(b);
  const auto& x = std::get<ev::envelope>(a);
  const auto& y = std::get<ev::envelope>(b);
  return x.type == y.type && x.family == y.family && x.user_id == y.user_id;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const auto body = clerk_sync::fuzz::text(data, size);
  const auto read = ev::read_envelope(body);
  FUZZ_CHECK(same(read, from_document(body)));
  // Refused as not a JSON object exactly when it is not (depth apart): no
  // rewrite of a number too large for a double makes a broken body a 2xx.
  if (const auto* err = std::get_if<ev::envelope_error>(&read); !err || *err != ev::envelope_error::too_deep)
    FUZZ_CHECK((clerk_sync::fuzz::json_root(std::string(body)) == rapidjson::kObjectType) !=
               (err && *err == ev::envelope_error::not_json));
  if (const auto* err = std::get_if<ev::envelope_error>(&read)) {
    FUZZ_CHECK(!ev::to_string(*err).empty() && ev::to_string(*err) != "unknown");
    return 0;
  }
  const auto& e = std::get<ev::envelope>(read);
  FUZZ_CHECK(!e.type.empty());
  FUZZ_CHECK(e.family == ev::family_of(e.type));
  FUZZ_CHECK(e.user_id.empty() == (e.family == ev::event_family::other));

  // What the receiver publishes under a key, the consumers read with the same key.
  const auto decoded = ev::decode(body);
  if (const auto* d = std::get_if<ev::clerk_event>(&decoded)) {
    FUZZ_CHECK(d->type == e.type);
    if (e.family != ev::event_family::other && !std::holds_alternative<ev::other>(d->data))
      FUZZ_CHECK(ev::user_id_of(*d) == e.user_id);
  }
  return 0;
}
