#pragma once
// The signals a daemon of clerk-sync stops on, and the one it does not.
// SIGTERM and SIGINT stop it. SIGHUP, which many daemons take as "reload",
// would by default end the process without a line, and systemd counts an
// end by SIGHUP as clean: Restart=on-failure would leave the unit stopped.
// clerk-sync reloads nothing, so SIGHUP is a warning (hangup_ignored) and
// the process goes on.

#include <boost/asio/signal_set.hpp>

#include <csignal>
#include <utility>

namespace clerk_sync::systemd {

// The warning for a SIGHUP: nothing reloaded, restart the unit to apply a
// change.
void hangup_ignored();

// Waits on `signals` (which should hold SIGHUP beside the stopping signals)
// for one that stops the process, and calls `stop(sig)` with it; each
// SIGHUP meanwhile is a hangup_ignored() line. Cancelling `signals` ends the
// wait without a call.
template <class F>
void on_stop_signal(boost::asio::signal_set& signals, F stop) {
  signals.async_wait([&signals, stop = std::move(stop)](const boost::system::error_code& ec, int sig) mutable {
    if (ec) return;
    if (sig != SIGHUP) return stop(sig);
    hangup_ignored();
    on_stop_signal(signals, std::move(stop));
  });
}

}  // namespace clerk_sync::systemd
