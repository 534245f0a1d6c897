#pragma once
// Where the webhook secrets come from: CLERK_WEBHOOK_SECRET's value (one or
// more whsec_..., spaces or commas) or a file of one per line
// (CLERK_WEBHOOK_SECRET_FILE, LoadCredential= under systemd); exactly one of
// the two. Shared by the receiver (verifies with all) and clerk-sync-ctl
// (signs with the last, the new one in a rotation). Errors are usage_error and never echo a secret.

#include <optional>
#include <string>
#include <vector>

#include "verify/svix.hpp"

namespace clerk_sync::config {

// `env_value` is the variable's value as main() read it (nullopt or empty:
// unset). Throws usage_error.
[[nodiscard]] std::vector<verify::key> load_secrets(const std::optional<std::string>& env_value,
                                                    const std::string& secret_file);

}  // namespace clerk_sync::config
