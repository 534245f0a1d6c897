#pragma once
// clerk-sync-ctl's subcommands. Each add_* registers its CLI11 subcommands
// (each with its own --help and options) on `app`; when one is chosen, its
// parse callback sets `run` to the work to do. Exit codes: 0 done, 1 a check
// failed or the work did not finish (details on stderr), 2 bad usage.
#include <CLI/CLI.hpp>

#include <cstddef>
#include <functional>
#include <string>

#include "http/options.hpp"
#include "ops/topic.hpp"

namespace clerk_sync::ctl {

using runner = std::function<int()>;

inline constexpr int exit_ok = 0;
inline constexpr int exit_failed = 1;

// One warning line per thing that keeps the topic from being replayed in
// full, from keeping an acknowledged event through a broker loss, or from
// holding the receiver's largest record; true when there is none.
bool log_topic_warnings(const std::string& topic, const ops::topic_report& report);

// The receiver's --body-limit and --header-limit, read from the receiver's
// own environment variables (CLERK_SYNC_BODY_LIMIT, CLERK_SYNC_HEADER_LIMIT)
// when the environment file is sourced: the largest record the events topic
// must hold, which `topic ensure` creates it for and it and `status` judge
// it by.
struct receiver_limits {
  std::size_t body_limit = http::receiver_options{}.body_limit;
  std::size_t header_limit = http::receiver_options{}.header_limit;
  [[nodiscard]] std::size_t largest_record() const;
};
void add_receiver_limits(CLI::App& cmd, receiver_limits& limits);

void add_topic_commands(CLI::App& app, runner& run);
void add_http_commands(CLI::App& app, runner& run);
void add_db_commands(CLI::App& app, runner& run);
void add_token_commands(CLI::App& app, runner& run);

}  // namespace clerk_sync::ctl
