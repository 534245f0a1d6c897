#include "config/secrets.hpp"

#include <cerrno>
#include <filesystem>
#include <fstream>
#include <system_error>
#include <sstream>

#include "config/options.hpp"
#include "log/log.hpp"

namespace clerk_sync::config {

namespace {

// Clerk's secrets (made by Svix) are 24 random bytes: whsec_ and 32 base64
// characters. One cut short by a character or two is refused by the decoder
// three times in four (its last character spells bits past the key's end);
// the rest decode to a shorter key, which would answer every webhook 401.
// Svix's libraries take a key of any size, and so does this check: a key
// of another size is said, not refused.
constexpr std::size_t clerk_secret_bytes = 24;

std::vector<verify::key> said_if_unusual(std::vector<verify::key> keys) {
  for (std::size_t i = 0; i < keys.size(); ++i)
    if (keys[i].size() != clerk_secret_bytes)
      log::warn("webhook_secret_length",
                {{"secret", static_cast<std::int64_t>(i + 1)},
                 {"bytes", static_cast<std::int64_t>(keys[i].size())},
                 {"reason", "Clerk's secrets are 24 bytes (32 base64 characters after whsec_): one cut short or "
                             "mistyped answers every webhook 401"}});
  return keys;
}

}  // namespace

std::vector<verify::key> load_secrets(const std::optional<std::string>& env_value, const std::string& secret_file) {
  const bool have_env = env_value && !env_value->empty();
  if (have_env && !secret_file.empty())
    throw config::usage_error("set either CLERK_WEBHOOK_SECRET or CLERK_WEBHOOK_SECRET_FILE, not both");
  try {
    if (have_env) return said_if_unusual(verify::parse_secret_list(*env_value));
    if (secret_file.empty())
      throw config::usage_error("no webhook secret: set CLERK_WEBHOOK_SECRET or CLERK_WEBHOOK_SECRET_FILE");
    // The file's name is not repeated: set by mistake to the secret itself
    // (a variable of the name CLERK_WEBHOOK_SECRET's), it would be logged.
    std::error_code ec;
    if (std::filesystem::is_directory(secret_file, ec))
      throw config::usage_error("the webhook secret file (CLERK_WEBHOOK_SECRET_FILE, --secret-file) is a directory");
    std::ifstream in(secret_file);
    if (!in) {
      const auto why = std::generic_category().message(errno);
      if (secret_file.starts_with("whsec_"))
        throw config::usage_error("CLERK_WEBHOOK_SECRET_FILE (--secret-file) holds a secret, not a file name: the "
                                  "secret itself belongs in CLERK_WEBHOOK_SECRET, or in the file it names");
      throw config::usage_error("cannot read the webhook secret file (CLERK_WEBHOOK_SECRET_FILE, --secret-file; its "
                                "name is not shown, in case it is a secret): " + why);
    }
    std::ostringstream text;
    text << in.rdbuf();
    return said_if_unusual(verify::parse_secret_file(text.str()));
  } catch (const verify::secret_error& e) {
    throw config::usage_error(std::string(have_env ? "CLERK_WEBHOOK_SECRET: " : "webhook secret file: ") +
                              e.what());
  }
}

}  // namespace clerk_sync::config
