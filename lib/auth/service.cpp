#include "auth/service.hpp"

#include <string_view>

#include "log/log.hpp"
#include "store/database.hpp"

namespace clerk_sync::auth {

service::service(token::key_set keys, token::options opts, std::size_t cache_size, lookup& db)
    : keys_(std::move(keys)), opts_(std::move(opts)), cache_(cache_size, opts_.clock_skew), db_(db) {}

std::optional<std::string> service::read_with_reopen(const std::function<void()>& read) {
  try {
    read();
  } catch (const store::db_error&) {
    // Once more on a fresh connection; then say why.
    try {
      db_.reopen();
      read();
    } catch (const store::db_error& e) {
      return std::string(e.what());
    }
  }
  return std::nullopt;
}

std::optional<std::string> service::database_problem() {
  if (auto problem = db_.file_problem()) return problem;
  // The right file is not yet a readable one (an I/O error, a damaged file,
  // a table it no longer has): every check would answer 503 while /healthz
  // said 200. So ask it what a check asks, for an id nobody has.
  return read_with_reopen([&] {
    (void)db_.session("");
    (void)db_.user("");
  });
}

std::optional<positions> service::projection_positions() {
  positions out;
  if (read_with_reopen([&] { out = db_.projection_positions(); })) return std::nullopt;
  return out;
}

check_result service::check(std::optional<std::string_view> authorization, std::optional<std::string_view> cookie,
                            std::chrono::system_clock::time_point now) {
  check_result r;
  const auto [tok, why] = extract_token(authorization, cookie);
  if (!tok) {
    r.outcome = why;
    return r;
  }
  token::verdict v;
  if (const auto* hit = cache_.find(*tok, now)) {
    v.why = token::reason::ok;
    v.claims = *hit;
    r.cached = true;
  } else {
    v = token::verify(*tok, keys_, opts_, now);
    if (v.ok()) cache_.store(*tok, v.claims, now);
  }
  if (!v.ok()) {
    r.outcome = v.text();
    return r;
  }
  r.user = v.claims.sub;
  r.session = v.claims.sid;
  // The tables are read on every request, cached token or not: a ban or a
  // revocation applies as soon as the consumer commits it.
  std::optional<user_row> user;
  std::optional<session_row> session;
  // Refused rather than guessed when the tables cannot be read.
  if (const auto error = read_with_reopen([&] {
        session = db_.session(v.claims.sid);
        user = db_.user(v.claims.sub);
      })) {
    // Why, for the operator (a locked, missing or unmigrated file), at most
    // once a minute; the request's own line says db_unavailable.
    static log::rate_limiter limit;
    limit.write(problem_key("db_unavailable"), log::level::error, "db_unavailable", {{"error", *error}});
    r.status = 503;
    r.outcome = "db_unavailable";
    return r;
  }
  auto d = decide(v, user, session);
  r.status = d.status;
  r.outcome = d.outcome;
  r.role = std::move(d.role);
  return r;
}

}  // namespace clerk_sync::auth
