#include "ops/status.hpp"

#include <algorithm>
#include <map>
#include <set>
#include <utility>

#include "kafka/consumer.hpp"
#include "store/database.hpp"

namespace clerk_sync::ops {

namespace {

// Where the projection resumes reading: the log's start without a stored
// offset, or when the stored one is below it.
std::int64_t resumes_at(std::optional<std::int64_t> stored, std::int64_t low) {
  return stored ? std::max(*stored, low) : low;
}

}  // namespace

std::int64_t lag_of(std::optional<std::int64_t> stored, std::int64_t low, std::int64_t high) {
  // What is left to read from where the projection resumes. An offset
  // outside the log (flagged apart: the consumer stops there) counts from
  // the nearer end.
  return std::max<std::int64_t>(0, high - resumes_at(stored, low));
}

bool outside_log(std::optional<std::int64_t> stored, std::int64_t low, std::int64_t high) {
  return stored && (*stored < low || *stored > high);
}

namespace {

// The offset of the record a stored offset's svix-id is compared with, as
// the consumer does on resuming: the one before it, when it is in the log
// and an id was stored with it ("" for a record that had none).
std::optional<std::int64_t> record_to_check(const std::map<std::int32_t, projection::stored_position>& stored,
                                            std::int32_t partition, const kafka::watermark_reading& marks) {
  const auto s = stored.find(partition);
  if (s == stored.end() || !s->second.last_svix_id || s->second.next_offset <= marks.low ||
      s->second.next_offset > marks.high)
    return std::nullopt;
  return s->second.next_offset - 1;
}

// The stored next offset of a partition, if any.
std::optional<std::int64_t> offset_of(const std::map<std::int32_t, projection::stored_position>& stored,
                                      std::int32_t partition) {
  const auto it = stored.find(partition);
  return it == stored.end() ? std::nullopt : std::optional(it->second.next_offset);
}

}  // namespace

std::vector<projection_report> collect_status(const kafka::client_config& cfg, const std::string& topic,
                                              const std::string& db_path,
                                              const std::vector<projection::kind>& projections,
                                              std::chrono::milliseconds timeout) {
  store::database db(db_path, {.read_only = true});
  // The stored offsets before the watermarks: both only grow, so a
  // projection caught up between the two reads cannot look past the log's
  // end (out of range, a false alarm). A file from before migration 003 (a
  // backup, a consumer stopped since an upgrade) stores no svix-id with its
  // offsets: nothing to compare; before 006, no checked record.
  std::vector<std::map<std::int32_t, projection::stored_position>> stored_of;
  std::vector<std::vector<std::string>> other_topics_of;
  for (const auto k : projections) {
    stored_of.push_back(projection::stored_positions(db, k, topic));
    other_topics_of.push_back(stored_of.back().empty() ? projection::offset_topics(db, k)
                                                       : std::vector<std::string>{});
  }
  kafka::consumer reader(kafka::single_record_reader(cfg), "");
  const auto partitions = reader.partitions_of(topic, timeout);
  if (partitions.empty()) throw kafka::fatal_error("topic " + topic + " does not exist or has no partitions");
  const auto marks = reader.watermarks(topic, partitions, timeout);

  // The consumer's resume check, done here too: the record before each
  // stored offset inside the log must be the one applied last, and a
  // record stored as checked (a consumer killed between two position
  // checks) must still be there as the same event.
  std::map<std::int32_t, std::set<std::int64_t>> wanted;
  for (std::size_t j = 0; j < projections.size(); ++j)
    for (const auto& [p, m] : marks) {
      if (!m.failed.empty()) continue;  // unknown, and reported so
      if (const auto at = record_to_check(stored_of[j], p, m)) wanted[p].insert(*at);
      if (const auto s = stored_of[j].find(p); s != stored_of[j].end() && s->second.checked &&
                                               s->second.checked->offset >= m.low && s->second.checked->offset < m.high)
        wanted[p].insert(s->second.checked->offset);
    }
  // One timeout for both reads below.
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  const auto read = kafka::header_at(reader, topic, wanted, "svix-id", timeout);
  const auto& found_ids = read.found;

  // Lag that is only what a consumer is never given (a log that ends with
  // transaction markers): read from where each lagging projection resumes.
  std::map<std::int32_t, std::set<std::int64_t>> lagging;
  std::map<std::int32_t, std::int64_t> ends;
  for (const auto& [p, m] : marks) {
    if (!m.failed.empty()) continue;
    ends[p] = m.high;
    for (const auto& stored : stored_of) {
      const auto at = offset_of(stored, p);
      if (lag_of(at, m.low, m.high) > 0 && !outside_log(at, m.low, m.high)) lagging[p].insert(resumes_at(at, m.low));
    }
  }
  const auto passed_over = kafka::nothing_before_end(
      reader, topic, lagging, ends,
      std::chrono::duration_cast<std::chrono::milliseconds>(deadline - std::chrono::steady_clock::now()));

  const auto stats = projection::status(db);
  std::vector<projection_report> out;
  for (std::size_t j = 0; j < projections.size(); ++j) {
    const auto k = projections[j];
    projection_report r;
    r.db.projection = k;
    r.other_topics = other_topics_of[j];
    for (const auto& s : stats)
      if (s.projection == k) r.db = s;
    const auto& stored = stored_of[j];
    for (const auto& [p, position] : stored)
      if (!marks.contains(p)) r.unknown_partitions.push_back(p);
    for (const auto& [p, m] : marks) {
      partition_lag pl;
      pl.partition = p;
      pl.stored = offset_of(stored, pl.partition);
      if (!m.failed.empty()) {
        pl.watermarks_failed = m.failed;
        r.partitions.push_back(pl);
        continue;
      }
      pl.low = m.low;
      pl.high = m.high;
      pl.lag = lag_of(pl.stored, pl.low, pl.high);
      pl.out_of_range = outside_log(pl.stored, pl.low, pl.high);
      if (pl.lag > 0 && passed_over.contains({pl.partition, resumes_at(pl.stored, pl.low)}))
        pl.passed_over = std::exchange(pl.lag, 0);
      if (const auto at = record_to_check(stored, pl.partition, m)) {
        const auto found = found_ids.find({pl.partition, *at});
        if (found == found_ids.end()) {
          pl.resume_unchecked = read.why_not({pl.partition, *at});
        } else if (const auto& applied = *stored.at(pl.partition).last_svix_id; found->second != applied) {
          pl.recreated_found_svix_id = found->second;
          pl.applied_svix_id = applied;
          pl.compared_offset = *at;
        }
      }
      if (const auto s = stored.find(pl.partition);
          s != stored.end() && s->second.checked && !pl.recreated_found_svix_id) {
        const auto& c = *s->second.checked;
        const auto found = found_ids.find({pl.partition, c.offset});
        if (found != found_ids.end() && found->second != c.svix_id) {
          pl.recreated_found_svix_id = found->second;
          pl.applied_svix_id = c.svix_id;
          pl.compared_offset = c.offset;
        }
      }
      r.lag += pl.lag;
      r.partitions.push_back(pl);
    }
    out.push_back(std::move(r));
  }
  return out;
}

}  // namespace clerk_sync::ops
