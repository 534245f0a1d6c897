// clerk-sync-auth: answers a reverse proxy's forward-auth subrequest from a
// Clerk session token, verified without the network, and the synced users
// and sessions tables (read-only). This file only assembles lib/auth,
// lib/token and lib/systemd. Exit status: 0 after SIGTERM/SIGINT, 2 for a
// bad setting (flags, keys, database), 1 when the database cannot be opened
// for another reason (db_open_failed: a lock, an I/O error; restarted).

#include <cstdlib>
#include <boost/asio/io_context.hpp>
#include <boost/asio/signal_set.hpp>
#include <boost/asio/steady_timer.hpp>

#include <algorithm>
#include <csignal>
#include <functional>
#include <optional>
#include <string>
#include <vector>

#include "auth/lookup.hpp"
#include "auth/options.hpp"
#include "auth/projection_watch.hpp"
#include "auth/server.hpp"
#include "auth/service.hpp"
#include "config/options.hpp"
#include "log/log.hpp"
#include "store/database.hpp"
#include "systemd/notify.hpp"
#include "systemd/signals.hpp"
#include "systemd/watchdog.hpp"
#include "token/keys_file.hpp"

namespace {

namespace net = boost::asio;
namespace auth = clerk_sync::auth;
namespace log = clerk_sync::log;
namespace systemd = clerk_sync::systemd;
namespace token = clerk_sync::token;
using clerk_sync::config::usage_error;

int run(const auth::auth_options& o) {
  token::key_set keys;
  try {
    keys = token::load_keys(o.jwt_key_file, o.jwks_file);
  } catch (const token::key_error& e) {
    throw usage_error(e.what());
  }
  std::unique_ptr<auth::lookup> db;
  try {
    db = std::make_unique<auth::lookup>(o.db);
  } catch (const clerk_sync::store::open_error& e) {
    throw usage_error(e.what());
  } catch (const clerk_sync::store::db_error& e) {
    // A lock, a full disk or an I/O error: not a setting, so not exit 2,
    // which the unit would never restart.
    return clerk_sync::config::report_exit("clerk-sync-auth", "db_open_failed", e.what(), 1);
  }
  token::options topts;
  topts.authorized_parties = o.authorized_parties;
  if (!o.issuer.empty()) topts.issuer = o.issuer;
  topts.clock_skew = std::chrono::milliseconds(static_cast<std::int64_t>(o.clock_skew_s * 1000.0));
  topts.allow_pending = o.allow_pending;
  if (topts.authorized_parties.empty())
    log::warn("no_authorized_parties", {{"outcome", "any azp is accepted: set CLERK_AUTHORIZED_PARTIES"}});

  const std::size_t key_count = keys.size();
  auth::service svc(std::move(keys), topts, o.cache_size, *db);
  net::io_context ioc(1);
  const auto where = auth::parse_listen(o.listen);
  auth::server srv(ioc, where, o.path, svc,
                   {std::chrono::milliseconds(o.read_timeout_ms), o.max_connections, 16 * 1024});

  net::signal_set signals(ioc, SIGTERM, SIGINT, SIGHUP);
  net::steady_timer watchdog(ioc);
  net::steady_timer projections(ioc);  // below
  net::steady_timer draining(ioc);
  // A check on its way when the signal comes is answered (the proxy would
  // turn a closed connection into a 500 for that user): the loop ends once
  // the connections in a request are, within the read timeout and well
  // inside the unit's TimeoutStopSec.
  const auto drain_for = std::min<std::chrono::steady_clock::duration>(
      std::chrono::milliseconds(o.read_timeout_ms), std::chrono::seconds(5));
  std::function<void(std::chrono::steady_clock::time_point)> drain = [&](auto until) {
    if (srv.connections() == 0) return ioc.stop();
    if (std::chrono::steady_clock::now() >= until) {
      log::warn("grace_expired", {{"connections", srv.connections()}});
      return ioc.stop();
    }
    draining.expires_after(std::chrono::milliseconds(10));
    draining.async_wait([&, until](const boost::system::error_code& ec) {
      if (!ec) drain(until);
    });
  };
  systemd::on_stop_signal(signals, [&](int sig) {
    log::info("signal", {{"signal", sig}});
    systemd::notify_stopping();
    srv.stop();
    watchdog.cancel();
    projections.cancel();
    drain(std::chrono::steady_clock::now() + drain_for);
  });
  systemd::ping_watchdog_on(watchdog);
  // The two projections a check reads, watched from their stored positions
  // (lib/auth/projection_watch.hpp): one never written, or stalled while the
  // other goes on, is said at warn, since its refusals never come. A stall
  // needs two checks and 30 s without a move, past a consumer's batch
  // latency and a lock wait even with checks seconds apart.
  const auto every = std::chrono::milliseconds(static_cast<std::int64_t>(o.projections_check_s * 1000.0));
  auth::projection_watch watch(std::max<std::chrono::steady_clock::duration>(2 * every, std::chrono::seconds(30)));
  std::function<void()> check_projections = [&] {
    projections.expires_after(every);
    projections.async_wait([&](const boost::system::error_code& ec) {
      if (ec) return;
      // An unreadable file says nothing either way (/healthz and the checks say why).
      if (const auto positions = svc.projection_positions()) {
        for (const auto& l : watch.observe(*positions, std::chrono::steady_clock::now())) {
          std::vector<log::field> f{{"projection", l.projection}};
          if (l.level == log::level::warn) f.emplace_back("db", o.db);
          if (l.behind != 0) f.emplace_back("behind", l.behind);
          if (!l.reason.empty()) f.emplace_back("reason", l.reason);
          if (!l.outcome.empty()) f.emplace_back("outcome", l.outcome);
          log::write(l.level, l.msg, f);
        }
      }
      check_projections();
    });
  };
  check_projections();
  srv.start();
  log::info("listening", {{"address", where.host}, {"port", srv.port()}, {"path", o.path}, {"keys", key_count},
                          {"authorized_parties", topts.authorized_parties.size()}, {"db", o.db},
                          {"cache_size", o.cache_size}});
  systemd::notify_ready();
  ioc.run();
  // What the rate limiters hold back goes out before the last line.
  log::rate_limiter::drain_all();
  log::info("stopped", {{"exit_code", 0}});
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  return clerk_sync::config::run_main("clerk-sync-auth", [&]() -> int {
    CLI::App app{"Forward authentication from Clerk session tokens and the synced users and sessions tables",
                 "clerk-sync-auth"};
    auth::auth_options opts;
    auth::add_auth_options(app, opts);
    if (const auto rc = clerk_sync::config::parse(app, argc, argv)) return *rc;
    clerk_sync::config::apply(opts.log);
    auth::validate(opts, std::getenv("CLERK_SYNC_DB"));
    return run(opts);
  });
}
