#include "token/jwt.hpp"

#include <openssl/bio.h>
#include <openssl/core_names.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/param_build.h>
#include <openssl/pem.h>
#include <rapidjson/document.h>

#include <algorithm>
#include <array>
#include <cmath>
#include <string_view>
#include <vector>

namespace clerk_sync::token {

struct key_set::impl {
  struct entry {
    std::string kid;
    std::shared_ptr<EVP_PKEY> key;
  };
  std::vector<entry> keys;
  bool uses_kid = false;
};

namespace {

std::shared_ptr<EVP_PKEY> own(EVP_PKEY* k) { return {k, EVP_PKEY_free}; }

using bio_ptr = std::unique_ptr<BIO, decltype(&BIO_free)>;
using md_ctx_ptr = std::unique_ptr<EVP_MD_CTX, decltype(&EVP_MD_CTX_free)>;

constexpr std::string_view url_alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

int url_value(char c) {
  if (c >= 'A' && c <= 'Z') return c - 'A';
  if (c >= 'a' && c <= 'z') return c - 'a' + 26;
  if (c >= '0' && c <= '9') return c - '0' + 52;
  if (c == '-') return 62;
  if (c == '_') return 63;
  return -1;
}

// A JSON number as Clerk reads it (`typeof x === "number"`).
std::optional<double> number_member(const rapidjson::Value& obj, const char* name) {
  const auto it = obj.FindMember(name);
  if (it == obj.MemberEnd() || !it->value.IsNumber()) return std::nullopt;
  return it->value.GetDouble();
}

bool has_member(const rapidjson::Value& obj, const char* name) { return obj.FindMember(name) != obj.MemberEnd(); }

// A member named twice: RapidJSON's lookups take the first, JavaScript's
// JSON.parse (Clerk's SDKs) the last, so such a document could mean one
// thing here and another there. Clerk never writes one. Sorted, not
// compared pairwise: a 16 KiB token may hold thousands of members.
bool has_duplicate_member(const rapidjson::Value& obj) {
  std::vector<std::string_view> names;
  names.reserve(obj.MemberCount());
  for (const auto& m : obj.GetObject()) names.emplace_back(m.name.GetString(), m.name.GetStringLength());
  std::sort(names.begin(), names.end());
  return std::adjacent_find(names.begin(), names.end()) != names.end();
}

std::optional<std::string> string_member(const rapidjson::Value& obj, const char* name) {
  const auto it = obj.FindMember(name);
  if (it == obj.MemberEnd() || !it->value.IsString()) return std::nullopt;
  return std::string(it->value.GetString(), it->value.GetStringLength());
}

// Whole seconds, the fraction cut toward zero, as Clerk's
// Date#setUTCSeconds(exp) does: a fraction never adds time to a claim.
std::int64_t whole_seconds(double v) {
  constexpr double limit = 9.0e15;  // far beyond any date; keeps the cast defined
  return static_cast<std::int64_t>(std::trunc(std::clamp(v, -limit, limit)));
}

// A time claim in milliseconds, as Clerk compares it.
double claim_ms(double seconds) { return std::trunc(seconds) * 1000.0; }

// Non-empty, and every byte printable ASCII other than the space.
bool visible_ascii(std::string_view s) {
  return !s.empty() && std::all_of(s.begin(), s.end(), [](char ch) { return ch > ' ' && ch < '\x7f'; });
}

bool rs256_verify(EVP_PKEY* key, std::string_view signing_input, std::string_view signature) {
  // A scratch context per thread, reset on each call (a failed verification
  // leaves it unusable otherwise): allocating a fresh one each time cost up
  // to a quarter of an RS256 verification in scripts/bench auth.
  thread_local const md_ctx_ptr ctx(EVP_MD_CTX_new(), EVP_MD_CTX_free);
  if (!ctx || EVP_MD_CTX_reset(ctx.get()) != 1) return false;
  if (EVP_DigestVerifyInit(ctx.get(), nullptr, EVP_sha256(), nullptr, key) != 1) return false;
  return EVP_DigestVerify(ctx.get(), reinterpret_cast<const unsigned char*>(signature.data()), signature.size(),
                          reinterpret_cast<const unsigned char*>(signing_input.data()), signing_input.size()) == 1;
}

std::shared_ptr<EVP_PKEY> rsa_from_jwk(std::string_view n_b64, std::string_view e_b64) {
  // A JWKS written by another tool may pad its numbers: key material is the
  // operator's, read once, so padding costs nothing here.
  const auto unpadded = [](std::string_view v) {
    while (!v.empty() && v.back() == '=') v.remove_suffix(1);
    return v;
  };
  const auto n = base64url_decode(unpadded(n_b64));
  const auto e = base64url_decode(unpadded(e_b64));
  if (!n || !e || n->empty() || e->empty()) return nullptr;
  std::unique_ptr<BIGNUM, decltype(&BN_free)> bn_n(
      BN_bin2bn(reinterpret_cast<const unsigned char*>(n->data()), static_cast<int>(n->size()), nullptr), BN_free);
  std::unique_ptr<BIGNUM, decltype(&BN_free)> bn_e(
      BN_bin2bn(reinterpret_cast<const unsigned char*>(e->data()), static_cast<int>(e->size()), nullptr), BN_free);
  std::unique_ptr<OSSL_PARAM_BLD, decltype(&OSSL_PARAM_BLD_free)> bld(OSSL_PARAM_BLD_new(), OSSL_PARAM_BLD_free);
  if (!bn_n || !bn_e || !bld) return nullptr;
  if (OSSL_PARAM_BLD_push_BN(bld.get(), OSSL_PKEY_PARAM_RSA_N, bn_n.get()) != 1 ||
      OSSL_PARAM_BLD_push_BN(bld.get(), OSSL_PKEY_PARAM_RSA_E, bn_e.get()) != 1)
    return nullptr;
  std::unique_ptr<OSSL_PARAM, decltype(&OSSL_PARAM_free)> params(OSSL_PARAM_BLD_to_param(bld.get()),
                                                                 OSSL_PARAM_free);
  std::unique_ptr<EVP_PKEY_CTX, decltype(&EVP_PKEY_CTX_free)> ctx(EVP_PKEY_CTX_new_from_name(nullptr, "RSA", nullptr),
                                                                  EVP_PKEY_CTX_free);
  if (!params || !ctx || EVP_PKEY_fromdata_init(ctx.get()) != 1) return nullptr;
  EVP_PKEY* out = nullptr;
  if (EVP_PKEY_fromdata(ctx.get(), &out, EVP_PKEY_PUBLIC_KEY, params.get()) != 1) return nullptr;
  return own(out);
}

// A key no signature should be trusted under: a modulus under 2048 bits
// (Clerk's keys are 2048; 512 bits are factored in hours), or a public
// exponent that is even or below 3 (with e = 1 a "signature" equal to the
// padded hash verifies, so anyone could sign). Key files are the
// operator's, but one pasted from the wrong place must stop start-up, not
// open the door. Throws key_error naming `where`.
void require_sound_rsa(const EVP_PKEY* key, const std::string& where) {
  const int bits = EVP_PKEY_get_bits(key);
  if (bits < 2048)
    throw key_error(where + " is an RSA key of " + std::to_string(bits) + " bits; at least 2048 are required");
  BIGNUM* e = nullptr;
  if (EVP_PKEY_get_bn_param(key, OSSL_PKEY_PARAM_RSA_E, &e) != 1 || e == nullptr)
    throw key_error(where + ": its RSA public exponent cannot be read");
  const std::unique_ptr<BIGNUM, decltype(&BN_free)> owned(e, BN_free);
  if (!BN_is_odd(e) || BN_num_bits(e) < 2)  // odd with two bits or more: 3 or above
    throw key_error(where + ": its RSA public exponent is even or below 3 (Clerk's is 65537)");
}

}  // namespace

std::string_view to_string(reason r) {
  switch (r) {
    case reason::ok: return "ok";
    case reason::malformed: return "malformed";
    case reason::bad_type: return "bad_type";
    case reason::unsupported_alg: return "unsupported_alg";
    case reason::unknown_kid: return "unknown_kid";
    case reason::bad_signature: return "bad_signature";
    case reason::missing_sub: return "missing_sub";
    case reason::bad_azp: return "bad_azp";
    case reason::bad_issuer: return "bad_issuer";
    case reason::bad_time_claim: return "bad_time_claim";
    case reason::expired: return "expired";
    case reason::not_yet_valid: return "not_yet_valid";
    case reason::issued_in_future: return "issued_in_future";
    case reason::missing_sid: return "missing_sid";
    case reason::session_pending: return "session_pending";
  }
  return "unknown";
}

std::string base64url_encode(std::string_view bytes) {
  std::string out;
  out.reserve((bytes.size() * 4 + 2) / 3);
  unsigned buffer = 0;
  int bits = 0;
  for (const char ch : bytes) {
    buffer = (buffer << 8) | static_cast<unsigned char>(ch);
    bits += 8;
    while (bits >= 6) {
      bits -= 6;
      out.push_back(url_alphabet[(buffer >> bits) & 63U]);
    }
  }
  if (bits > 0) out.push_back(url_alphabet[(buffer << (6 - bits)) & 63U]);
  return out;
}

std::optional<std::string> base64url_decode(std::string_view text) {
  std::string out;
  out.reserve(text.size() * 3 / 4);
  unsigned buffer = 0;
  int bits = 0;
  for (const char c : text) {
    const int v = url_value(c);
    if (v < 0) return std::nullopt;
    buffer = ((buffer << 6) | static_cast<unsigned>(v)) & 0xFFFFU;
    bits += 6;
    if (bits >= 8) {
      bits -= 8;
      out.push_back(static_cast<char>((buffer >> bits) & 0xFFU));
    }
  }
  // A lone trailing character, or set bits past the last byte: not canonical.
  if (bits >= 6 || ((buffer << (8 - bits)) & 0xFFU) != 0) return std::nullopt;
  return out;
}

key_set::key_set() : impl_(std::make_shared<impl>()) {}
key_set::key_set(std::shared_ptr<const impl> i) : impl_(std::move(i)) {}
key_set::~key_set() = default;
key_set::key_set(const key_set&) = default;
key_set& key_set::operator=(const key_set&) = default;
key_set::key_set(key_set&&) noexcept = default;
key_set& key_set::operator=(key_set&&) noexcept = default;
std::size_t key_set::size() const { return impl_->keys.size(); }
bool key_set::uses_kid() const { return impl_->uses_kid; }

key_set key_set::from_pem(std::string_view text) {
  auto out = std::make_shared<impl>();
  bio_ptr bio(BIO_new_mem_buf(text.data(), static_cast<int>(text.size())), BIO_free);
  if (!bio) throw key_error("cannot read the PEM text");
  for (;;) {
    EVP_PKEY* k = PEM_read_bio_PUBKEY(bio.get(), nullptr, nullptr, nullptr);
    if (k == nullptr) break;
    auto key = own(k);
    if (EVP_PKEY_is_a(key.get(), "RSA") != 1) throw key_error("a PEM public key is not an RSA key (RS256 needs RSA)");
    require_sound_rsa(key.get(), "PEM public key " + std::to_string(out->keys.size() + 1));
    out->keys.push_back({"", std::move(key)});
  }
  ERR_clear_error();  // the end of the text, or the block that stopped the loop (said below)
  if (out->keys.empty()) throw key_error("no \"-----BEGIN PUBLIC KEY-----\" block could be read");
  // OpenSSL stops at a damaged block and skips blocks of other kinds: a
  // rotation key pasted badly, or an "RSA PUBLIC KEY" or certificate block,
  // would be left out without a word, and tokens signed with it refused.
  std::size_t blocks = 0;
  for (auto at = text.find("-----BEGIN "); at != std::string_view::npos; at = text.find("-----BEGIN ", at + 1)) ++blocks;
  if (out->keys.size() != blocks)
    throw key_error(std::to_string(blocks - out->keys.size()) + " of " + std::to_string(blocks) +
                    " PEM blocks could not be read as a \"-----BEGIN PUBLIC KEY-----\" block (each block must be one)");
  return key_set(std::move(out));
}

key_set key_set::from_jwks(std::string_view json) {
  rapidjson::Document doc;
  doc.Parse<rapidjson::kParseIterativeFlag>(json.data(), json.size());
  if (doc.HasParseError() || !doc.IsObject()) throw key_error("the JWKS document is not a JSON object");
  const auto keys = doc.FindMember("keys");
  if (keys == doc.MemberEnd() || !keys->value.IsArray()) throw key_error("the JWKS document has no \"keys\" array");
  auto out = std::make_shared<impl>();
  out->uses_kid = true;
  for (const auto& jwk : keys->value.GetArray()) {
    if (!jwk.IsObject()) continue;
    if (string_member(jwk, "kty").value_or("") != "RSA") continue;
    if (const auto use = string_member(jwk, "use"); use && *use != "sig") continue;
    if (const auto alg = string_member(jwk, "alg"); alg && *alg != "RS256") continue;
    const auto n = string_member(jwk, "n");
    const auto e = string_member(jwk, "e");
    if (!n || !e) throw key_error("a JWKS RSA key lacks \"n\" or \"e\"");
    auto key = rsa_from_jwk(*n, *e);
    if (!key) throw key_error("a JWKS RSA key has an unreadable \"n\" or \"e\"");
    require_sound_rsa(key.get(), "the JWKS key with kid \"" + string_member(jwk, "kid").value_or("") + "\"");
    out->keys.push_back({string_member(jwk, "kid").value_or(""), std::move(key)});
  }
  if (out->keys.empty()) throw key_error("the JWKS document has no RSA signing key for RS256");
  return key_set(std::move(out));
}

struct verifier_access {
  static const key_set::impl& of(const key_set& k) { return *k.impl_; }
};

verdict verify(std::string_view token, const key_set& keys, const options& opts,
               std::chrono::system_clock::time_point now) {
  verdict v;
  // Three parts, exactly (Clerk: token.split(".").length === 3).
  const auto dot1 = token.find('.');
  if (dot1 == std::string_view::npos) return v;
  const auto dot2 = token.find('.', dot1 + 1);
  if (dot2 == std::string_view::npos || token.find('.', dot2 + 1) != std::string_view::npos) return v;
  const auto header_json = base64url_decode(token.substr(0, dot1));
  auto payload_json = base64url_decode(token.substr(dot1 + 1, dot2 - dot1 - 1));
  const auto signature = base64url_decode(token.substr(dot2 + 1));
  if (!header_json || !payload_json || !signature) return v;
  // RapidJSON ends a document at a NUL byte: `{...}\0{...}` would read as
  // its first object, where JSON.parse (Clerk's) refuses it. No JSON text
  // holds one outside a string, nor raw inside one.
  if (header_json->find('\0') != std::string::npos || payload_json->find('\0') != std::string::npos) return v;
  rapidjson::Document header;
  rapidjson::Document payload;
  header.Parse<rapidjson::kParseIterativeFlag>(header_json->data(), header_json->size());
  payload.Parse<rapidjson::kParseIterativeFlag>(payload_json->data(), payload_json->size());
  if (header.HasParseError() || payload.HasParseError() || !header.IsObject() || !payload.IsObject()) return v;
  if (has_duplicate_member(header) || has_duplicate_member(payload)) return v;

  auto& c = v.claims;
  c.kid = string_member(header, "kid").value_or("");
  c.sub = string_member(payload, "sub").value_or("");
  c.sid = string_member(payload, "sid").value_or("");
  c.azp = string_member(payload, "azp").value_or("");
  c.iss = string_member(payload, "iss").value_or("");
  c.sts = string_member(payload, "sts").value_or("");
  c.payload = std::move(*payload_json);

  // Header: typ absent or "JWT"; RS256 and nothing else, so a public key can
  // never be used as an HMAC secret.
  if (has_member(header, "typ") && string_member(header, "typ") != std::optional<std::string>("JWT")) {
    v.why = reason::bad_type;
    return v;
  }
  // Clerk signs several kinds of token with the instance's key and names
  // the kind in `cat`: only a session token (or one from before `cat`
  // existed, or from an instance that stamps the "ignore" marker on every
  // kind) is one. A JWT template (cl_B7d4PD222AAA) is minted by any
  // signed-in user, may carry a `sid` of the template's choosing, and lives
  // as long as its template says; a machine token (cl_B7d4PD333AAA) has no
  // user. Clerk's authenticateRequest refuses both the same way.
  if (has_member(header, "cat")) {
    const auto cat = string_member(header, "cat");
    if (cat != std::optional<std::string>("cl_B7d4PD111AAA") && cat != std::optional<std::string>("cl_I7d4PD111III")) {
      v.why = reason::bad_type;
      return v;
    }
  }
  if (string_member(header, "alg") != std::optional<std::string>("RS256")) {
    v.why = reason::unsupported_alg;
    return v;
  }

  // Signature over the exact bytes received: "<header>.<payload>".
  const auto& set = verifier_access::of(keys);
  const std::string_view signing_input = token.substr(0, dot2);
  const bool pick_by_kid = set.uses_kid && has_member(header, "kid");
  bool any_key = false;
  bool verified = false;
  for (const auto& k : set.keys) {
    if (pick_by_kid && k.kid != c.kid) continue;
    any_key = true;
    if (rs256_verify(k.key.get(), signing_input, *signature)) {
      verified = true;
      break;
    }
  }
  if (!verified) {
    v.why = any_key || set.keys.empty() ? reason::bad_signature : reason::unknown_kid;
    return v;
  }

  // Claims, in the order Clerk checks them. An empty sub names no user:
  // refused here, though Clerk's verifyToken asks only for a string. So is
  // one with a byte that is not visible ASCII (Clerk's ids are letters,
  // digits and '_'): clerk-sync-auth copies sub and sid into its response's
  // headers, where a CR LF would add a header of the token's choosing.
  if (!string_member(payload, "sub") || !visible_ascii(c.sub)) {
    v.why = reason::missing_sub;
    return v;
  }
  if (!opts.authorized_parties.empty() &&
      (c.azp.empty() || std::find(opts.authorized_parties.begin(), opts.authorized_parties.end(), c.azp) ==
                            opts.authorized_parties.end())) {
    v.why = reason::bad_azp;
    return v;
  }
  if (opts.issuer && (!string_member(payload, "iss") || c.iss != *opts.issuer)) {
    v.why = reason::bad_issuer;
    return v;
  }
  // Compared in milliseconds, as Clerk does (whole seconds of exp * 1000 vs
  // Date.now() ± skew).
  const double now_ms =
      static_cast<double>(std::chrono::duration_cast<std::chrono::milliseconds>(now.time_since_epoch()).count());
  const double skew_ms = static_cast<double>(opts.clock_skew.count());
  const auto exp = number_member(payload, "exp");
  if (!exp) {
    v.why = reason::bad_time_claim;
    return v;
  }
  c.exp = whole_seconds(*exp);
  if (claim_ms(*exp) <= now_ms - skew_ms) {
    v.why = reason::expired;
    return v;
  }
  if (has_member(payload, "nbf")) {
    const auto nbf = number_member(payload, "nbf");
    if (!nbf) {
      v.why = reason::bad_time_claim;
      return v;
    }
    c.nbf = whole_seconds(*nbf);
    if (claim_ms(*nbf) > now_ms + skew_ms) {
      v.why = reason::not_yet_valid;
      return v;
    }
  }
  if (has_member(payload, "iat")) {
    const auto iat = number_member(payload, "iat");
    if (!iat) {
      v.why = reason::bad_time_claim;
      return v;
    }
    c.iat = whole_seconds(*iat);
    if (claim_ms(*iat) > now_ms + skew_ms) {
      v.why = reason::issued_in_future;
      return v;
    }
  }
  // What a session token adds to any Clerk JWT.
  if (!string_member(payload, "sid") || !visible_ascii(c.sid)) {
    v.why = reason::missing_sid;
    return v;
  }
  if (c.sts == "pending" && !opts.allow_pending) {
    v.why = reason::session_pending;
    return v;
  }
  v.why = reason::ok;
  return v;
}

}  // namespace clerk_sync::token
