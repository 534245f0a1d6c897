#include "token/signer.hpp"

#include <openssl/bio.h>
#include <openssl/core_names.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/pem.h>
#include <openssl/rsa.h>

#include <array>
#include <stdexcept>
#include <vector>

#include "token/jwt.hpp"

namespace clerk_sync::test {

struct rsa_signer::impl {
  std::unique_ptr<EVP_PKEY, decltype(&EVP_PKEY_free)> key{nullptr, EVP_PKEY_free};
};

namespace {

std::string bn_bytes(EVP_PKEY* key, const char* name) {
  BIGNUM* bn = nullptr;
  if (EVP_PKEY_get_bn_param(key, name, &bn) != 1) throw std::runtime_error("EVP_PKEY_get_bn_param failed");
  std::string out(static_cast<std::size_t>(BN_num_bytes(bn)), '\0');
  BN_bn2bin(bn, reinterpret_cast<unsigned char*>(out.data()));
  BN_free(bn);
  return out;
}

}  // namespace

rsa_signer::rsa_signer(int bits) : impl_(std::make_unique<impl>()) {
  impl_->key.reset(EVP_RSA_gen(static_cast<unsigned>(bits)));
  if (!impl_->key) throw std::runtime_error("EVP_RSA_gen failed");
  std::unique_ptr<BIO, decltype(&BIO_free)> bio(BIO_new(BIO_s_mem()), BIO_free);
  if (!bio || PEM_write_bio_PUBKEY(bio.get(), impl_->key.get()) != 1) throw std::runtime_error("PEM_write_bio_PUBKEY");
  char* data = nullptr;
  const long n = BIO_get_mem_data(bio.get(), &data);
  public_pem_.assign(data, static_cast<std::size_t>(n));
}

rsa_signer::~rsa_signer() = default;
rsa_signer::rsa_signer(rsa_signer&&) noexcept = default;

std::string rsa_signer::jwk(std::string_view kid) const {
  return std::string(R"({"kty":"RSA","kid":")") + std::string(kid) + R"(","use":"sig","alg":"RS256","n":")" +
         token::base64url_encode(bn_bytes(impl_->key.get(), OSSL_PKEY_PARAM_RSA_N)) + R"(","e":")" +
         token::base64url_encode(bn_bytes(impl_->key.get(), OSSL_PKEY_PARAM_RSA_E)) + R"("})";
}

std::string rsa_signer::signature(std::string_view input) const {
  std::unique_ptr<EVP_MD_CTX, decltype(&EVP_MD_CTX_free)> ctx(EVP_MD_CTX_new(), EVP_MD_CTX_free);
  std::size_t len = 0;
  if (!ctx || EVP_DigestSignInit(ctx.get(), nullptr, EVP_sha256(), nullptr, impl_->key.get()) != 1 ||
      EVP_DigestSign(ctx.get(), nullptr, &len, reinterpret_cast<const unsigned char*>(input.data()), input.size()) != 1)
    throw std::runtime_error("EVP_DigestSign failed");
  std::string sig(len, '\0');
  if (EVP_DigestSign(ctx.get(), reinterpret_cast<unsigned char*>(sig.data()), &len,
                     reinterpret_cast<const unsigned char*>(input.data()), input.size()) != 1)
    throw std::runtime_error("EVP_DigestSign failed");
  sig.resize(len);
  return sig;
}

std::string rsa_signer::sign(std::string_view header_json, std::string_view payload_json) const {
  const std::string input = token::base64url_encode(header_json) + "." + token::base64url_encode(payload_json);
  return input + "." + token::base64url_encode(signature(input));
}

std::string sign_hs256(std::string_view header_json, std::string_view payload_json, std::string_view secret) {
  const std::string input = token::base64url_encode(header_json) + "." + token::base64url_encode(payload_json);
  std::array<unsigned char, EVP_MAX_MD_SIZE> mac{};
  unsigned len = 0;
  if (HMAC(EVP_sha256(), secret.data(), static_cast<int>(secret.size()),
           reinterpret_cast<const unsigned char*>(input.data()), input.size(), mac.data(), &len) == nullptr)
    throw std::runtime_error("HMAC failed");
  return input + "." + token::base64url_encode(std::string_view(reinterpret_cast<const char*>(mac.data()), len));
}

std::string unsigned_token(std::string_view header_json, std::string_view payload_json) {
  return token::base64url_encode(header_json) + "." + token::base64url_encode(payload_json) + ".";
}

}  // namespace clerk_sync::test
