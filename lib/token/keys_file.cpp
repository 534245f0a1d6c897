#include "token/keys_file.hpp"

#include <fstream>
#include <sstream>

namespace clerk_sync::token {

key_set load_keys(const std::string& jwt_key_file, const std::string& jwks_file) {
  if (jwt_key_file.empty() == jwks_file.empty())
    throw key_error("give exactly one of --jwt-key-file (CLERK_JWT_KEY_FILE) and --jwks-file (CLERK_JWKS_FILE)");
  const std::string& path = jwt_key_file.empty() ? jwks_file : jwt_key_file;
  std::ifstream in(path, std::ios::binary);
  if (!in) throw key_error("cannot read " + path);
  std::ostringstream text;
  text << in.rdbuf();
  try {
    return jwt_key_file.empty() ? key_set::from_jwks(text.str()) : key_set::from_pem(text.str());
  } catch (const key_error& e) {
    throw key_error(path + ": " + e.what());
  }
}

}  // namespace clerk_sync::token
