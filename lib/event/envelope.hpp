#pragma once
// The envelope of a Clerk webhook body: its `type` and the Clerk user id the
// event is about, which is also its Kafka key (`data.id` for user.*,
// `data.user_id` for session.*). The key rule lives here and only here. Pure,
// thread-safe, never throws for bad input; nesting deeper than `max_depth`
// is refused without recursion, whatever the input.

#include <cstddef>
#include <string>
#include <string_view>
#include <variant>

namespace clerk_sync::event {

// Above what a body of Clerk's can hold: the end user writes unsafe_metadata,
// sent whole with every later event about them, and Clerk's 8 KB of
// metadata nest at most about 4,100 levels deep there; refusing less would
// let a user keep their own ban from being applied. The parse is iterative
// and builds nothing recursive, so depth costs no stack.
inline constexpr std::size_t max_depth = 10'000;

enum class event_family { user, session, other };

struct envelope {
  std::string type;
  event_family family = event_family::other;
  std::string user_id;  // empty for `other`
};

// Why a body has no readable envelope; each is a stable log word.
enum class envelope_error {
  not_json,    // not JSON, not an object, or a raw NUL byte
  too_deep,    // nested deeper than max_depth
  no_type,     // no non-empty string `type`
  no_user_id,  // a user.*/session.* event without its user id
};

[[nodiscard]] std::string_view to_string(envelope_error e);

// Reads the envelope of a raw body. `other` families carry no user id and
// are never an error for lacking one.
[[nodiscard]] std::variant<envelope, envelope_error> read_envelope(std::string_view body);

[[nodiscard]] event_family family_of(std::string_view type);

}  // namespace clerk_sync::event
