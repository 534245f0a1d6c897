#include "kafka/consumer.hpp"

#include <algorithm>
#include <array>
#include <cstdlib>
#include <exception>
#include <future>
#include <system_error>
#include <thread>
#include <tuple>
#include <utility>

#include "kafka/admin.hpp"
#include "kafka/handle.hpp"

namespace clerk_sync::kafka {
namespace {

std::vector<topic_partition> to_vector(const rd_kafka_topic_partition_list_t* list) {
  std::vector<topic_partition> out;
  out.reserve(static_cast<std::size_t>(list->cnt));
  for (int i = 0; i < list->cnt; ++i)
    out.push_back({list->elems[i].topic, list->elems[i].partition, list->elems[i].offset});
  return out;
}

detail::tp_list_ptr to_list(const std::vector<topic_partition>& parts) {
  detail::tp_list_ptr list(rd_kafka_topic_partition_list_new(static_cast<int>(parts.size())));
  for (const auto& p : parts)
    rd_kafka_topic_partition_list_add(list.get(), p.topic.c_str(), p.partition)->offset = p.offset;
  return list;
}


struct queue_deleter {
  void operator()(rd_kafka_queue_t* q) const { rd_kafka_queue_destroy(q); }
};

// librdkafka 2.0.2 stops fetching once the consumer queue holds
// queued.max.messages.kbytes and looks again only when its broker thread
// next wakes: after up to a second (rd_kafka_max_block_ms), whatever the
// application has drained meanwhile (fetch.queue.backoff.ms came in 2.2).
// A replay that drains a queue faster than that idles the rest of the
// second: 6.4-8.6 s of a 10.7 s replay (scripts/bench consumer, four
// projections). Any request to the partitions' leaders wakes their broker
// threads, so once the queue has been near its bound and is half empty, the
// consumer asks for the partitions' end offsets (one ListOffsets a leader,
// read-only, the answer unused): the fetch resumes at once instead.
class fetch_nudge {
 public:
  explicit fetch_nudge(std::int64_t budget_bytes) : budget_(budget_bytes) {}

  // After each message polled: whether now is the time to wake the fetchers.
  bool after(std::size_t payload_bytes, rd_kafka_queue_t* queue) {
    // A running mean of the payloads (what the bound counts), and the queue
    // looked at every 32 messages: a mutex and a multiplication.
    mean_ += (static_cast<double>(payload_bytes) - mean_) / 64;
    if (++polled_ % 32 != 0 || budget_ <= 0 || !queue) return false;
    const double queued = static_cast<double>(rd_kafka_queue_length(queue)) * mean_;
    if (queued >= 0.75 * static_cast<double>(budget_)) near_bound_ = true;
    if (!near_bound_ || queued > 0.5 * static_cast<double>(budget_)) return false;
    near_bound_ = false;
    return true;
  }

 private:
  std::int64_t budget_;
  double mean_ = 0;
  std::uint64_t polled_ = 0;
  bool near_bound_ = false;
};

// The consumer queue's bound in bytes, as the configuration holds it.
std::int64_t queue_budget(rd_kafka_conf_t* conf) {
  return std::atoll(detail::get(conf, "queued.max.messages.kbytes").c_str()) * 1024;
}

}  // namespace

struct consumer::impl {
  detail::handle_ptr rk;
  std::string group;
  rebalance_handler handler;
  bool closed = false;
  std::unique_ptr<rd_kafka_queue_t, queue_deleter> queue;  // the consumer queue poll() serves
  fetch_nudge nudge{0};
  std::uint64_t nudges = 0;

  // Asks the leaders of the assigned partitions for their end offsets, only
  // to wake their broker threads (fetch_nudge). A failure changes nothing:
  // the broker thread wakes on its own within a second.
  void wake_fetchers() {
    rd_kafka_topic_partition_list_t* raw = nullptr;
    if (rd_kafka_assignment(rk.get(), &raw) != RD_KAFKA_RESP_ERR_NO_ERROR || !raw) return;
    const detail::tp_list_ptr list(raw);
    if (list->cnt == 0) return;
    ++nudges;
    for (int i = 0; i < list->cnt; ++i) list->elems[i].offset = -1;  // -1: the latest offset
    (void)rd_kafka_offsets_for_times(rk.get(), list.get(), 500);
  }

  static void on_rebalance(rd_kafka_t* handle, rd_kafka_resp_err_t err, rd_kafka_topic_partition_list_t* parts,
                           void* opaque) {
    auto* self = static_cast<impl*>(opaque);
    if (err == RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS) {
      // The group's coordinator answered: whatever login or handshake failed
      // before works now (a revoke may be local, a session lost with the
      // cluster).
      detail::connection_accepted(handle);
      // Seek by assigning with the stored offsets: nothing is read before.
      std::vector<topic_partition> wanted = to_vector(parts);
      if (self->handler.on_assign && !self->guarded([&] { wanted = self->handler.on_assign(std::move(wanted)); }))
        wanted.clear();  // nothing read from partitions the handler could not set up
      const auto list = to_list(wanted);
      self->note_assign_error("assign", rd_kafka_assign(handle, list.get()));
    } else {
      if (self->handler.on_revoke) (void)self->guarded([&] { self->handler.on_revoke(to_vector(parts)); });
      self->note_assign_error("unassign", rd_kafka_assign(handle, nullptr));
    }
  }

  // Runs a handler inside librdkafka's C callback, which nothing may unwind
  // through (it ended the process in std::terminate, without a line of
  // ours): what it throws is kept, and poll() throws it once the callback
  // has returned. False when it threw.
  std::exception_ptr handler_failed;
  template <class F>
  bool guarded(F&& f) noexcept {
    try {
      f();
      return true;
    } catch (...) {
      if (!handler_failed) handler_failed = std::current_exception();
      return false;
    }
  }

  // A failed (un)assignment leaves the group believing this member reads
  // partitions it does not (or the reverse): poll() ends the loop on it
  // (exit 4, restarted) rather than let the lag grow without a word.
  std::optional<std::string> assign_failed;
  void note_assign_error(const char* what, rd_kafka_resp_err_t err) {
    if (err != RD_KAFKA_RESP_ERR_NO_ERROR && !assign_failed)
      assign_failed = std::string(what) + " in a rebalance: " + rd_kafka_err2str(err);
  }
};

namespace {

// A consumer's configuration: `opts` as defaults, the operator's
// properties over them, what correctness needs fixed.
detail::conf_ptr consumer_conf(const client_config& cfg, const std::string& group_id, const consumer_options& opts) {
  const std::string session = std::to_string(opts.session_timeout.count());
  const std::string max_poll = std::to_string(opts.max_poll_interval.count());
  // A reader without a group still needs a group.id for librdkafka's
  // consumer API; it never joins because it never subscribes.
  const std::string group = group_id.empty() ? std::string("clerk-sync.reader") : group_id;
  return detail::make_conf(cfg,
                         {
                             {"session.timeout.ms", session},
                             {"max.poll.interval.ms", max_poll},
                             {"fetch.wait.max.ms", "100"},
                             // What the group's member list and brokers' logs name it by.
                             {"client.id", opts.client_id.empty() ? group : opts.client_id},
                         },
                         {
                             {"group.id", group},
                             // Offsets live in the database, written with the rows.
                             {"enable.auto.commit", "false"},
                             {"enable.auto.offset.store", "false"},
                             {"partition.assignment.strategy", "range"},
                             // Each record batch's CRC32C is checked (librdkafka's
                             // default skips it): a batch changed on a broker's disk
                             // is refused (poll()), not applied as other events. Not
                             // the operator's to turn off (a common throughput tip).
                             {"check.crcs", "true"},
                             {"enable.partition.eof", "false"},
                             // Never a silent reset: a start offset outside the log is an
                             // error poll() reports; "no stored offset" is an explicit
                             // offset_beginning from the rebalance handler.
                             {"auto.offset.reset", "error"},
                             // An aborted transaction's records (another tool's
                             // transactional producer) are never applied.
                             {"isolation.level", "read_committed"},
                         });
}

}  // namespace

std::chrono::milliseconds consumer::max_poll_interval(const client_config& cfg, const consumer_options& opts) {
  const auto conf = consumer_conf(cfg, "", opts);
  return std::chrono::milliseconds(std::stoll(detail::get(conf.get(), "max.poll.interval.ms")));
}

consumer::consumer(const client_config& cfg, const std::string& group_id, rebalance_handler handler,
                   const consumer_options& opts)
    : impl_(std::make_unique<impl>()) {
  impl_->handler = std::move(handler);
  impl_->group = group_id;
  auto conf = consumer_conf(cfg, group_id, opts);
  rd_kafka_conf_set_rebalance_cb(conf.get(), &impl::on_rebalance);
  rd_kafka_conf_set_opaque(conf.get(), impl_.get());
  impl_->nudge = fetch_nudge(queue_budget(conf.get()));
  impl_->rk = detail::make_handle(RD_KAFKA_CONSUMER, std::move(conf));
  rd_kafka_poll_set_consumer(impl_->rk.get());
  impl_->queue.reset(rd_kafka_queue_get_consumer(impl_->rk.get()));
}

consumer::~consumer() {
  try {
    close();
  } catch (...) {  // NOLINT(bugprone-empty-catch): a destructor must not throw
  }
}

void consumer::subscribe(const std::vector<std::string>& topics) {
  detail::tp_list_ptr list(rd_kafka_topic_partition_list_new(static_cast<int>(topics.size())));
  for (const auto& t : topics) rd_kafka_topic_partition_list_add(list.get(), t.c_str(), RD_KAFKA_PARTITION_UA);
  if (const auto err = rd_kafka_subscribe(impl_->rk.get(), list.get()))
    throw fatal_error(std::string("subscribe: ") + rd_kafka_err2str(err));
}

void consumer::assign(const std::vector<topic_partition>& partitions) {
  const auto list = to_list(partitions);
  if (const auto err = rd_kafka_assign(impl_->rk.get(), list.get()))
    throw fatal_error(std::string("assign: ") + rd_kafka_err2str(err));
}

std::optional<message> consumer::poll(std::chrono::milliseconds timeout) {
  detail::message_ptr m(rd_kafka_consumer_poll(impl_->rk.get(), static_cast<int>(timeout.count())));
  if (impl_->handler_failed) std::rethrow_exception(std::exchange(impl_->handler_failed, nullptr));
  if (impl_->assign_failed) throw fatal_error("consumer: " + *impl_->assign_failed);  // the callback ran in this poll
  if (!m) return std::nullopt;
  if (m->err) {
    if (m->err == RD_KAFKA_RESP_ERR__FATAL) {
      std::array<char, 512> buf{};
      rd_kafka_fatal_error(impl_->rk.get(), buf.data(), buf.size());
      throw fatal_error(std::string("consumer: ") + buf.data());
    }
    if (m->err == RD_KAFKA_RESP_ERR__AUTO_OFFSET_RESET) {
      const std::string topic = m->rkt ? rd_kafka_topic_name(m->rkt) : "";
      // A logical offset (the log's start, for a partition with no stored
      // offset): librdkafka could not ask the broker where the log starts,
      // and reports that as a reset. Nothing stored is out of range; the
      // broker's answer may change (a topic being deleted or recreated),
      // so it is a Kafka failure, which a restart retries.
      if (m->offset < 0)
        throw fatal_error("consumer: the start of " + topic + "/" + std::to_string(m->partition) +
                          " could not be looked up: " + rd_kafka_message_errstr(m.get()));
      // The log's range for the error line, if the leader answers in time
      // (watermarks(), not rd_kafka_query_watermark_offsets(): see there).
      std::int64_t low = -1, high = -1;
      try {
        std::tie(low, high) = watermarks(topic, m->partition, std::chrono::seconds(10));
      } catch (const fatal_error&) {  // NOLINT(bugprone-empty-catch): the line says the range is unknown
      }
      throw offset_out_of_range(topic, m->partition, m->offset, low, high);
    }
    // A record batch librdkafka could not read (its CRC wrong, its format
    // unknown, its records cut): it says so once and reads on from the next
    // batch, so the records after it would be applied and the stored offset
    // move past the ones lost. A Kafka failure instead, at that batch.
    if ((m->err == RD_KAFKA_RESP_ERR__BAD_MSG || m->err == RD_KAFKA_RESP_ERR__NOT_IMPLEMENTED) && m->offset >= 0)
      throw unreadable_batch(m->rkt ? rd_kafka_topic_name(m->rkt) : "", m->partition, m->offset,
                             rd_kafka_message_errstr(m.get()));
    // Unknown topic or partition (not yet created), transport trouble,
    // authentication or authorization: librdkafka keeps retrying and nothing
    // was consumed, but an operator must see it.
    const std::string reason = rd_kafka_message_errstr(m.get());
    detail::log_error(impl_->rk.get(), m->err, reason.c_str(), m.get());
    return std::nullopt;
  }
  if (impl_->nudge.after(m->len, impl_->queue.get())) impl_->wake_fetchers();
  message out;
  out.topic = rd_kafka_topic_name(m->rkt);
  out.partition = m->partition;
  out.offset = m->offset;
  if (m->key) out.key.assign(static_cast<const char*>(m->key), m->key_len);
  if (m->payload) out.value.assign(static_cast<const char*>(m->payload), m->len);
  rd_kafka_timestamp_type_t ts_type{};
  out.timestamp_ms = rd_kafka_message_timestamp(m.get(), &ts_type);
  rd_kafka_headers_t* hdrs = nullptr;
  if (rd_kafka_message_headers(m.get(), &hdrs) == RD_KAFKA_RESP_ERR_NO_ERROR) {
    const char* name = nullptr;
    const void* val = nullptr;
    size_t size = 0;
    for (size_t i = 0; rd_kafka_header_get_all(hdrs, i, &name, &val, &size) == RD_KAFKA_RESP_ERR_NO_ERROR; ++i)
      out.headers.push_back({name, val ? std::string(static_cast<const char*>(val), size) : std::string()});
  }
  return out;
}

std::vector<topic_partition> consumer::assignment() const {
  rd_kafka_topic_partition_list_t* raw = nullptr;
  if (rd_kafka_assignment(impl_->rk.get(), &raw) != RD_KAFKA_RESP_ERR_NO_ERROR || !raw) return {};
  const detail::tp_list_ptr list(raw);
  return to_vector(list.get());
}

std::map<std::int32_t, std::int64_t> consumer::positions(const std::string& topic) const {
  std::map<std::int32_t, std::int64_t> out;
  rd_kafka_topic_partition_list_t* raw = nullptr;
  if (rd_kafka_assignment(impl_->rk.get(), &raw) != RD_KAFKA_RESP_ERR_NO_ERROR || !raw) return out;
  const detail::tp_list_ptr list(raw);
  if (rd_kafka_position(impl_->rk.get(), list.get()) != RD_KAFKA_RESP_ERR_NO_ERROR) return out;
  for (int i = 0; i < list->cnt; ++i)
    if (topic == list->elems[i].topic && list->elems[i].offset >= 0)
      out[list->elems[i].partition] = list->elems[i].offset;
  return out;
}

std::pair<std::int64_t, std::int64_t> consumer::watermarks(const std::string& topic, std::int32_t partition,
                                                           std::chrono::milliseconds timeout) const {
  // Not rd_kafka_query_watermark_offsets(): in librdkafka 2.0.2 it waits
  // for the answer of the leader it knew, whatever its timeout, so a leader
  // that crashed held the caller until that broker came back (upstream
  // #2588, fixed in 2.3.0). offsets_for_times() sends the same ListOffsets
  // request (a time of -2 asks for the first offset, -1 for the next to be
  // written) and gives up at its timeout.
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  const auto left = [&deadline] {
    return std::max(
        std::chrono::duration_cast<std::chrono::milliseconds>(deadline - std::chrono::steady_clock::now()),
        std::chrono::milliseconds(1));
  };
  const auto ask_once = [&](std::int64_t which) {
    const std::unique_ptr<rd_kafka_topic_partition_list_t, decltype(&rd_kafka_topic_partition_list_destroy)> list(
        rd_kafka_topic_partition_list_new(1), &rd_kafka_topic_partition_list_destroy);
    rd_kafka_topic_partition_list_add(list.get(), topic.c_str(), partition)->offset = which;
    const auto err = rd_kafka_offsets_for_times(impl_->rk.get(), list.get(), static_cast<int>(left().count()));
    return std::pair(err ? err : list->elems[0].err, list->elems[0].offset);
  };
  const auto ask = [&](std::int64_t which) {
    auto [err, offset] = ask_once(which);
    // The client's own leader cache is refreshed only every few minutes: a
    // leader that moved answers "not leader" until then. A metadata request
    // for the topic updates it; then once more.
    if (err == RD_KAFKA_RESP_ERR_NOT_LEADER_FOR_PARTITION || err == RD_KAFKA_RESP_ERR_LEADER_NOT_AVAILABLE) {
      (void)partitions_of(topic, left());
      std::tie(err, offset) = ask_once(which);
    }
    if (err)
      throw fatal_error("watermarks of " + topic + "/" + std::to_string(partition) + ": " +
                        detail::failure_text(impl_->rk.get(), err));
    return offset;
  };
  const auto low = ask(RD_KAFKA_OFFSET_BEGINNING);
  return {low, ask(RD_KAFKA_OFFSET_END)};
}

std::map<std::int32_t, watermark_reading> consumer::watermarks(const std::string& topic,
                                                               const std::vector<std::int32_t>& partitions,
                                                               std::chrono::milliseconds timeout) const {
  // One query after another, a leader down would take the whole timeout
  // from the partitions asked after it: librdkafka 2.0.2 retries a broker
  // it cannot reach until the timeout, and offsets_for_times() of several
  // partitions fails them all when one leader does not answer.
  // Any failure is that partition's alone, a thread that could not be
  // started included (its partition asked on this one instead).
  std::vector<std::future<std::pair<std::int64_t, std::int64_t>>> asked;
  for (const auto p : partitions) {
    const auto ask = [this, &topic, p, timeout] { return watermarks(topic, p, timeout); };
    try {
      asked.push_back(std::async(std::launch::async, ask));
    } catch (const std::system_error&) {
      asked.push_back(std::async(std::launch::deferred, ask));
    }
  }
  std::map<std::int32_t, watermark_reading> out;
  for (std::size_t i = 0; i < partitions.size(); ++i) {
    auto& reading = out[partitions[i]];
    try {
      std::tie(reading.low, reading.high) = asked[i].get();
    } catch (const std::exception& e) {
      reading.failed = e.what();
    }
  }
  return out;
}

std::optional<std::map<std::string, std::string>> consumer::topic_config(const std::string& topic,
                                                                         std::chrono::milliseconds timeout) const {
  return detail::describe_topic(impl_->rk.get(), topic, timeout);
}

std::vector<std::int32_t> consumer::partitions_of(const std::string& topic, std::chrono::milliseconds timeout) const {
  rd_kafka_topic_t* rkt = rd_kafka_topic_new(impl_->rk.get(), topic.c_str(), nullptr);
  // NULL for a name librdkafka refuses (over 512 bytes): passed on, it crashed.
  if (!rkt) throw fatal_error("kafka topic handle for " + topic + ": " + rd_kafka_err2str(rd_kafka_last_error()));
  const struct rd_kafka_metadata* md = nullptr;
  const auto err = detail::metadata(impl_->rk.get(), false, rkt, &md, timeout);
  rd_kafka_topic_destroy(rkt);
  if (err) throw fatal_error("metadata of " + topic + ": " + detail::failure_text(impl_->rk.get(), err));
  const std::unique_ptr<const struct rd_kafka_metadata, decltype(&rd_kafka_metadata_destroy)> owned(
      md, &rd_kafka_metadata_destroy);
  std::vector<std::int32_t> out;
  for (int i = 0; i < md->topic_cnt; ++i) {
    // Not "no such topic": the operator's credentials are what to fix.
    if (md->topics[i].err == RD_KAFKA_RESP_ERR_TOPIC_AUTHORIZATION_FAILED)
      throw fatal_error("metadata of " + topic + ": " + rd_kafka_err2str(md->topics[i].err) +
                        " (these credentials may not describe the topic: check its ACLs)");
    if (md->topics[i].err) continue;
    for (int j = 0; j < md->topics[i].partition_cnt; ++j) out.push_back(md->topics[i].partitions[j].id);
  }
  return out;
}

group_description consumer::describe_group(std::chrono::milliseconds timeout) const {
  const struct rd_kafka_group_list* raw = nullptr;
  const auto err =
      rd_kafka_list_groups(impl_->rk.get(), impl_->group.c_str(), &raw, static_cast<int>(timeout.count()));
  const std::unique_ptr<const rd_kafka_group_list, decltype(&rd_kafka_group_list_destroy)> list(
      raw, &rd_kafka_group_list_destroy);
  if (err) throw fatal_error("describe group " + impl_->group + ": " + detail::failure_text(impl_->rk.get(), err));
  group_description out{impl_->group, "Dead", {}};
  for (int i = 0; i < list->group_cnt; ++i) {
    const auto& g = list->groups[i];
    if (g.err) throw fatal_error("describe group " + impl_->group + ": " + rd_kafka_err2str(g.err));
    out.state = g.state;
    for (int j = 0; j < g.member_cnt; ++j) {
      std::string host = g.members[j].client_host;
      if (host.starts_with('/')) host.erase(0, 1);  // "/10.0.0.5"
      out.members.push_back({g.members[j].member_id, g.members[j].client_id, host});
    }
  }
  return out;
}

std::string consumer::member_id() const {
  rd_kafka_t* rk = impl_->rk.get();
  char* id = rd_kafka_memberid(rk);
  if (!id) return {};
  std::string out(id);
  rd_kafka_mem_free(rk, id);
  return out;
}

std::optional<kafka::refusal> consumer::refusal() const { return detail::refusal_of(impl_->rk.get()); }

std::uint64_t consumer::fetch_nudges() const { return impl_->nudges; }

void consumer::close() {
  if (impl_->closed) return;
  impl_->closed = true;
  rd_kafka_consumer_close(impl_->rk.get());
}

std::string header_reading::why_not(std::pair<std::int32_t, std::int64_t> at) const {
  if (found.contains(at)) return "";
  if (gone.contains(at)) return "no record at that offset (compacted or trimmed away)";
  if (past_end.contains(at)) return "the log ends before that offset";
  if (const auto it = failed.find(at); it != failed.end()) return it->second;
  return why.empty() ? "not read" : why;
}

client_config single_record_reader(client_config cfg) {
  cfg.properties.emplace_back("fetch.min.bytes", "1");
  cfg.properties.emplace_back("queued.max.messages.kbytes", "1024");
  return cfg;
}

header_reading header_at(consumer& reader, const std::string& topic,
                         std::map<std::int32_t, std::set<std::int64_t>> wanted, std::string_view name,
                         std::chrono::milliseconds timeout) {
  header_reading out;
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  bool late = false;  // a round ended by the deadline
  try {
    while (!wanted.empty() && !late) {
      // The log's range first: a record past its end would hold the read
      // for the whole timeout (the fetch waits for it to be written). Half
      // the time left at most, so that a leader down, which fails only its
      // own partitions, leaves the others time to be read.
      const auto left =
          std::chrono::duration_cast<std::chrono::milliseconds>(deadline - std::chrono::steady_clock::now());
      if (left <= std::chrono::milliseconds(0)) {
        late = true;
        break;
      }
      std::vector<std::int32_t> asked;
      for (const auto& w : wanted) asked.push_back(w.first);
      const auto ranges = reader.watermarks(topic, asked, std::max(left / 2, std::chrono::milliseconds(1)));
      std::map<std::int32_t, std::int64_t> round;  // partition -> offset read this round
      std::vector<topic_partition> parts;
      for (auto& [p, offsets] : wanted) {
        const auto& range = ranges.at(p);
        if (!range.failed.empty()) {
          // Its leader would fail the next round too: the partition is done.
          for (const auto o : offsets) out.failed[{p, o}] = range.failed;
          offsets.clear();
          continue;
        }
        const auto offset = *offsets.begin();
        offsets.erase(offsets.begin());
        if (offset >= range.high) {
          out.past_end.insert({p, offset});
        } else if (offset < range.low) {
          out.gone.insert({p, offset});
        } else {
          round[p] = offset;
          parts.push_back({topic, p, offset});
        }
      }
      std::erase_if(wanted, [](const auto& w) { return w.second.empty(); });
      if (parts.empty()) continue;
      reader.assign(parts);
      while (!round.empty()) {
        if (std::chrono::steady_clock::now() >= deadline) {
          late = true;
          break;
        }
        std::optional<message> m;
        try {
          m = reader.poll(std::chrono::milliseconds(100));
        } catch (const offset_out_of_range& e) {
          // This partition's offset only: the others are still read.
          const auto it = round.find(e.partition);
          if (it == round.end()) continue;
          if (e.log_start > it->second)
            out.gone.insert({e.partition, it->second});
          else
            out.failed[{e.partition, it->second}] = e.what();
          round.erase(it);
          continue;
        } catch (const unreadable_batch& e) {
          // So is a batch of one partition that cannot be read.
          if (const auto it = round.find(e.partition); it != round.end()) {
            out.failed[{e.partition, it->second}] = e.what();
            round.erase(it);
          }
          continue;
        }
        if (!m) continue;
        const auto it = round.find(m->partition);
        if (it == round.end()) continue;
        if (m->offset == it->second)
          out.found[{m->partition, m->offset}] = std::string(find_header(m->headers, name).value_or(""));
        else if (m->offset > it->second)
          out.gone.insert({m->partition, it->second});
        if (m->offset >= it->second) round.erase(it);
      }
    }
  } catch (const fatal_error& e) {
    out.why = e.what();
  }
  if (out.why.empty() && late) out.why = "not read within the timeout";
  reader.assign({});
  return out;
}

std::set<std::pair<std::int32_t, std::int64_t>> nothing_before_end(
    consumer& reader, const std::string& topic, std::map<std::int32_t, std::set<std::int64_t>> wanted,
    const std::map<std::int32_t, std::int64_t>& end, std::chrono::milliseconds timeout) {
  std::set<std::pair<std::int32_t, std::int64_t>> out;
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  try {
    while (!wanted.empty()) {
      std::map<std::int32_t, std::int64_t> round;  // partition -> offset read from this round
      std::vector<topic_partition> parts;
      for (auto& [p, offsets] : wanted) {
        round[p] = *offsets.begin();
        parts.push_back({topic, p, *offsets.begin()});
        offsets.erase(offsets.begin());
      }
      std::erase_if(wanted, [](const auto& w) { return w.second.empty(); });
      reader.assign(parts);
      // The position of an earlier round's read lasts until librdkafka's
      // own thread has stopped that fetch, after assign() returns; only a
      // poll makes it valid again.
      const auto stale = [&] {
        const auto positions = reader.positions(topic);
        return std::any_of(round.begin(), round.end(), [&](const auto& r) { return positions.contains(r.first); });
      };
      while (stale() && std::chrono::steady_clock::now() < deadline)
        std::this_thread::sleep_for(std::chrono::milliseconds(1));
      while (!round.empty() && std::chrono::steady_clock::now() < deadline) {
        // A record given from the offset on ends the question: before the
        // end, there is one; at or past it (written since), there was none.
        std::optional<message> m;
        try {
          m = reader.poll(std::chrono::milliseconds(100));
        } catch (const offset_out_of_range& e) {
          round.erase(e.partition);  // this partition only: as having records
          continue;
        } catch (const unreadable_batch& e) {
          round.erase(e.partition);  // the same
          continue;
        }
        if (m) {
          const auto it = round.find(m->partition);
          if (it == round.end() || m->offset < it->second) continue;
          if (m->offset >= end.at(m->partition)) out.insert(*it);
          round.erase(it);
        }
        // The reader's position passes only what it is never given.
        for (const auto& [p, position] : reader.positions(topic))
          if (const auto it = round.find(p); it != round.end() && position >= end.at(p)) {
            out.insert(*it);
            round.erase(it);
          }
      }
      if (!round.empty()) break;  // out of time: the rest have records, as far as anyone can tell
    }
  } catch (const fatal_error&) {
    // Unreadable (out of range, a failed fetch): as having records.
  }
  reader.assign({});
  return out;
}

}  // namespace clerk_sync::kafka
