#include "ops/status.hpp"

#include <algorithm>
#include <map>

#include "kafka/consumer.hpp"
#include "store/database.hpp"

namespace clerk_sync::ops {

std::int64_t lag_of(std::optional<std::int64_t> stored, std::int64_t low, std::int64_t high) {
  // What is left to read from where the projection resumes: the log's
  // start without a stored offset. An offset outside the log (flagged
  // apart: the consumer stops there) counts from the nearer end.
  const std::int64_t from = stored ? std::max(*stored, low) : low;
  return std::max<std::int64_t>(0, high - from);
}

bool outside_log(std::optional<std::int64_t> stored, std::int64_t low, std::int64_t high) {
  return stored && (*stored < low || *stored > high);
}

std::vector<projection_report> collect_status(const kafka::client_config& cfg, const std::string& topic,
                                              const std::string& db_path,
                                              const std::vector<projection::kind>& projections,
                                              std::chrono::milliseconds timeout) {
  store::database db(db_path, {.read_only = true});
  // The stored offsets before the watermarks: both only grow, so a
  // projection caught up between the two reads cannot look past the log's
  // end (out of range, a false alarm).
  std::vector<std::map<std::int32_t, std::int64_t>> stored_of;
  for (const auto k : projections) stored_of.push_back(projection::stored_offsets(db, k, topic));
  kafka::consumer reader(cfg, "");
  const auto partitions = reader.partitions_of(topic, timeout);
  if (partitions.empty()) throw kafka::fatal_error("topic " + topic + " does not exist or has no partitions");
  std::vector<std::pair<std::int64_t, std::int64_t>> marks;
  for (const auto p : partitions) marks.push_back(reader.watermarks(topic, p, timeout));

  const auto stats = projection::status(db);
  std::vector<projection_report> out;
  for (std::size_t j = 0; j < projections.size(); ++j) {
    const auto k = projections[j];
    projection_report r;
    r.db.projection = k;
    for (const auto& s : stats)
      if (s.projection == k) r.db = s;
    const auto& stored = stored_of[j];
    for (std::size_t i = 0; i < partitions.size(); ++i) {
      partition_lag pl;
      pl.partition = partitions[i];
      if (const auto it = stored.find(pl.partition); it != stored.end()) pl.stored = it->second;
      pl.low = marks[i].first;
      pl.high = marks[i].second;
      pl.lag = lag_of(pl.stored, pl.low, pl.high);
      pl.out_of_range = outside_log(pl.stored, pl.low, pl.high);
      r.lag += pl.lag;
      r.partitions.push_back(pl);
    }
    out.push_back(std::move(r));
  }
  return out;
}

}  // namespace clerk_sync::ops
