#pragma once
// clerk-sync-auth's configuration: flags, each with an environment variable
// behind it, parsed once into a plain struct. Errors are
// config::usage_error (one line, exit 2).

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "config/options.hpp"

namespace clerk_sync::auth {

struct auth_options {
  std::string listen = "127.0.0.1:8081";  // --listen, CLERK_SYNC_AUTH_LISTEN
  std::string path = "/auth";             // --path, CLERK_SYNC_AUTH_PATH
  std::string jwt_key_file;               // --jwt-key-file, CLERK_JWT_KEY_FILE
  std::string jwks_file;                  // --jwks-file, CLERK_JWKS_FILE
  std::vector<std::string> authorized_parties;  // --authorized-party, CLERK_AUTHORIZED_PARTIES (commas)
  std::string issuer;                     // --issuer, CLERK_ISSUER
  double clock_skew_s = 5;                // --clock-skew-s, CLERK_CLOCK_SKEW_S
  bool allow_pending = false;             // --allow-pending, CLERK_ALLOW_PENDING
  std::string db = "clerk-sync.db";       // --db, CLERK_SYNC_DB (opened read-only)
  std::size_t cache_size = 100'000;       // --cache-size, CLERK_SYNC_AUTH_CACHE_SIZE (0: off)
  std::int64_t read_timeout_ms = 10'000;  // --read-timeout-ms, CLERK_SYNC_AUTH_READ_TIMEOUT_MS
  std::size_t max_connections = 4096;     // --max-connections, CLERK_SYNC_AUTH_MAX_CONNECTIONS
  double projections_check_s = 60;        // --projections-check-s, CLERK_SYNC_AUTH_PROJECTIONS_CHECK_S
  config::log_options log;
};

void add_auth_options(CLI::App& app, auth_options& opts);

// --issuer's check and trim (also clerk-sync-ctl verify-token's, so that
// it explains the verdicts this service gives).
[[nodiscard]] CLI::Validator issuer_url();

using config::listen_address;
using config::parse_listen;

// Range checks; throws usage_error. `env_db` is $CLERK_SYNC_DB (null when
// unset): the unit gives --db as the consumers' file seen through a bind
// mount of their state directory, while the environment file may name the
// file the consumers write; a --db naming another file than theirs would
// have this service read it (a stale one, if an old file is still there),
// so that is refused. The two name the same file when their paths are
// equal, or when both lie in the state directory (/var/lib/clerk-sync, or
// /var/lib/private/clerk-sync where systemd keeps it, or its bind mount
// /run/clerk-sync-auth/db) at the same path inside it.
void validate(const auth_options& opts, const char* env_db);

}  // namespace clerk_sync::auth
