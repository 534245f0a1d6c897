#pragma once
// Svix / Standard Webhooks signatures: parse `whsec_…` secrets, sign, verify.
// Pure functions: the clock, the tolerance and the secrets are parameters; no
// I/O, no globals; thread-safe. Errors: secret_error for a bad secret (a
// start-up mistake, exit 2); a verification failure is a verdict, not an
// exception. Messages never contain a secret or a signature.

#include <chrono>
#include <cstdint>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>
#include <vector>

namespace clerk_sync::verify {

// A bad secret (empty, `whsec_` alone, not base64). Never carries the value.
struct secret_error : std::runtime_error {
  using std::runtime_error::runtime_error;
};

// Raw HMAC key bytes, as decoded from a secret.
using key = std::string;

// `whsec_<base64>` (the prefix is optional, as in the svix libraries) -> key.
[[nodiscard]] key parse_secret(std::string_view text);
// CLERK_WEBHOOK_SECRET: one or more secrets separated by spaces or commas.
// Throws secret_error when there is none or one is bad.
[[nodiscard]] std::vector<key> parse_secret_list(std::string_view text);
// CLERK_WEBHOOK_SECRET_FILE's contents: one secret per line; blank lines and
// lines starting with '#' are skipped. Throws secret_error like the above.
[[nodiscard]] std::vector<key> parse_secret_file(std::string_view contents);
// The inverse of parse_secret: "whsec_" + base64(key); for tests and tools.
[[nodiscard]] std::string format_secret(std::string_view k);

// "v1," + base64(HMAC-SHA256(key, "{msg_id}.{timestamp}.{body}")).
[[nodiscard]] std::string sign(std::string_view k, std::string_view msg_id, std::int64_t timestamp,
                               std::string_view body);
[[nodiscard]] std::string sign(std::string_view k, std::string_view msg_id, std::string_view timestamp,
                               std::string_view body);

// The three signature headers of a request; each is taken from its svix-*
// name, or else from its webhook-* name (see pick_headers).
struct signed_headers {
  std::optional<std::string_view> id;
  std::optional<std::string_view> timestamp;
  std::optional<std::string_view> signature;
};

// Builds signed_headers from any header lookup `find(name) -> optional<string_view>`.
template <class Find>
[[nodiscard]] signed_headers pick_headers(Find&& find) {
  auto one = [&](std::string_view svix, std::string_view webhook) -> std::optional<std::string_view> {
    if (auto v = find(svix)) return v;
    return find(webhook);
  };
  return {one("svix-id", "webhook-id"), one("svix-timestamp", "webhook-timestamp"),
          one("svix-signature", "webhook-signature")};
}

enum class reason {
  ok,
  missing_header,      // one of id / timestamp / signature absent or empty  -> 400
  bad_timestamp,       // not a plain decimal integer                        -> 400
  timestamp_too_old,   // more than `tolerance` in the past                  -> 401
  timestamp_too_new,   // more than `tolerance` in the future                -> 401
  malformed_signature,  // no entry of the shape `v<version>,…`             -> 400
  no_matching_signature,  // no v1 entry matches any secret                  -> 401
  no_secret,           // nothing to verify with (a configuration mistake)   -> 401
};

struct verdict {
  reason why = reason::no_matching_signature;
  std::int64_t timestamp = 0;  // the parsed svix-timestamp, when it parsed
  [[nodiscard]] bool ok() const { return why == reason::ok; }
  // A stable word for logs: "ok", "missing_header", "bad_timestamp", ...
  [[nodiscard]] std::string_view text() const;
  // The HTTP status the design's table gives this verdict (200 when ok).
  [[nodiscard]] int http_status() const;
};

inline constexpr std::chrono::seconds default_tolerance{300};

// What the headers alone decide, before a body is read: each present, a
// decimal timestamp within `tolerance` of `now`, a secret to check with, a
// signature header with at least one `v<version>,<signature>` entry (else
// it is malformed: 400, as a missing one), and a `v1,` entry of a
// signature's length (44 base64 characters; no other can match). ok when only the body's signature is left to check;
// otherwise the verdict verify() gives whatever the body.
[[nodiscard]] verdict check_headers(const signed_headers& headers, const std::vector<key>& keys,
                                    std::chrono::system_clock::time_point now,
                                    std::chrono::seconds tolerance = default_tolerance);

// The signature over `body` alone, for headers check_headers() passed:
// ok, or no_matching_signature.
[[nodiscard]] verdict verify_signature(std::string_view body, const signed_headers& headers,
                                       const std::vector<key>& keys);

// check_headers(), then verify_signature().
// Checks `body` (the exact bytes received) against the headers. Any `v1,`
// entry of the space-separated signature header may match any key; other
// versions and malformed entries are skipped. Timestamps exactly
// `tolerance` away are accepted.
[[nodiscard]] verdict verify(std::string_view body, const signed_headers& headers, const std::vector<key>& keys,
                             std::chrono::system_clock::time_point now,
                             std::chrono::seconds tolerance = default_tolerance);

}  // namespace clerk_sync::verify
