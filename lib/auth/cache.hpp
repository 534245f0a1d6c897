#pragma once
// Verified tokens, kept until they expire, so a repeated token costs a hash
// lookup instead of an RSA verification. Only valid verdicts are stored
// (an attacker's garbage cannot fill it); an entry is served while the token
// would still pass its exp check with the same clock skew. Bounded: when
// full, expired entries go first, then everything. Not thread-safe: one per
// I/O thread.

#include <chrono>
#include <cstddef>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>

#include "token/jwt.hpp"

namespace clerk_sync::auth {

class token_cache {
 public:
  // capacity 0 disables the cache.
  token_cache(std::size_t capacity, std::chrono::milliseconds clock_skew);

  // The stored claims of `token` if present and not expired at `now`;
  // without `payload`, which is not kept.
  [[nodiscard]] const token::claim_set* find(std::string_view token, std::chrono::system_clock::time_point now);
  // Stores a valid verdict's claims.
  void store(std::string_view token, const token::claim_set& claims, std::chrono::system_clock::time_point now);

  [[nodiscard]] std::size_t size() const { return entries_.size(); }

 private:
  [[nodiscard]] bool live(const token::claim_set& c, std::chrono::system_clock::time_point now) const;

  std::size_t capacity_;
  std::chrono::milliseconds skew_;
  std::unordered_map<std::string, token::claim_set> entries_;
};

}  // namespace clerk_sync::auth
