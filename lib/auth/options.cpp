#include "auth/options.hpp"

#include <algorithm>
#include <filesystem>

namespace clerk_sync::auth {
namespace {

// Where a path lies for the comparison of --db with CLERK_SYNC_DB: the path
// inside the consumers' state directory when it is in it, whichever of its
// names it is seen by (systemd/clerk-sync-consumer@.service's
// StateDirectory=, and systemd/clerk-sync-auth.service's BindReadOnlyPaths=),
// else the path itself.
std::filesystem::path file_key(const std::string& path) {
  namespace fs = std::filesystem;
  static const fs::path state_dir_names[] = {"/var/lib/clerk-sync", "/var/lib/private/clerk-sync",
                                             "/run/clerk-sync-auth/db"};
  const auto p = fs::absolute(fs::path(path)).lexically_normal();
  for (const auto& dir : state_dir_names) {
    const auto inside = p.lexically_relative(dir);
    if (!inside.empty() && *inside.begin() != ".." && inside != ".") return "state-directory" / inside;
  }
  return p;
}

}  // namespace

// For --issuer: Clerk's iss is its Frontend API URL, an origin
// (https://clerk.example.com, https://name.clerk.accounts.dev), or the URL
// of a proxy of it, which may add a path (https://app.example/__clerk). It
// must equal the token's iss exactly: a trailing '/', a query or an origin
// spelled otherwise (checked as an authorized party's is) would refuse
// every token, each with a good signature, so it stops start-up instead.
CLI::Validator issuer_url() {
  return CLI::Validator(
      [origin = config::origin()](std::string& value) -> std::string {
        const auto b = value.find_first_not_of(" \t\r");
        value = b == std::string::npos ? std::string() : value.substr(b, value.find_last_not_of(" \t\r") - b + 1);
        const auto sep = value.find("://");
        const auto slash = sep == std::string::npos ? std::string::npos : value.find('/', sep + 3);
        auto head = value.substr(0, slash);
        const auto path = slash == std::string::npos ? std::string() : value.substr(slash);
        const bool ok = origin(head).empty() &&
                        (path.empty() || (path.back() != '/' && std::all_of(path.begin(), path.end(), [](char ch) {
                                            return ch > ' ' && ch < '\x7f' && ch != '?' && ch != '#';
                                          })));
        return ok ? std::string()
                  : "\"" + value + "\" is not an issuer as Clerk writes iss, which must equal it exactly: its Frontend "
                    "API URL, scheme://host[:port] in lower case and without a default port (e.g. "
                    "https://clerk.example.com or https://name.clerk.accounts.dev; a proxy's URL may add a path), "
                    "with no trailing '/', query or fragment";
      },
      "URL");
}

void add_auth_options(CLI::App& app, auth_options& o) {
  app.add_option("--listen", o.listen, "address:port to listen on")
      ->envname("CLERK_SYNC_AUTH_LISTEN")
      ->capture_default_str();
  app.add_option("--path", o.path, "the forward-auth path")->envname("CLERK_SYNC_AUTH_PATH")->capture_default_str();
  app.add_option("--jwt-key-file", o.jwt_key_file, "PEM file of the instance's JWT public key(s)")
      ->envname("CLERK_JWT_KEY_FILE");
  app.add_option("--jwks-file", o.jwks_file, "JWKS document of the instance (kid picks the key)")
      ->envname("CLERK_JWKS_FILE");
  app.add_option("--authorized-party", o.authorized_parties, "an accepted azp origin (repeatable; env: commas)")
      ->envname("CLERK_AUTHORIZED_PARTIES")
      ->delimiter(',')
      ->transform(config::origin(/*app_schemes=*/true));
  app.add_option("--issuer", o.issuer, "required iss, when given (the Frontend API URL)")
      ->envname("CLERK_ISSUER")
      ->transform(issuer_url());
  app.add_option("--clock-skew-s", o.clock_skew_s, "tolerance for exp, nbf and iat, in seconds")
      ->envname("CLERK_CLOCK_SKEW_S")
      ->check(config::seconds_between(0.0, 3600.0))
      ->capture_default_str();
  app.add_flag("--allow-pending", o.allow_pending, "accept pending sessions (sts=pending)")
      ->envname("CLERK_ALLOW_PENDING");
  app.add_option("--db", o.db, "the consumers' SQLite file, opened read-only")
      ->envname("CLERK_SYNC_DB")
      ->capture_default_str();
  app.add_option("--cache-size", o.cache_size, "verified tokens kept until they expire (0: no cache)")
      ->envname("CLERK_SYNC_AUTH_CACHE_SIZE")
      ->capture_default_str();
  app.add_option("--read-timeout-ms", o.read_timeout_ms, "time to read a request; also the idle keep-alive limit")
      ->envname("CLERK_SYNC_AUTH_READ_TIMEOUT_MS")
      ->capture_default_str();
  app.add_option("--max-connections", o.max_connections, "open connections at most")
      ->envname("CLERK_SYNC_AUTH_MAX_CONNECTIONS")
      ->capture_default_str();
  app.add_option("--projections-check-s", o.projections_check_s,
                 "seconds between checks that the users and sessions projections both keep the database up to date")
      ->envname("CLERK_SYNC_AUTH_PROJECTIONS_CHECK_S")
      ->check(config::seconds_between(0.1, 3600.0))
      ->capture_default_str();
  config::add_log_options(app, o.log);
}


void validate(const auth_options& o, const char* env_db) {
  config::check_route_path(o.path, {"/healthz"});
  if (o.read_timeout_ms <= 0) throw config::usage_error("--read-timeout-ms must be positive");
  if (o.max_connections == 0) throw config::usage_error("--max-connections must be positive");
  if (o.db.empty()) throw config::usage_error("--db (CLERK_SYNC_DB) must name the consumers' database");
  // The whole path, not only the file name: CLERK_SYNC_DB moved to another
  // folder of the state directory (or out of it) with the unit's --db left
  // as it was would read an old file of the same name.
  if (env_db != nullptr && *env_db != '\0' && file_key(o.db) != file_key(env_db))
    throw config::usage_error("--db " + o.db + " and CLERK_SYNC_DB " + env_db +
                              " name different files: the consumers write CLERK_SYNC_DB; give --db the same file, "
                              "at the same path under /run/clerk-sync-auth/db as under /var/lib/clerk-sync "
                              "(systemctl edit clerk-sync-auth)");
  (void)parse_listen(o.listen);
}

}  // namespace clerk_sync::auth
