#pragma once
// Watchdog pings for a server whose work runs on one Asio event loop. They
// are sent from that loop, so a loop stuck in one handler stops them and
// systemd restarts the process.

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/use_awaitable.hpp>

#include "systemd/notify.hpp"

namespace clerk_sync::systemd {

// Pings every watchdog_interval() on `timer`'s executor when systemd set a
// watchdog for this process; nothing otherwise. Cancelling `timer` ends the
// pings (stopping: systemd expects none after STOPPING=1).
inline void ping_watchdog_on(boost::asio::steady_timer& timer) {
  const auto interval = watchdog_interval();
  if (!interval) return;
  boost::asio::co_spawn(
      timer.get_executor(),
      [&timer, every = *interval]() -> boost::asio::awaitable<void> {
        for (;;) {
          notify_watchdog();
          timer.expires_after(every);
          co_await timer.async_wait(boost::asio::use_awaitable);
        }
      },
      boost::asio::detached);
}

}  // namespace clerk_sync::systemd
