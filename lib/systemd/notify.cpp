#include "systemd/notify.hpp"

#include <systemd/sd-daemon.h>

#include <string>

namespace clerk_sync::systemd {

void notify_ready() { (void)sd_notify(0, "READY=1"); }

void notify_stopping() { (void)sd_notify(0, "STOPPING=1"); }

void notify_status(std::string_view text) { (void)sd_notify(0, ("STATUS=" + std::string(text)).c_str()); }

void notify_watchdog() { (void)sd_notify(0, "WATCHDOG=1"); }

void notify_extend_timeout(std::chrono::microseconds more) {
  (void)sd_notify(0, ("EXTEND_TIMEOUT_USEC=" + std::to_string(more.count())).c_str());
}

std::optional<std::chrono::microseconds> watchdog_interval() {
  uint64_t usec = 0;
  if (sd_watchdog_enabled(0, &usec) <= 0 || usec == 0) return std::nullopt;
  return std::chrono::microseconds(usec / 2);
}

}  // namespace clerk_sync::systemd
