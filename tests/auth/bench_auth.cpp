// bench-auth (scripts/bench auth): session-token checks per second on one
// thread, against the ceiling of raw OpenSSL RS256 verification of the same
// tokens (signature bytes decoded beforehand, no JSON, no claims). Figures,
// not a test. Keys are generated at run time.
//   bench-auth [seconds per case] [distinct tokens]
#include <openssl/evp.h>
#include <openssl/pem.h>

#include <cstdio>
#include <cstdlib>
#include <functional>
#include <string>
#include <vector>

#include "auth/cache.hpp"
#include "auth/lookup.hpp"
#include "auth/service.hpp"
#include "store/database.hpp"
#include "token/jwt.hpp"
#include "token/signer.hpp"

namespace token = clerk_sync::token;
namespace auth = clerk_sync::auth;
using clock_type = std::chrono::steady_clock;

namespace {

// Runs `one(i)` over the tokens round-robin for `seconds`; returns checks/s.
double rate(const char* name, double seconds, std::size_t n, const std::function<bool(std::size_t)>& one) {
  std::size_t done = 0;
  std::size_t good = 0;
  const auto start = clock_type::now();
  const auto until = start + std::chrono::duration<double>(seconds);
  while (clock_type::now() < until) {
    for (int k = 0; k < 64; ++k, ++done) good += one(done % n) ? 1U : 0U;
  }
  const double s = std::chrono::duration<double>(clock_type::now() - start).count();
  const double per_s = static_cast<double>(done) / s;
  std::printf("%-34s %12.0f %10.2f %9s\n", name, per_s, 1e6 / per_s, good == done ? "all" : "SOME NOT");
  return per_s;
}

}  // namespace

int main(int argc, char** argv) {
  const double seconds = argc > 1 ? std::atof(argv[1]) : 3.0;
  const std::size_t n = argc > 2 ? static_cast<std::size_t>(std::atol(argv[2])) : 1000;
  const clerk_sync::test::rsa_signer signer(2048);
  const auto now = std::chrono::system_clock::now();
  const auto exp = std::chrono::duration_cast<std::chrono::seconds>(now.time_since_epoch()).count() + 3600;
  std::vector<std::string> tokens;
  std::vector<std::string> inputs;
  std::vector<std::string> signatures;
  for (std::size_t i = 0; i < n; ++i) {
    const std::string t = signer.sign(R"({"alg":"RS256","kid":"ins_bench","typ":"JWT"})",
                                      R"({"azp":"https://app.example","exp":)" + std::to_string(exp) +
                                          R"(,"iat":)" + std::to_string(exp - 3660) + R"(,"sid":"sess_)" +
                                          std::to_string(i) + R"(","sub":"user_)" + std::to_string(i % 500) +
                                          R"(","v":2})");
    const auto dot = t.rfind('.');
    tokens.push_back(t);
    inputs.push_back(t.substr(0, dot));
    signatures.push_back(*token::base64url_decode(t.substr(dot + 1)));
  }
  const auto keys = token::key_set::from_pem(signer.public_pem());
  token::options opts;
  opts.authorized_parties = {"https://app.example"};

  // The ceiling: EVP_DigestVerify alone, with a key parsed once.
  BIO* bio = BIO_new_mem_buf(signer.public_pem().data(), static_cast<int>(signer.public_pem().size()));
  EVP_PKEY* pkey = PEM_read_bio_PUBKEY(bio, nullptr, nullptr, nullptr);
  BIO_free(bio);
  EVP_MD_CTX* ctx = EVP_MD_CTX_new();

  // A database like the consumers': 500 users, one session per token.
  char dir_template[] = "/tmp/bench-auth-XXXXXX";
  const char* dir = mkdtemp(dir_template);
  if (dir == nullptr) return 1;
  const std::string db_path = std::string(dir) + "/clerk-sync.db";
  {
    clerk_sync::store::database db(db_path);
    std::string sql = "BEGIN;";
    for (int u = 0; u < 500; ++u)
      sql += "INSERT INTO users(id, role, updated_at) VALUES ('user_" + std::to_string(u) + "','vip',1);";
    for (std::size_t i = 0; i < n; ++i)
      sql += "INSERT INTO sessions(id, user_id, status, updated_at) VALUES ('sess_" + std::to_string(i) + "','user_" +
             std::to_string(i % 500) + "','active',1);";
    clerk_sync::store::exec(db, sql + "COMMIT;");
  }
  auth::lookup lookup(db_path);
  auth::service no_cache(keys, opts, 0, lookup);
  auth::service with_cache(keys, opts, 100'000, lookup);
  auth::token_cache cache(100'000, opts.clock_skew);

  std::printf("session-token checks, one thread, %zu distinct RS256 tokens (2048-bit key), %.1f s per case\n", n,
              seconds);
  std::printf("%-34s %12s %10s %9s\n", "case", "checks/s", "us/check", "accepted");
  const double ceiling = rate("a_ceiling (raw OpenSSL verify)", seconds, n, [&](std::size_t i) {
    return EVP_DigestVerifyInit(ctx, nullptr, EVP_sha256(), nullptr, pkey) == 1 &&
           EVP_DigestVerify(ctx, reinterpret_cast<const unsigned char*>(signatures[i].data()), signatures[i].size(),
                            reinterpret_cast<const unsigned char*>(inputs[i].data()), inputs[i].size()) == 1;
  });
  const double verify = rate("b_token_verify (no cache)", seconds, n, [&](std::size_t i) {
    return token::verify(tokens[i], keys, opts, std::chrono::system_clock::now()).ok();
  });
  const double cached = rate("c_token_cache (verify on miss)", seconds, n, [&](std::size_t i) {
    const auto t = std::chrono::system_clock::now();
    if (cache.find(tokens[i], t) != nullptr) return true;
    const auto v = token::verify(tokens[i], keys, opts, t);
    if (v.ok()) cache.store(tokens[i], v.claims, t);
    return v.ok();
  });
  const double svc = rate("d_auth_check (no cache, +2 lookups)", seconds, n, [&](std::size_t i) {
    return no_cache.check("Bearer " + tokens[i], std::nullopt, std::chrono::system_clock::now()).status == 200;
  });
  const double svc_cached = rate("e_auth_check (cache, +2 lookups)", seconds, n, [&](std::size_t i) {
    return with_cache.check("Bearer " + tokens[i], std::nullopt, std::chrono::system_clock::now()).status == 200;
  });
  std::printf("ratio b/a = %.2f   c/a = %.1f   d/a = %.2f   e/a = %.1f\n", verify / ceiling, cached / ceiling,
              svc / ceiling, svc_cached / ceiling);

  EVP_MD_CTX_free(ctx);
  EVP_PKEY_free(pkey);
  std::remove((db_path + "-wal").c_str());
  std::remove((db_path + "-shm").c_str());
  std::remove(db_path.c_str());
  rmdir(dir);
  return 0;
}
