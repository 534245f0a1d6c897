#pragma once
// Helpers of the consumer's integration tests: produce records shaped as the
// receiver publishes them, start clerk-sync-consumer, wait until a database
// has caught up with a topic, and dump projection tables for comparison.

#include <chrono>
#include <map>
#include <string>
#include <vector>

#include "consumer/generator.hpp"
#include "kafka/client.hpp"
#include "kafka/producer.hpp"
#include "projection/mapping.hpp"
#include "support/process.hpp"

namespace clerk_sync::test {

// Produces every event to `topic` (key, value = body, headers svix-id,
// svix-timestamp, clerk-event-type, received-at) with the async producer and
// waits for all delivery reports; fails the test if any is not acknowledged.
// Returns where each event landed, in the events' order.
std::vector<kafka::delivery_report> produce_events(const kafka::client_config& cfg, const std::string& topic,
                                                   const std::vector<generated_event>& events);

// Starts clerk-sync-consumer on the test broker with these arguments.
[[nodiscard]] std::unique_ptr<process> start_consumer(const std::vector<std::string>& args);

// The same on another cluster (a kafka::mock_cluster's bootstrap_servers()).
[[nodiscard]] std::unique_ptr<process> start_consumer_on(const std::string& brokers,
                                                         const std::vector<std::string>& args);

// Sum over partitions of the stored next offsets, per projection name.
[[nodiscard]] std::map<std::string, std::int64_t> stored_totals(const std::string& db_path, const std::string& topic);

// Waits until each projection's stored offsets sum to `total`; false on timeout.
bool wait_caught_up(const std::string& db_path, const std::string& topic, const std::vector<std::string>& projections,
                    std::int64_t total, std::chrono::milliseconds timeout);

// The projection tables (users, referrals, balances, sessions) as text, ordered by key.
[[nodiscard]] std::string dump_tables(const std::string& db_path);

// The oracle: the tables `events` produce when applied in-process, in this
// order, by `kinds` (every projection by default) into a fresh database at
// `db_path` (no HTTP, no Kafka, no second process); dump_tables() of it.
[[nodiscard]] std::string reference_tables(
    const std::vector<generated_event>& events, const std::string& db_path,
    const std::vector<projection::kind>& kinds = {std::begin(projection::all_kinds), std::end(projection::all_kinds)});

}  // namespace clerk_sync::test
