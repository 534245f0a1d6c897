#pragma once
// Group consumer with offsets owned by the caller (stored in the database,
// never committed to Kafka). Eager `range` assignment and single-message
// poll: librdkafka 2.0.2's cooperative-sticky and batch APIs have known
// lost-message bugs. Not thread-safe: one thread polls; the rebalance
// handlers run inside poll() on that thread.

#include <chrono>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <string_view>
#include <vector>

#include "kafka/client.hpp"

namespace clerk_sync::kafka {

struct message {
  std::string topic;
  std::int32_t partition = 0;
  std::int64_t offset = 0;
  std::string key;
  std::string value;
  std::vector<header> headers;
  std::int64_t timestamp_ms = -1;
};

// A consumer group's member, and the group, as brokers list them
// (consumer::describe_group).
struct group_member {
  std::string member_id;
  std::string client_id;
  std::string host;  // as the broker saw it
};
struct group_description {
  std::string group;
  std::string state;  // Stable, Empty, Dead, PreparingRebalance…
  std::vector<group_member> members;
};

// A partition's low and high watermarks, or why they could not be read.
struct watermark_reading {
  std::int64_t low = 0;
  std::int64_t high = 0;
  std::string failed;  // non-empty: not read (low and high mean nothing)
};

struct consumer_options {
  // Whole-group settings; defaults suit a worker that applies in batches.
  std::chrono::milliseconds session_timeout{10'000};
  std::chrono::milliseconds max_poll_interval{300'000};
  // The client.id by default (the group's id when empty); an operator's
  // client.id property wins.
  std::string client_id{};
};

class consumer {
 public:
  // on_assign receives the new partitions (offsets unset) and returns them
  // with the offset to start from: the stored next offset, or
  // offset_beginning when none is stored. on_revoke runs before the
  // partitions are taken away: finish and commit the open work there.
  // What either throws is thrown by the poll() that ran it (on_assign
  // throwing: nothing of that assignment is read); what on_revoke throws
  // in close() is dropped, so it should throw nothing.
  struct rebalance_handler {
    std::function<std::vector<topic_partition>(std::vector<topic_partition>)> on_assign;
    std::function<void(const std::vector<topic_partition>&)> on_revoke;
  };

  // A group member (group_id non-empty) or, with an empty group_id, a plain
  // reader driven by assign() (replay, tests). Throws config_error.
  consumer(const client_config& cfg, const std::string& group_id, rebalance_handler handler = {},
           const consumer_options& opts = {});
  ~consumer();  // leaves the group if close() was not called
  // The max.poll.interval.ms such a consumer runs with: `opts`' default, or
  // the operator's property over it. Throws config_error for a property
  // librdkafka refuses, as the constructor would.
  [[nodiscard]] static std::chrono::milliseconds max_poll_interval(const client_config& cfg,
                                                                   const consumer_options& opts = {});
  consumer(const consumer&) = delete;
  consumer& operator=(const consumer&) = delete;

  void subscribe(const std::vector<std::string>& topics);
  // Reads exactly these partitions from the given offsets (no group).
  void assign(const std::vector<topic_partition>& partitions);

  // One message, or nullopt when none arrived within `timeout` (transient
  // broker trouble is logged by librdkafka and retried on its own). Throws
  // fatal_error on an error the consumer cannot continue after.
  [[nodiscard]] std::optional<message> poll(std::chrono::milliseconds timeout);

  // Partitions currently assigned (offsets unset).
  [[nodiscard]] std::vector<topic_partition> assignment() const;

  // Per assigned partition of `topic`, the offset after the last record
  // poll() returned or stepped over: a read_committed reader is never given
  // a transaction's control records or an aborted transaction's records,
  // yet moves past them. Partitions without a position yet are left out.
  [[nodiscard]] std::map<std::int32_t, std::int64_t> positions(const std::string& topic) const;

  // Low and high watermark (the next offset to be written) of a partition.
  // Throws fatal_error naming the partition.
  [[nodiscard]] std::pair<std::int64_t, std::int64_t> watermarks(const std::string& topic, std::int32_t partition,
                                                                 std::chrono::milliseconds timeout) const;
  // The same for each of `partitions`, all asked at once (a thread each): a
  // leader that does not answer (down) holds only its own partitions, each
  // failed alone with the reason, and none of them past `timeout`.
  [[nodiscard]] std::map<std::int32_t, watermark_reading> watermarks(const std::string& topic,
                                                                     const std::vector<std::int32_t>& partitions,
                                                                     std::chrono::milliseconds timeout) const;

  // This consumer's group as the brokers list it, this member included.
  // Throws fatal_error when it could not be asked within `timeout`. A
  // diagnosis, not a guarantee: in librdkafka 2.0.2 a later clean answer
  // from one broker can erase an earlier error from the group's coordinator
  // (the group then reads as having no member). The admin API's
  // DescribeConsumerGroups asks the coordinator, but its error path can
  // abort the process (librdkafka #4605, #3663: an assertion in
  // rd_kafka_enq_once_del_source_return when a connection drops), which
  // a consumer must not risk for a log line.
  [[nodiscard]] group_description describe_group(std::chrono::milliseconds timeout) const;
  // This member's id in its group; empty while it has none.
  [[nodiscard]] std::string member_id() const;

  // The topic's effective configuration, as kafka::describe_topic, asked
  // through this consumer's own connection and settings.
  [[nodiscard]] std::optional<std::map<std::string, std::string>> topic_config(const std::string& topic,
                                                                                std::chrono::milliseconds timeout) const;

  // Partition ids of a topic; empty if the topic does not exist.
  [[nodiscard]] std::vector<std::int32_t> partitions_of(const std::string& topic,
                                                        std::chrono::milliseconds timeout) const;

  // Why the brokers turn this consumer away when retrying will not help (a
  // refused login, a failed TLS handshake), until a metadata request of it
  // succeeds or it gets an assignment; nullopt else.
  [[nodiscard]] std::optional<kafka::refusal> refusal() const;

  // How often poll() woke the fetchers of a queue that had filled to its
  // bound (see fetch_nudge in consumer.cpp). For tests and figures.
  [[nodiscard]] std::uint64_t fetch_nudges() const;
  // Leaves the group (revoking partitions through the handler). Idempotent.
  void close();

 private:
  struct impl;
  std::unique_ptr<impl> impl_;
};

// `cfg` for a plain reader of single records (header_at): its fetches
// return at once and stay small, whatever fetch.min.bytes or queue size an
// operator set for throughput.
[[nodiscard]] client_config single_record_reader(client_config cfg);

// What header_at() read.
struct header_reading {
  // The header's value ("" when the record has none) of each record read.
  std::map<std::pair<std::int32_t, std::int64_t>, std::string> found;
  // Records the log no longer holds: compacted away (the reader went past
  // them), or before the log's start (trimmed).
  std::set<std::pair<std::int32_t, std::int64_t>> gone;
  // Records at or past the log's end when asked: a log shorter than the
  // caller knew it (the topic recreated, or a record not yet replicated).
  std::set<std::pair<std::int32_t, std::int64_t>> past_end;
  // Records of a partition whose own reading failed (its watermarks not
  // read, its leader down), and why: the other partitions are still read.
  std::map<std::pair<std::int32_t, std::int64_t>, std::string> failed;
  // Why the others were not read: the reader failed or ran out of time.
  std::string why;
  // Why the record at `at` was not read (compacted or trimmed away, past
  // the log's end, its partition's failure, or `why`); "" when it was.
  [[nodiscard]] std::string why_not(std::pair<std::int32_t, std::int64_t> at) const;
};

// The value of header `name` of the record at each wanted (partition,
// offset) of `topic`, read by `reader` (a plain reader: its assignment is
// replaced, then emptied) within `timeout`. One round per distinct offset of
// a partition, usually one, each after a watermark query of every partition
// at once within half the time left: an offset outside its partition's log
// is sorted out at once, and a failed query (a leader down) ends only that
// partition's read.
[[nodiscard]] header_reading header_at(consumer& reader, const std::string& topic,
                                       std::map<std::int32_t, std::set<std::int64_t>> wanted, std::string_view name,
                                       std::chrono::milliseconds timeout);

// Which of `wanted` (partition -> offsets, each below that partition's
// `end`) are followed by no record a read_committed reader is given before
// `end`: all there is from the offset on is what such a reader never gets
// but moves past (a transaction's commit or abort marker, an aborted
// transaction's records, as another tool's transactional producer leaves).
// A partition not sorted out within the timeout, or that the reader cannot
// read, is taken to have one.
[[nodiscard]] std::set<std::pair<std::int32_t, std::int64_t>> nothing_before_end(
    consumer& reader, const std::string& topic, std::map<std::int32_t, std::set<std::int64_t>> wanted,
    const std::map<std::int32_t, std::int64_t>& end, std::chrono::milliseconds timeout);

}  // namespace clerk_sync::kafka
