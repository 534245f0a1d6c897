#pragma once
// `ctl status`: per projection, the offsets stored in the database against
// the topic's high watermarks (the lag), row counts, pending dead letters and
// the time of the last applied batch. lag_of is the pure rule; collect_status
// reads the database and asks Kafka. A partition whose watermarks cannot
// be read is reported as such, the others as usual. Throws
// kafka::fatal_error (the topic's partitions not listed), store::open_error,
// store::db_error.

#include <chrono>
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "kafka/client.hpp"
#include "projection/applier.hpp"

namespace clerk_sync::ops {

// Messages a partition still has to apply: from the stored next offset (or,
// when none is stored, from the low watermark, where a consumer starts) up
// to the high watermark. Never negative.
[[nodiscard]] std::int64_t lag_of(std::optional<std::int64_t> stored, std::int64_t low, std::int64_t high);

// Whether a stored next offset is outside the log [low, high]: where the
// consumer stops with exit 5 rather than resume.
[[nodiscard]] bool outside_log(std::optional<std::int64_t> stored, std::int64_t low, std::int64_t high);

struct partition_lag {
  std::int32_t partition = 0;
  std::optional<std::int64_t> stored;
  // Why the partition's watermarks could not be read (its leader down, an
  // error from it); empty when they were. When set, low, high, lag and the
  // checks below say nothing: this partition is unknown, the others not.
  std::string watermarks_failed;
  std::int64_t low = 0;
  std::int64_t high = 0;
  std::int64_t lag = 0;
  // Offsets between where the projection resumes and the log's end that
  // hold nothing a consumer is given (a transaction's markers, an aborted
  // transaction's records, written by another tool's producer): not in
  // `lag`, which would otherwise stay above 0 until the next event.
  std::int64_t passed_over = 0;
  // The stored offset is outside the log: below its first record (deleted)
  // or past its end (the topic recreated). The consumer stops there with
  // exit 5 and is not restarted; the lag above does not say so.
  bool out_of_range = false;
  // The record before the stored offset is not the one applied last (its
  // svix-id differs from the one stored with the offset): the topic was
  // deleted and recreated, then refilled past the offset. The consumer
  // stops there with exit 5 (topic_recreated). Empty when it matched or
  // could not be read (none stored, trimmed, not within the timeout).
  // Also set when the record stored as checked with the offset (migration
  // 006) is another event now; compared_offset says which record differed.
  std::optional<std::string> recreated_found_svix_id;
  std::string applied_svix_id;
  std::int64_t compared_offset = 0;
  // Why that record could not be compared (read failed or timed out, or no
  // record there); empty when it was, or when there was nothing to compare.
  std::string resume_unchecked;
};

struct projection_report {
  projection::projection_status db;
  std::vector<partition_lag> partitions;
  std::int64_t lag = 0;  // sum over partitions, those with watermarks_failed left out
  // The topics the file stores this projection's offsets for, when it
  // stores none for the asked one: a wrong --topic (the lag of a topic the
  // consumers never read says nothing). Empty when it stores some for the
  // asked topic (a migration's old topic may remain beside it), or none at
  // all (no consumer has committed yet).
  std::vector<std::string> other_topics;
  // Partitions the file stores an offset for that the topic does not have
  // (a file of another cluster's topic of more partitions): not in
  // `partitions`, whose entries are the topic's.
  std::vector<std::int32_t> unknown_partitions;
};

[[nodiscard]] std::vector<projection_report> collect_status(const kafka::client_config& cfg, const std::string& topic,
                                                            const std::string& db_path,
                                                            const std::vector<projection::kind>& projections,
                                                            std::chrono::milliseconds timeout);

}  // namespace clerk_sync::ops
