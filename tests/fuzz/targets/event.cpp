// The consumers' full decode of a Clerk event body (event::decode), the body
// being the whole input. Properties: decode returns (never throws); a decoded
// event has a type, a normalized timestamp and the data its type implies,
// with the user id its type names (a user.* type it does not know is
// `other`); decoding is deterministic.

#include <cstdint>
#include <string_view>
#include <variant>

#include "event/clerk_event.hpp"
#include "fuzz_input.hpp"

namespace ev = clerk_sync::event;

namespace {

void check_scalar(const std::optional<ev::scalar>& s) {
  if (!s) return;
  if (s->composite) FUZZ_CHECK(s->text == "object" || s->text == "array");
}

void check_user(const ev::user& u) {
  FUZZ_CHECK(!u.id.empty());
  for (const auto* s : {&u.keys.role, &u.keys.referral_code, &u.keys.referrer_id, &u.keys.points_balance,
                        &u.keys.g2a_balance, &u.keys.nft_count})
    check_scalar(*s);
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const auto body = clerk_sync::fuzz::text(data, size);
  const auto decoded = ev::decode(body);
  if (const auto* err = std::get_if<ev::decode_error>(&decoded)) {
    FUZZ_CHECK(!err->reason.empty());
    FUZZ_CHECK(std::holds_alternative<ev::decode_error>(ev::decode(body)));
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
  // Other types, user.* ones Clerk may add included, carry no user id.
  FUZZ_CHECK(ev::user_id_of(e).empty() == std::holds_alternative<ev::other>(e.data));

  // Normalized once is normalized: a value in ms stays as it is.
  if (e.timestamp_ms >= 100'000'000'000) FUZZ_CHECK(ev::normalize_timestamp_ms(e.timestamp_ms) == e.timestamp_ms);

  const auto again = ev::decode(body);
  const auto& e2 = std::get<ev::clerk_event>(again);
  FUZZ_CHECK(e2.type == e.type && e2.timestamp_ms == e.timestamp_ms && ev::user_id_of(e2) == ev::user_id_of(e));
  return 0;
}
