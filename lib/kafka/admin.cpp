#include "kafka/admin.hpp"

#include <array>
#include <set>
#include <memory>

#include "kafka/handle.hpp"

namespace clerk_sync::kafka {
namespace {

struct queue_deleter {
  void operator()(rd_kafka_queue_t* q) const { rd_kafka_queue_destroy(q); }
};
struct event_deleter {
  void operator()(rd_kafka_event_t* e) const { rd_kafka_event_destroy(e); }
};
struct options_deleter {
  void operator()(rd_kafka_AdminOptions_t* o) const { rd_kafka_AdminOptions_destroy(o); }
};
using queue_ptr = std::unique_ptr<rd_kafka_queue_t, queue_deleter>;
using event_ptr = std::unique_ptr<rd_kafka_event_t, event_deleter>;

detail::handle_ptr admin_handle(const client_config& cfg) {
  return detail::make_handle(RD_KAFKA_PRODUCER, detail::make_conf(cfg, {}, detail::property_list{}));
}

std::unique_ptr<rd_kafka_AdminOptions_t, options_deleter> admin_options(rd_kafka_t* rk, rd_kafka_admin_op_t op,
                                                                         std::chrono::milliseconds timeout) {
  std::unique_ptr<rd_kafka_AdminOptions_t, options_deleter> o(rd_kafka_AdminOptions_new(rk, op));
  std::array<char, 256> err{};
  if (rd_kafka_AdminOptions_set_request_timeout(o.get(), static_cast<int>(timeout.count()), err.data(), err.size()) !=
      RD_KAFKA_RESP_ERR_NO_ERROR)
    throw config_error(std::string("kafka admin request timeout: ") + err.data());  // not librdkafka's default in silence
  return o;
}

event_ptr wait_for(const rd_kafka_t* rk, rd_kafka_queue_t* q, std::chrono::milliseconds timeout) {
  event_ptr ev(rd_kafka_queue_poll(q, static_cast<int>(timeout.count()) + 1000));
  if (!ev) throw fatal_error("kafka admin request: " + detail::failure_text(rk, RD_KAFKA_RESP_ERR__TIMED_OUT));
  if (const auto err = rd_kafka_event_error(ev.get())) {
    const auto why = detail::failure_text(rk, err);
    throw fatal_error("kafka admin: " + (why == rd_kafka_err2str(err) ? rd_kafka_event_error_string(ev.get()) : why));
  }
  return ev;
}

}  // namespace

create_outcome create_topic(const client_config& cfg, const topic_spec& spec, std::chrono::milliseconds timeout) {
  auto rk = admin_handle(cfg);
  std::array<char, 512> err{};
  rd_kafka_NewTopic_t* nt =
      rd_kafka_NewTopic_new(spec.name.c_str(), spec.partitions, spec.replication_factor, err.data(), err.size());
  if (!nt) throw config_error(std::string("topic ") + spec.name + ": " + err.data());
  const std::unique_ptr<rd_kafka_NewTopic_t, decltype(&rd_kafka_NewTopic_destroy)> owned(nt,
                                                                                        &rd_kafka_NewTopic_destroy);
  for (const auto& [k, v] : spec.configs)
    if (rd_kafka_NewTopic_set_config(nt, k.c_str(), v.c_str()))
      throw config_error("topic config " + k + " was refused");
  queue_ptr q(rd_kafka_queue_new(rk.get()));
  const auto opts = admin_options(rk.get(), RD_KAFKA_ADMIN_OP_CREATETOPICS, timeout);
  rd_kafka_CreateTopics(rk.get(), &nt, 1, opts.get(), q.get());
  const auto ev = wait_for(rk.get(), q.get(), timeout);
  size_t n = 0;
  const rd_kafka_topic_result_t** res =
      rd_kafka_CreateTopics_result_topics(rd_kafka_event_CreateTopics_result(ev.get()), &n);
  for (size_t i = 0; i < n; ++i) {
    const auto e = rd_kafka_topic_result_error(res[i]);
    if (e == RD_KAFKA_RESP_ERR_TOPIC_ALREADY_EXISTS) return create_outcome::already_exists;
    if (e) throw fatal_error("create topic " + spec.name + ": " + rd_kafka_topic_result_error_string(res[i]));
  }
  return create_outcome::created;
}

std::optional<std::map<std::string, std::string>> describe_topic(const client_config& cfg, const std::string& topic,
                                                                  std::chrono::milliseconds timeout) {
  return detail::describe_topic(admin_handle(cfg).get(), topic, timeout);
}

std::optional<std::map<std::string, std::string>> detail::describe_topic(rd_kafka_t* rk, const std::string& topic,
                                                                          std::chrono::milliseconds timeout) {
  rd_kafka_ConfigResource_t* cr = rd_kafka_ConfigResource_new(RD_KAFKA_RESOURCE_TOPIC, topic.c_str());
  const std::unique_ptr<rd_kafka_ConfigResource_t, decltype(&rd_kafka_ConfigResource_destroy)> owned(
      cr, &rd_kafka_ConfigResource_destroy);
  queue_ptr q(rd_kafka_queue_new(rk));
  const auto opts = admin_options(rk, RD_KAFKA_ADMIN_OP_DESCRIBECONFIGS, timeout);
  rd_kafka_DescribeConfigs(rk, &cr, 1, opts.get(), q.get());
  const auto ev = wait_for(rk, q.get(), timeout);
  size_t n = 0;
  const rd_kafka_ConfigResource_t** res =
      rd_kafka_DescribeConfigs_result_resources(rd_kafka_event_DescribeConfigs_result(ev.get()), &n);
  if (n == 0) return std::nullopt;
  const auto e = rd_kafka_ConfigResource_error(res[0]);
  if (e == RD_KAFKA_RESP_ERR_UNKNOWN_TOPIC_OR_PART) return std::nullopt;
  if (e == RD_KAFKA_RESP_ERR_TOPIC_AUTHORIZATION_FAILED || e == RD_KAFKA_RESP_ERR_CLUSTER_AUTHORIZATION_FAILED)
    throw authorization_error("describe topic " + topic + ": " + rd_kafka_ConfigResource_error_string(res[0]) +
                              " (these credentials may not describe its configuration: check its ACLs)");
  if (e) throw fatal_error("describe topic " + topic + ": " + rd_kafka_ConfigResource_error_string(res[0]));
  std::map<std::string, std::string> out;
  size_t cnt = 0;
  const rd_kafka_ConfigEntry_t** entries = rd_kafka_ConfigResource_configs(res[0], &cnt);
  for (size_t i = 0; i < cnt; ++i) {
    const char* v = rd_kafka_ConfigEntry_value(entries[i]);
    out[rd_kafka_ConfigEntry_name(entries[i])] = v ? v : "";
  }
  return out;
}

namespace {

// The error a metadata answer gives `topic`: none when it is listed without
// one, UNKNOWN_TOPIC_OR_PART when it is not listed.
rd_kafka_resp_err_t topic_error(const rd_kafka_metadata_t& md, const std::string& topic) {
  for (int t = 0; t < md.topic_cnt; ++t)
    if (topic == md.topics[t].topic) return md.topics[t].err;
  return RD_KAFKA_RESP_ERR_UNKNOWN_TOPIC_OR_PART;
}

}  // namespace

cluster_layout describe_cluster(const client_config& cfg, const std::string& topic,
                                std::chrono::milliseconds timeout) {
  auto rk = admin_handle(cfg);
  const auto until = std::chrono::steady_clock::now() + timeout;
  using metadata_ptr = std::unique_ptr<const rd_kafka_metadata_t, decltype(&rd_kafka_metadata_destroy)>;
  // All topics: the cluster's size counts every partition's replicas.
  const rd_kafka_metadata_t* md = nullptr;
  const auto err = detail::metadata(rk.get(), true, nullptr, &md, timeout);
  if (err) throw fatal_error("kafka metadata: " + detail::failure_text(rk.get(), err));
  const metadata_ptr owned(md, &rd_kafka_metadata_destroy);
  auto out = layout_of(*md, topic);
  if (!out.partitions.empty()) return out;
  // Kafka leaves a topic these credentials may not describe out of that
  // listing: asked for alone, it says so. Not created by the asking:
  // allow.auto.create.topics=false is every client's, and librdkafka sends
  // it with the request (Metadata v4, Kafka 0.11 and later; an older broker
  // cannot be told, and one that auto-creates would create it).
  // A second request that fails says nothing either way: an error, not
  // "missing" (ensure would try to create it, status would say it is not there).
  bool denied = topic_error(*md, topic) == RD_KAFKA_RESP_ERR_TOPIC_AUTHORIZATION_FAILED;
  if (!denied) {
    const auto left = std::max(std::chrono::milliseconds(1), std::chrono::duration_cast<std::chrono::milliseconds>(
                                                                 until - std::chrono::steady_clock::now()));
    rd_kafka_topic_t* rkt = rd_kafka_topic_new(rk.get(), topic.c_str(), nullptr);
    if (!rkt) throw fatal_error("kafka topic handle for " + topic + ": " + rd_kafka_err2str(rd_kafka_last_error()));
    const rd_kafka_metadata_t* alone = nullptr;
    const auto alone_err = detail::metadata(rk.get(), false, rkt, &alone, left);
    rd_kafka_topic_destroy(rkt);
    const metadata_ptr alone_owned(alone, &rd_kafka_metadata_destroy);
    if (alone_err)
      throw fatal_error("kafka metadata for topic " + topic + " alone (not in the cluster's listing): " +
                        detail::failure_text(rk.get(), alone_err));
    denied = alone && topic_error(*alone, topic) == RD_KAFKA_RESP_ERR_TOPIC_AUTHORIZATION_FAILED;
  }
  if (denied)
    throw authorization_error("these credentials may not describe topic " + topic +
                              " (TOPIC_AUTHORIZATION_FAILED): allow them Describe on it (check its ACLs)");
  return out;
}

cluster_layout layout_of(const rd_kafka_metadata_t& md, const std::string& topic) {
  cluster_layout out;
  std::set<std::int32_t> known;
  for (int i = 0; i < md.broker_cnt; ++i) {
    out.brokers.push_back(md.brokers[i].id);
    known.insert(md.brokers[i].id);
  }
  for (int t = 0; t < md.topic_cnt; ++t) {
    const auto& mt = md.topics[t];
    for (int p = 0; p < mt.partition_cnt; ++p)
      known.insert(mt.partitions[p].replicas, mt.partitions[p].replicas + mt.partitions[p].replica_cnt);
    if (topic != mt.topic || mt.err) continue;
    for (int p = 0; p < mt.partition_cnt; ++p) {
      const auto& mp = mt.partitions[p];
      partition_layout pl;
      pl.id = mp.id;
      pl.leader = mp.leader;
      pl.replicas.assign(mp.replicas, mp.replicas + mp.replica_cnt);
      pl.isr.assign(mp.isrs, mp.isrs + mp.isr_cnt);
      out.partitions.push_back(std::move(pl));
    }
  }
  out.known_brokers = static_cast<int>(known.size());
  return out;
}

void delete_records(const client_config& cfg, const std::string& topic, std::int32_t partition,
                    std::int64_t before_offset, std::chrono::milliseconds timeout) {
  auto rk = admin_handle(cfg);
  detail::tp_list_ptr offsets(rd_kafka_topic_partition_list_new(1));
  rd_kafka_topic_partition_list_add(offsets.get(), topic.c_str(), partition)->offset = before_offset;
  rd_kafka_DeleteRecords_t* dr = rd_kafka_DeleteRecords_new(offsets.get());
  const std::unique_ptr<rd_kafka_DeleteRecords_t, decltype(&rd_kafka_DeleteRecords_destroy)> owned(
      dr, &rd_kafka_DeleteRecords_destroy);
  queue_ptr q(rd_kafka_queue_new(rk.get()));
  const auto opts = admin_options(rk.get(), RD_KAFKA_ADMIN_OP_DELETERECORDS, timeout);
  rd_kafka_DeleteRecords(rk.get(), &dr, 1, opts.get(), q.get());
  const auto ev = wait_for(rk.get(), q.get(), timeout);
  const rd_kafka_topic_partition_list_t* res =
      rd_kafka_DeleteRecords_result_offsets(rd_kafka_event_DeleteRecords_result(ev.get()));
  for (int i = 0; res && i < res->cnt; ++i)
    if (res->elems[i].err)
      throw fatal_error("delete records of " + topic + "/" + std::to_string(partition) + ": " +
                        rd_kafka_err2str(res->elems[i].err));
}

void delete_topic(const client_config& cfg, const std::string& topic, std::chrono::milliseconds timeout) {
  auto rk = admin_handle(cfg);
  rd_kafka_DeleteTopic_t* dt = rd_kafka_DeleteTopic_new(topic.c_str());
  const std::unique_ptr<rd_kafka_DeleteTopic_t, decltype(&rd_kafka_DeleteTopic_destroy)> owned(
      dt, &rd_kafka_DeleteTopic_destroy);
  queue_ptr q(rd_kafka_queue_new(rk.get()));
  const auto opts = admin_options(rk.get(), RD_KAFKA_ADMIN_OP_DELETETOPICS, timeout);
  rd_kafka_DeleteTopics(rk.get(), &dt, 1, opts.get(), q.get());
  const auto ev = wait_for(rk.get(), q.get(), timeout);
  size_t n = 0;
  const rd_kafka_topic_result_t** res =
      rd_kafka_DeleteTopics_result_topics(rd_kafka_event_DeleteTopics_result(ev.get()), &n);
  for (size_t i = 0; i < n; ++i) {
    const auto e = rd_kafka_topic_result_error(res[i]);
    if (e && e != RD_KAFKA_RESP_ERR_UNKNOWN_TOPIC_OR_PART)
      throw fatal_error("delete topic " + topic + ": " + rd_kafka_topic_result_error_string(res[i]));
  }
}

}  // namespace clerk_sync::kafka
