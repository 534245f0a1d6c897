// clerk-sync-ctl: the operator's tool. Assembles the subcommands; the work
// itself lives in lib/ops.
#include <signal.h>

#include <cstdio>

#include "commands.hpp"
#include "config/options.hpp"
#include "kafka/client.hpp"

int main(int argc, char** argv) {
  using namespace clerk_sync;
  // A file size limit (`ulimit -f`) is a full disk like any other: a write
  // past it fails with EFBIG and replay, swap-in or a re-drive say so and
  // clean up, where SIGXFSZ's default action killed them without a line.
  ::signal(SIGXFSZ, SIG_IGN);
  return config::run_main("clerk-sync-ctl", [&] {
    CLI::App app{"clerk-sync-ctl: topic, send, replay, compare, dead letters and status for clerk-sync",
                 "clerk-sync-ctl"};
    app.require_subcommand(1);
    // Log flags may follow the subcommand: unmatched options fall through.
    app.fallthrough();
    config::log_options log_opts;
    config::add_log_options(app, log_opts);
    ctl::runner run;
    ctl::add_topic_commands(app, run);
    ctl::add_http_commands(app, run);
    ctl::add_db_commands(app, run);
    ctl::add_token_commands(app, run);
    if (const auto code = config::parse(app, argc, argv)) return *code;
    config::apply(log_opts);
    if (!run) throw config::usage_error("no subcommand given (see --help)");
    try {
      return run();
    } catch (const kafka::fatal_error& e) {
      // The broker refused or is unreachable: one line, non-zero.
      return config::report_exit("clerk-sync-ctl", "failed", e.what(), ctl::exit_failed);
    }
  });
}
