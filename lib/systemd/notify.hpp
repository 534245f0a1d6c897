#pragma once
// systemd's notify protocol through libsystemd's sd_notify: readiness,
// stopping, status and watchdog pings. Every call is a no-op when the
// process was not started by systemd (NOTIFY_SOCKET unset). Thread-safe.

#include <chrono>
#include <optional>
#include <string_view>

namespace clerk_sync::systemd {

void notify_ready();
void notify_stopping();
void notify_status(std::string_view text);
void notify_watchdog();
// Asks systemd for `more` time before the current start (or stop) times out:
// for a step before READY=1 that may outlast TimeoutStartSec (the watchdog is
// not armed before READY=1). Sent again before it runs out, or the timeout
// takes over.
void notify_extend_timeout(std::chrono::microseconds more);

// How often to ping: half of WATCHDOG_USEC when systemd set a watchdog for
// this process, nullopt otherwise.
[[nodiscard]] std::optional<std::chrono::microseconds> watchdog_interval();

}  // namespace clerk_sync::systemd
