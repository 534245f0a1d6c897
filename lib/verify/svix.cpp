#include "verify/svix.hpp"

#include <openssl/core_names.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>

#include <algorithm>
#include <array>
#include <charconv>
#include <initializer_list>
#include <memory>
#include <stdexcept>

namespace clerk_sync::verify {
namespace {

constexpr std::string_view secret_prefix = "whsec_";

bool is_base64_char(char c) {
  return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '+' || c == '/';
}

std::string base64_encode(std::string_view bytes) {
  std::string out(4 * ((bytes.size() + 2) / 3) + 1, '\0');
  const int n = EVP_EncodeBlock(reinterpret_cast<unsigned char*>(out.data()),
                                reinterpret_cast<const unsigned char*>(bytes.data()), static_cast<int>(bytes.size()));
  out.resize(static_cast<std::size_t>(n));
  return out;
}

// Standard base64, its final padding optional; nullopt for anything else.
// A secret copied without its trailing '=' (a double click stops there) is
// the same key: svix's libraries add the padding back too. Only the
// canonical spelling is taken (the bits past the last byte zero), so that
// a secret cut short by a character or two, which would otherwise decode
// to another key and answer every webhook 401, stops start-up instead.
std::optional<std::string> base64_decode(std::string_view given) {
  if (given.empty() || given.size() % 4 == 1) return std::nullopt;
  std::string text(given);
  text.append((4 - text.size() % 4) % 4, '=');
  std::size_t pad = 0;
  while (pad < 2 && text[text.size() - 1 - pad] == '=') ++pad;
  for (std::size_t i = 0; i < text.size() - pad; ++i)
    if (!is_base64_char(text[i])) return std::nullopt;
  std::string out(text.size() / 4 * 3, '\0');
  const int n = EVP_DecodeBlock(reinterpret_cast<unsigned char*>(out.data()),
                                reinterpret_cast<const unsigned char*>(text.data()), static_cast<int>(text.size()));
  if (n < 0 || static_cast<std::size_t>(n) < pad) return std::nullopt;
  // EVP_DecodeBlock counts the padding as zero bytes.
  out.resize(static_cast<std::size_t>(n) - pad);
  if (base64_encode(out) != text) return std::nullopt;
  return out;
}

std::string_view trim(std::string_view s) {
  while (!s.empty() && (s.front() == ' ' || s.front() == '\t' || s.front() == '\r' || s.front() == '\n'))
    s.remove_prefix(1);
  while (!s.empty() && (s.back() == ' ' || s.back() == '\t' || s.back() == '\r' || s.back() == '\n'))
    s.remove_suffix(1);
  return s;
}

// Strict integer: optional '-', then 1..18 ASCII digits, nothing else.
std::optional<std::int64_t> parse_timestamp(std::string_view text) {
  std::string_view digits = text;
  if (!digits.empty() && digits.front() == '-') digits.remove_prefix(1);
  if (digits.empty() || digits.size() > 18) return std::nullopt;
  for (const char c : digits)
    if (c < '0' || c > '9') return std::nullopt;
  std::int64_t v = 0;
  const auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), v);
  if (ec != std::errc() || end != text.data() + text.size()) return std::nullopt;
  return v;
}

// One HMAC context per thread, fetched once: OpenSSL's one-shot HMAC()
// looks the algorithms up by name on every call, which cost about as much
// as hashing a 2 KiB body.
class hmac_sha256 {
 public:
  hmac_sha256()
      : mac_(EVP_MAC_fetch(nullptr, "HMAC", nullptr), &EVP_MAC_free),
        ctx_(mac_ ? EVP_MAC_CTX_new(mac_.get()) : nullptr, &EVP_MAC_CTX_free) {
    std::array<OSSL_PARAM, 2> params{
        OSSL_PARAM_construct_utf8_string(OSSL_MAC_PARAM_DIGEST, const_cast<char*>("SHA256"), 0),
        OSSL_PARAM_construct_end()};
    if (!ctx_ || EVP_MAC_CTX_set_params(ctx_.get(), params.data()) != 1)
      throw std::runtime_error("HMAC-SHA256 is not available");
  }

  // HMAC-SHA256(k, the pieces one after the other).
  std::string_view operator()(std::string_view k, std::initializer_list<std::string_view> pieces) {
    // A null key would make OpenSSL keep the previous call's key.
    static constexpr std::string_view no_key{"", 0};
    if (k.data() == nullptr) k = no_key;
    bool ok = EVP_MAC_init(ctx_.get(), bytes(k), k.size(), nullptr) == 1;
    for (const auto piece : pieces) ok = ok && EVP_MAC_update(ctx_.get(), bytes(piece), piece.size()) == 1;
    std::size_t len = 0;
    ok = ok && EVP_MAC_final(ctx_.get(), out_.data(), &len, out_.size()) == 1;
    if (!ok) throw std::runtime_error("HMAC-SHA256 failed");
    return {reinterpret_cast<const char*>(out_.data()), len};
  }

 private:
  static const unsigned char* bytes(std::string_view s) { return reinterpret_cast<const unsigned char*>(s.data()); }
  std::unique_ptr<EVP_MAC, decltype(&EVP_MAC_free)> mac_;
  std::unique_ptr<EVP_MAC_CTX, decltype(&EVP_MAC_CTX_free)> ctx_;
  std::array<unsigned char, EVP_MAX_MD_SIZE> out_{};
};

// base64(HMAC-SHA256(key, id.timestamp.body)) without the "v1," prefix.
std::string signature_base64(std::string_view k, std::string_view msg_id, std::string_view timestamp,
                             std::string_view body) {
  thread_local hmac_sha256 hmac;
  return base64_encode(hmac(k, {msg_id, ".", timestamp, ".", body}));
}

}  // namespace

key parse_secret(std::string_view text) {
  text = trim(text);
  if (text.starts_with(secret_prefix)) text.remove_prefix(secret_prefix.size());
  if (text.empty()) throw secret_error("webhook secret is empty (expected whsec_<base64>)");
  auto k = base64_decode(text);
  if (!k || k->empty()) throw secret_error("webhook secret is not valid base64 (expected whsec_<base64>)");
  return *k;
}

std::vector<key> parse_secret_list(std::string_view text) {
  std::vector<key> keys;
  std::size_t start = 0;
  while (start <= text.size()) {
    const auto end = text.find_first_of(" ,\t\r\n", start);
    const auto piece = text.substr(start, end == std::string_view::npos ? std::string_view::npos : end - start);
    if (!piece.empty()) keys.push_back(parse_secret(piece));
    if (end == std::string_view::npos) break;
    start = end + 1;
  }
  if (keys.empty()) throw secret_error("no webhook secret given");
  return keys;
}

std::vector<key> parse_secret_file(std::string_view contents) {
  std::vector<key> keys;
  std::size_t start = 0;
  while (start < contents.size()) {
    auto end = contents.find('\n', start);
    if (end == std::string_view::npos) end = contents.size();
    const auto line = trim(contents.substr(start, end - start));
    if (!line.empty() && line.front() != '#') {
      // The variable's list form: said as such, not as bad base64.
      if (line.find_first_of(" ,\t") != std::string_view::npos)
        throw secret_error("the webhook secret file holds one secret a line; a line holds several");
      keys.push_back(parse_secret(line));
    }
    start = end + 1;
  }
  if (keys.empty()) throw secret_error("the webhook secret file holds no secret");
  return keys;
}

std::string format_secret(std::string_view k) { return std::string(secret_prefix) + base64_encode(k); }

std::string sign(std::string_view k, std::string_view msg_id, std::int64_t timestamp, std::string_view body) {
  return sign(k, msg_id, std::to_string(timestamp), body);
}

std::string sign(std::string_view k, std::string_view msg_id, std::string_view timestamp, std::string_view body) {
  return "v1," + signature_base64(k, msg_id, timestamp, body);
}

std::string_view verdict::text() const {
  switch (why) {
    case reason::ok: return "ok";
    case reason::missing_header: return "missing_header";
    case reason::bad_timestamp: return "bad_timestamp";
    case reason::timestamp_too_old: return "timestamp_too_old";
    case reason::timestamp_too_new: return "timestamp_too_new";
    case reason::malformed_signature: return "malformed_signature";
    case reason::no_matching_signature: return "no_matching_signature";
    case reason::no_secret: return "no_secret";
  }
  return "unknown";
}

int verdict::http_status() const {
  switch (why) {
    case reason::ok: return 200;
    case reason::missing_header:
    case reason::bad_timestamp:
    case reason::malformed_signature: return 400;
    default: return 401;
  }
}

namespace {

// The space-separated entries of a signature header, each given to `f`
// until `f` says stop (true).
template <class F>
bool any_entry(std::string_view header, F&& f) {
  while (!header.empty()) {
    const auto space = header.find(' ');
    const auto entry = header.substr(0, space);
    header = space == std::string_view::npos ? std::string_view() : header.substr(space + 1);
    if (f(entry)) return true;
  }
  return false;
}

// The `v1,` entries, each given to `f` without its prefix. Other versions
// and junk are skipped.
template <class F>
bool any_v1(std::string_view header, F&& f) {
  return any_entry(header, [&](std::string_view entry) { return entry.starts_with("v1,") && f(entry.substr(3)); });
}

// `v<version>,<signature>`, of any version (Standard Webhooks has v1 and
// v1a), the signature perhaps empty (`v1,` is a published invalid
// signature, 401): a header with no such entry is no signature at all.
bool signature_shaped(std::string_view entry) {
  return entry.starts_with('v') && entry.find(',') != std::string_view::npos && entry.find(',') > 1;
}

// base64 of a SHA-256 HMAC, with its padding.
constexpr std::size_t signature_chars = 44;

}  // namespace

verdict check_headers(const signed_headers& headers, const std::vector<key>& keys,
                      std::chrono::system_clock::time_point now, std::chrono::seconds tolerance) {
  const auto present = [](const std::optional<std::string_view>& h) { return h && !h->empty(); };
  if (!present(headers.id) || !present(headers.timestamp) || !present(headers.signature))
    return {reason::missing_header};
  const auto ts = parse_timestamp(*headers.timestamp);
  if (!ts) return {reason::bad_timestamp};
  const std::int64_t now_s = std::chrono::duration_cast<std::chrono::seconds>(now.time_since_epoch()).count();
  if (now_s - *ts > tolerance.count()) return {reason::timestamp_too_old, *ts};
  if (*ts - now_s > tolerance.count()) return {reason::timestamp_too_new, *ts};
  if (keys.empty()) return {reason::no_secret, *ts};
  // The shape is looked at only for a refusal: a v1 entry of a signature's
  // length has it.
  if (!any_v1(*headers.signature, [](std::string_view given) { return given.size() == signature_chars; }))
    return {any_entry(*headers.signature, signature_shaped) ? reason::no_matching_signature
                                                            : reason::malformed_signature,
            *ts};
  return {reason::ok, *ts};
}

verdict verify_signature(std::string_view body, const signed_headers& headers, const std::vector<key>& keys) {
  if (!headers.id || !headers.timestamp || !headers.signature) return {reason::missing_header};
  std::vector<std::string> expected;
  expected.reserve(keys.size());
  for (const auto& k : keys) expected.push_back(signature_base64(k, *headers.id, *headers.timestamp, body));

  if (any_v1(*headers.signature, [&](std::string_view given) {
        // Length first: a compare over the shorter length would accept "v1,".
        return std::any_of(expected.begin(), expected.end(), [&](const std::string& e) {
          return given.size() == e.size() && CRYPTO_memcmp(given.data(), e.data(), e.size()) == 0;
        });
      }))
    return {reason::ok};
  return {reason::no_matching_signature};
}

verdict verify(std::string_view body, const signed_headers& headers, const std::vector<key>& keys,
               std::chrono::system_clock::time_point now, std::chrono::seconds tolerance) {
  const verdict v = check_headers(headers, keys, now, tolerance);
  if (!v.ok()) return v;
  return {verify_signature(body, headers, keys).why, v.timestamp};
}

}  // namespace clerk_sync::verify
