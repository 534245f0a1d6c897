#pragma once
// Test-only token minting: an RSA key pair generated at run time (never
// written to the repository), its public key as PEM and as a JWK, and
// compact JWS built from any header and payload JSON, signed RS256, HS256
// or not at all. Throws std::runtime_error when OpenSSL fails.

#include <memory>
#include <string>
#include <string_view>

namespace clerk_sync::test {

class rsa_signer {
 public:
  explicit rsa_signer(int bits = 2048);
  ~rsa_signer();
  rsa_signer(rsa_signer&&) noexcept;
  rsa_signer(const rsa_signer&) = delete;
  rsa_signer& operator=(const rsa_signer&) = delete;

  [[nodiscard]] const std::string& public_pem() const { return public_pem_; }
  // {"kty":"RSA","kid":…,"use":"sig","alg":"RS256","n":…,"e":…}
  [[nodiscard]] std::string jwk(std::string_view kid) const;
  // base64url(header) "." base64url(payload) "." base64url(RS256 signature)
  [[nodiscard]] std::string sign(std::string_view header_json, std::string_view payload_json) const;
  // The raw RS256 signature of `input`.
  [[nodiscard]] std::string signature(std::string_view input) const;

 private:
  struct impl;
  std::unique_ptr<impl> impl_;
  std::string public_pem_;
};

// base64url(header) "." base64url(payload) "." base64url(HMAC-SHA256(secret)).
[[nodiscard]] std::string sign_hs256(std::string_view header_json, std::string_view payload_json,
                                     std::string_view secret);
// An unsigned token: "<header>.<payload>." (alg none).
[[nodiscard]] std::string unsigned_token(std::string_view header_json, std::string_view payload_json);

}  // namespace clerk_sync::test
