#include "kafka/mock_cluster.hpp"

#include <librdkafka/rdkafka.h>
#include <librdkafka/rdkafka_mock.h>

#include <array>
#include <stdexcept>
#include <vector>

#include "kafka/handle.hpp"

namespace clerk_sync::kafka {

struct mock_cluster::impl {
  detail::handle_ptr rk;  // the mock cluster lives on this handle's threads
  rd_kafka_mock_cluster_t* mc = nullptr;
};

mock_cluster::mock_cluster(int brokers) : impl_(std::make_unique<impl>()) {
  detail::conf_ptr conf(rd_kafka_conf_new());
  detail::set(conf.get(), "log_level", "3");
  impl_->rk = detail::make_handle(RD_KAFKA_PRODUCER, std::move(conf));
  impl_->mc = rd_kafka_mock_cluster_new(impl_->rk.get(), brokers);
  if (!impl_->mc) throw std::runtime_error("could not create the mock cluster");
}

mock_cluster::~mock_cluster() { rd_kafka_mock_cluster_destroy(impl_->mc); }

std::string mock_cluster::bootstrap_servers() const { return rd_kafka_mock_cluster_bootstraps(impl_->mc); }

void mock_cluster::create_topic(const std::string& topic, int partitions, int replication) {
  if (rd_kafka_mock_topic_create(impl_->mc, topic.c_str(), partitions, replication))
    throw std::runtime_error("mock cluster: could not create topic " + topic);
}

void mock_cluster::fail_next_requests(int api_key, int count, int code) {
  std::vector<rd_kafka_resp_err_t> errs(static_cast<std::size_t>(count), static_cast<rd_kafka_resp_err_t>(code));
  rd_kafka_mock_push_request_errors_array(impl_->mc, static_cast<std::int16_t>(api_key), errs.size(), errs.data());
}

void mock_cluster::fail_next_requests_to(std::int32_t broker, int api_key, int count, int code) {
  for (int i = 0; i < count; ++i) {
    const auto err = rd_kafka_mock_broker_push_request_error_rtts(impl_->mc, broker, static_cast<std::int16_t>(api_key),
                                                                  1, static_cast<rd_kafka_resp_err_t>(code), 0);
    if (err) throw std::runtime_error(std::string("mock request error: ") + rd_kafka_err2str(err));
  }
}

void mock_cluster::set_partition_leader(const std::string& topic, std::int32_t partition, std::int32_t broker) {
  if (rd_kafka_mock_partition_set_leader(impl_->mc, topic.c_str(), partition, broker))
    throw std::runtime_error("mock cluster: could not move the leader of " + topic);
}

void mock_cluster::set_group_coordinator(const std::string& group, std::int32_t broker) {
  if (rd_kafka_mock_coordinator_set(impl_->mc, "group", group.c_str(), broker))
    throw std::runtime_error("mock cluster: could not set the coordinator of group " + group);
}

void mock_cluster::set_broker_down(std::int32_t broker) { rd_kafka_mock_broker_set_down(impl_->mc, broker); }

void mock_cluster::set_broker_up(std::int32_t broker) { rd_kafka_mock_broker_set_up(impl_->mc, broker); }

void mock_cluster::set_round_trip(std::int32_t broker, std::chrono::milliseconds rtt) {
  rd_kafka_mock_broker_set_rtt(impl_->mc, broker, static_cast<int>(rtt.count()));
}

void mock_cluster::set_topic_error(const std::string& topic, int code) {
  rd_kafka_mock_topic_set_error(impl_->mc, topic.c_str(), static_cast<rd_kafka_resp_err_t>(code));
}

void mock_cluster::delay_next_produce_answer(std::int32_t broker, std::chrono::milliseconds delay) {
  const auto err = rd_kafka_mock_broker_push_request_error_rtts(impl_->mc, broker, 0 /* Produce */, 1,
                                                                RD_KAFKA_RESP_ERR_NO_ERROR, static_cast<int>(delay.count()));
  if (err) throw std::runtime_error(std::string("mock delay: ") + rd_kafka_err2str(err));
}

std::size_t mock_cluster::produce_requests_delayed(std::int32_t broker) const {
  std::size_t n = 0;
  const auto err = rd_kafka_mock_broker_error_stack_cnt(impl_->mc, broker, 0 /* Produce */, &n);
  if (err) throw std::runtime_error(std::string("mock delay count: ") + rd_kafka_err2str(err));
  return n;
}

}  // namespace clerk_sync::kafka
