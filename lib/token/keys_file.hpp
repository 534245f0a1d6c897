#pragma once
// Where the verification keys come from: a PEM file (Clerk's "JWT public
// key"; several blocks for rotation) or a JWKS file, exactly one of the two.
// Shared by clerk-sync-ctl verify-token and clerk-sync-auth. Reads the file
// once; throws key_error naming the path, never the contents.

#include <string>

#include "token/jwt.hpp"

namespace clerk_sync::token {

[[nodiscard]] key_set load_keys(const std::string& jwt_key_file, const std::string& jwks_file);

}  // namespace clerk_sync::token
