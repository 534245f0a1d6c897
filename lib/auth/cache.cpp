#include "auth/cache.hpp"

namespace clerk_sync::auth {

token_cache::token_cache(std::size_t capacity, std::chrono::milliseconds clock_skew)
    : capacity_(capacity), skew_(clock_skew) {}

bool token_cache::live(const token::claim_set& c, std::chrono::system_clock::time_point now) const {
  // The same rule as token::verify: exp * 1000 > now - skew (exp whole seconds).
  const auto now_ms = std::chrono::duration_cast<std::chrono::milliseconds>(now.time_since_epoch()).count();
  return c.exp * 1000 > now_ms - skew_.count();
}

const token::claim_set* token_cache::find(std::string_view token, std::chrono::system_clock::time_point now) {
  if (capacity_ == 0) return nullptr;
  const auto it = entries_.find(std::string(token));
  if (it == entries_.end()) return nullptr;
  if (!live(it->second, now)) {
    entries_.erase(it);
    return nullptr;
  }
  return &it->second;
}

void token_cache::store(std::string_view token, const token::claim_set& claims,
                        std::chrono::system_clock::time_point now) {
  if (capacity_ == 0 || !live(claims, now)) return;
  if (entries_.size() >= capacity_) {
    std::erase_if(entries_, [&](const auto& e) { return !live(e.second, now); });
    if (entries_.size() >= capacity_) entries_.clear();
  }
  // Without the payload JSON, which no check reads: with the token as the
  // key, it would double what each entry holds (up to the header limit).
  token::claim_set kept = claims;
  kept.payload = {};
  entries_.insert_or_assign(std::string(token), std::move(kept));
}

}  // namespace clerk_sync::auth
