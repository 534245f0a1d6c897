#pragma once
// `ctl swap-in`: projections rebuilt by `replay` put into the live database
// in place of its own, each with what makes it resumable: its table, its
// ledger rows, its stored offsets and its dead letters, in one transaction.
// A consumer of a projection must not run meanwhile: it would go on from
// the offsets it had read and write over the new ones.

#include <chrono>
#include <cstdint>
#include <functional>
#include <stdexcept>
#include <string>
#include <vector>

#include "kafka/client.hpp"
#include "projection/mapping.hpp"

namespace clerk_sync::ops {

struct swap_error : std::runtime_error {
  using std::runtime_error::runtime_error;
};

struct swapped {
  projection::kind projection = projection::kind::users;
  std::int64_t rows = 0;
  std::int64_t ledger_rows = 0;
  std::int64_t offsets = 0;
  std::int64_t dead_letters = 0;
};

// Replaces, in one transaction of the file at `live`, each projection's
// rows, ledger rows, stored offsets and dead letters with those of `from`.
// `while_locked` runs once the transaction holds the write lock, before
// anything is copied, and may throw to leave everything as it was (the
// consumers' check again: one started since the first would otherwise read
// the old offsets). Throws swap_error when `from` is not a rebuild of them
// for this file (no stored offsets for a projection, another topic, another
// schema version), store::db_error or store::open_error when a file cannot
// be read or written.
[[nodiscard]] std::vector<swapped> swap_in(const std::string& from, const std::string& live,
                                           const std::vector<projection::kind>& projections,
                                           const std::function<void()>& while_locked);

// The projections' consumer groups (<prefix>.<projection>), described in
// one request by their coordinators.
struct consumer_groups {
  std::vector<std::string> running;  // "group: client.id@host", one per member
  std::vector<std::string> unknown;  // groups Kafka does not know (Dead)
};
// Throws kafka::fatal_error when a group cannot be described (never read as
// "no member").
[[nodiscard]] consumer_groups describe_consumers(const kafka::client_config& cfg, const std::string& prefix,
                                                 const std::vector<projection::kind>& projections,
                                                 std::chrono::milliseconds timeout);

}  // namespace clerk_sync::ops
