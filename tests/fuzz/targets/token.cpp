// Clerk session tokens (token::verify). The input is three parts: a raw
// token, then a header and a payload JSON that are signed RS256 with a key
// of the target's own (generated at start). Properties: verify returns
// (never throws) with a stable reason word; no raw input verifies against a
// key only this target holds; a token signed with that key is valid only if
// its header asks for RS256 and its claims are what the verdict says
// (a sub, a sid, not expired).

#include <chrono>
#include <cstdint>
#include <string_view>

#include "fuzz_input.hpp"
#include "token/jwt.hpp"
#include "token/signer.hpp"

namespace tk = clerk_sync::token;

namespace {

// A 2048-bit key, the least key_set accepts. Signing with it costs about
// 1.3 ms, so an input is signed only when its header names RS256: any
// other alg is refused before the signature is read, and such a token gets
// a signature of the right length that no key made.
struct fixture {
  clerk_sync::test::rsa_signer signer{2048};
  tk::key_set keys = tk::key_set::from_pem(signer.public_pem());
};

const fixture& fixed() {
  static const fixture f;
  return f;
}

void check_reason(const tk::verdict& v) {
  const auto word = v.text();
  FUZZ_CHECK(!word.empty() && word != "unknown");
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const auto& f = fixed();
  const auto parts = clerk_sync::fuzz::split(clerk_sync::fuzz::text(data, size), 3);
  const auto now = std::chrono::system_clock::time_point(std::chrono::seconds(1'700'000'000));
  const tk::options opts;

  const auto raw = tk::verify(parts[0], f.keys, opts, now);
  check_reason(raw);
  FUZZ_CHECK(!raw.ok());  // nobody but us holds the private key

  const auto signed_token =
      parts[1].find("RS256") != std::string_view::npos
          ? f.signer.sign(parts[1], parts[2])
          : tk::base64url_encode(parts[1]) + "." + tk::base64url_encode(parts[2]) + "." +
                tk::base64url_encode(std::string(256, '\x5a'));
  const auto v = tk::verify(signed_token, f.keys, opts, now);
  check_reason(v);
  if (v.ok()) {
    FUZZ_CHECK(parts[1].find("RS256") != std::string_view::npos);
    FUZZ_CHECK(!v.claims.sub.empty() && !v.claims.sid.empty());
    // In seconds: a far-future exp in nanoseconds would overflow the check.
    // The verifier compares exp * 1000 as a double and claims.exp is that
    // value rounded down, so a fraction past the edge still counts: >=.
    const auto now_s = std::chrono::duration_cast<std::chrono::seconds>(now.time_since_epoch()).count();
    const auto skew_s = std::chrono::ceil<std::chrono::seconds>(opts.clock_skew).count();
    FUZZ_CHECK(v.claims.exp >= now_s - skew_s);
  }
  return 0;
}
