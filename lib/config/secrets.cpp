#include "config/secrets.hpp"

#include <fstream>
#include <sstream>

#include "config/options.hpp"

namespace clerk_sync::config {

std::vector<verify::key> load_secrets(const std::optional<std::string>& env_value, const std::string& secret_file) {
  const bool have_env = env_value && !env_value->empty();
  if (have_env && !secret_file.empty())
    throw config::usage_error("set either CLERK_WEBHOOK_SECRET or CLERK_WEBHOOK_SECRET_FILE, not both");
  try {
    if (have_env) return verify::parse_secret_list(*env_value);
    if (secret_file.empty())
      throw config::usage_error("no webhook secret: set CLERK_WEBHOOK_SECRET or CLERK_WEBHOOK_SECRET_FILE");
    std::ifstream in(secret_file);
    if (!in) throw config::usage_error("cannot read the webhook secret file " + secret_file);
    std::ostringstream text;
    text << in.rdbuf();
    return verify::parse_secret_file(text.str());
  } catch (const verify::secret_error& e) {
    throw config::usage_error(std::string(have_env ? "CLERK_WEBHOOK_SECRET: " : "webhook secret file: ") +
                              e.what());
  }
}

}  // namespace clerk_sync::config
