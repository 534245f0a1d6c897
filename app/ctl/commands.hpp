#pragma once
// clerk-sync-ctl's subcommands. Each add_* registers its CLI11 subcommands
// (each with its own --help and options) on `app`; when one is chosen, its
// parse callback sets `run` to the work to do. Exit codes: 0 done, 1 a check
// failed or the work did not finish (details on stderr), 2 bad usage.
#include <CLI/CLI.hpp>

#include <functional>
#include <string>

#include "ops/topic.hpp"

namespace clerk_sync::ctl {

using runner = std::function<int()>;

inline constexpr int exit_ok = 0;
inline constexpr int exit_failed = 1;

// One warning line per thing that keeps the topic from being replayed in
// full, from keeping an acknowledged event through a broker loss, or from
// holding the receiver's largest record; true when there is none.
bool log_topic_warnings(const std::string& topic, const ops::topic_report& report);

void add_topic_commands(CLI::App& app, runner& run);
void add_http_commands(CLI::App& app, runner& run);
void add_db_commands(CLI::App& app, runner& run);
void add_token_commands(CLI::App& app, runner& run);

}  // namespace clerk_sync::ctl
