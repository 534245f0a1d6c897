#include "systemd/signals.hpp"

#include "log/log.hpp"

namespace clerk_sync::systemd {

void hangup_ignored() {
  log::warn("signal_ignored", {{"signal", "SIGHUP"},
                               {"outcome", "nothing is reloaded on SIGHUP: restart the unit to apply changed "
                                           "settings or secrets"}});
}

}  // namespace clerk_sync::systemd
