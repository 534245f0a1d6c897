// Svix verification with everything from the input: the secrets, the three
// headers and the body (parts: secrets, svix-id, svix-timestamp,
// svix-signature, body). Properties: the verdict maps to 200/400/401 only; a
// verified body verifies again when re-signed with each key and fails with
// one byte more; a signature made for these exact headers, added among the
// input's entries, verifies whenever the timestamp is in tolerance.

#include <chrono>
#include <cstdint>
#include <string>

#include "fuzz_input.hpp"
#include "verify/svix.hpp"

namespace v = clerk_sync::verify;

namespace {
// The clock of every run: the timestamp of the published Svix vectors, so
// that the seeds taken from them verify.
constexpr std::int64_t now_s = 1'614'265'330;
}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const auto p = clerk_sync::fuzz::split(clerk_sync::fuzz::text(data, size), 5);
  const auto id = p[1], timestamp = p[2], signature = p[3], body = p[4];
  std::vector<v::key> keys;
  try {
    keys = v::parse_secret_list(p[0]);
  } catch (const v::secret_error&) {
  }
  const auto now = std::chrono::system_clock::time_point{std::chrono::seconds{now_s}};

  const v::signed_headers h{id, timestamp, signature};
  const auto verdict = v::verify(body, h, keys, now);
  const int status = verdict.http_status();
  FUZZ_CHECK(status == 200 || status == 400 || status == 401);
  FUZZ_CHECK(verdict.ok() == (status == 200));
  FUZZ_CHECK(!verdict.text().empty());

  if (verdict.ok()) {
    FUZZ_CHECK(!keys.empty());
    for (const auto& k : keys) {
      const std::string again = v::sign(k, id, timestamp, body);
      FUZZ_CHECK(v::verify(body, {id, timestamp, again}, keys, now).ok());
      FUZZ_CHECK(v::verify(body, {id, timestamp, again}, {k}, now).ok());
    }
    const std::string longer = std::string(body) + "\n";
    FUZZ_CHECK(v::verify(longer, h, keys, now).why == v::reason::no_matching_signature);
  }

  if (!keys.empty()) {
    const std::string header = std::string(signature) + " " + v::sign(keys.back(), id, timestamp, body);
    const auto mixed = v::verify(body, {id, timestamp, header}, keys, now);
    switch (verdict.why) {
      case v::reason::ok:
      case v::reason::no_matching_signature:
      case v::reason::malformed_signature:
        FUZZ_CHECK(mixed.ok());
        break;
      case v::reason::missing_header:
        break;  // the added entry may be what was missing
      default:
        // Timestamps are judged before any signature.
        FUZZ_CHECK(mixed.why == verdict.why);
    }
    if (mixed.ok()) FUZZ_CHECK(mixed.timestamp >= now_s - 300 && mixed.timestamp <= now_s + 300);
  } else {
    FUZZ_CHECK(!verdict.ok());
  }
  return 0;
}
