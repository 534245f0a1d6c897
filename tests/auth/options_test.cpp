#include "auth/options.hpp"

#include <doctest/doctest.h>

#include <filesystem>

using namespace clerk_sync;

namespace {

// validate() with the unit's --db and CLERK_SYNC_DB set to `env_db`.
void validate_db(const std::string& db, const char* env_db) {
  auth::auth_options o;
  o.db = db;
  auth::validate(o, env_db);
}

}  // namespace

TEST_CASE("auth: --db must name CLERK_SYNC_DB's file, the whole path compared, not only its name") {
  // systemd/clerk-sync-auth.service's --db: the consumers' state directory
  // bound into the unit.
  const std::string unit_db = "/run/clerk-sync-auth/db/clerk-sync.db";
  const std::initializer_list<const char*> same_file = {
      "/var/lib/clerk-sync/clerk-sync.db", "/var/lib/private/clerk-sync/clerk-sync.db",
      "/var/lib/clerk-sync/./clerk-sync.db", "/run/clerk-sync-auth/db/clerk-sync.db", "", nullptr};
  for (const char* same : same_file) {
    INFO(std::string(same ? same : "(unset)"));
    CHECK_NOTHROW(validate_db(unit_db, same));
  }
  CHECK_NOTHROW(validate_db("/run/clerk-sync-auth/db/v2/clerk-sync.db", "/var/lib/clerk-sync/v2/clerk-sync.db"));
  // The same file name in another folder is another file: the service would
  // answer from a stale one.
  for (const char* other : {"/var/lib/clerk-sync/v2/clerk-sync.db", "/var/lib/clerk-sync/prod.db",
                            "/srv/clerk-sync/clerk-sync.db", "/var/lib/clerk-sync-old/clerk-sync.db"}) {
    INFO(std::string(other));
    CHECK_THROWS_WITH_AS(validate_db(unit_db, other), doctest::Contains("name different files"),
                         config::usage_error);
  }
  CHECK_THROWS_AS(validate_db("/run/clerk-sync-auth/db/v2/clerk-sync.db", "/var/lib/clerk-sync/clerk-sync.db"),
                  config::usage_error);
  // Run by hand, both paths seen alike: the same file however spelled.
  const auto here = (std::filesystem::current_path() / "clerk-sync.db").string();
  CHECK_NOTHROW(validate_db("clerk-sync.db", here.c_str()));
  CHECK_NOTHROW(validate_db("/srv/a/../b/clerk-sync.db", "/srv/b/clerk-sync.db"));
  CHECK_THROWS_AS(validate_db("/srv/a/clerk-sync.db", "/srv/b/clerk-sync.db"), config::usage_error);
}

TEST_CASE("auth: --path is a path alone - with a query, a fragment or a space every check would be 404") {
  auth::auth_options o;
  o.db = "clerk-sync.db";
  CHECK_NOTHROW(auth::validate(o, nullptr));
  for (const std::string bad : {"/auth?x", "/auth#y", "/au th"}) {
    CAPTURE(bad);
    o.path = bad;
    CHECK_THROWS_WITH_AS(auth::validate(o, nullptr), doctest::Contains("--path must be a path alone"),
                         config::usage_error);
  }
}
