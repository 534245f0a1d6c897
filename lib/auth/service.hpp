#pragma once
// One forward-auth check, transport aside: token from the request headers,
// verified (or found in the cache), then the synced user and session looked
// up, then decide(). Not thread-safe (the cache and the prepared statements
// are per thread); the clock is a parameter. A failed lookup is a 503
// ("db_unavailable"): the proxy refuses rather than guessing.

#include <chrono>
#include <cstdint>
#include <functional>
#include <map>
#include <optional>
#include <string>
#include <string_view>

#include "auth/cache.hpp"
#include "auth/decision.hpp"
#include "auth/lookup.hpp"
#include "token/jwt.hpp"

namespace clerk_sync::auth {

struct check_result {
  int status = 401;
  std::string_view outcome;  // "ok", "ok_unsynced", "missing_token", a token reason, "banned", …
  std::string user;          // set when the token was valid
  std::string session;       // set when the token was valid
  std::string role;          // set for 200
  bool cached = false;       // the verification came from the cache
};

class service {
 public:
  service(token::key_set keys, token::options opts, std::size_t cache_size, lookup& db);

  [[nodiscard]] check_result check(std::optional<std::string_view> authorization,
                                   std::optional<std::string_view> cookie,
                                   std::chrono::system_clock::time_point now);

  [[nodiscard]] std::size_t cached_tokens() const { return cache_.size(); }
  // Why the database cannot be served now, for /healthz; nullopt when it can:
  // the path, then the two lookups a check makes (with its one reconnect).
  [[nodiscard]] std::optional<std::string> database_problem();
  // A rate limiter's key for a database problem line, `base` or, once the
  // file was replaced (which only a restart mends), its own: that line is
  // not held back behind one of a passing problem said just before.
  [[nodiscard]] std::string problem_key(std::string_view base) const {
    return std::string(base) + (db_.replaced() ? ":replaced" : "");
  }
  // How far each projection that has written the database has read
  // (lookup::projection_positions), for auth::projection_watch; nullopt
  // when the file cannot be read now (database_problem() says why).
  [[nodiscard]] std::optional<positions> projection_positions();

 private:
  // Runs `read` (lookups through db_), once more on a reopened connection
  // when it fails; the second failure's error, or nullopt.
  std::optional<std::string> read_with_reopen(const std::function<void()>& read);

  token::key_set keys_;
  token::options opts_;
  token_cache cache_;
  lookup& db_;
};

}  // namespace clerk_sync::auth
