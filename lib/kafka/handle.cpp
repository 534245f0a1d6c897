#include "kafka/handle.hpp"

#include <array>

namespace clerk_sync::kafka {

std::optional<std::string_view> find_header(const std::vector<header>& headers, std::string_view key) {
  for (const auto& h : headers)
    if (h.key == key) return std::string_view(h.value);
  return std::nullopt;
}

}  // namespace clerk_sync::kafka

namespace clerk_sync::kafka::detail {

void set(rd_kafka_conf_t* conf, std::string_view key, std::string_view value) {
  std::array<char, 512> err{};
  const std::string k(key), v(value);
  if (rd_kafka_conf_set(conf, k.c_str(), v.c_str(), err.data(), err.size()) != RD_KAFKA_CONF_OK)
    throw config_error("kafka property '" + k + "': " + err.data());
}

conf_ptr make_conf(const client_config& cfg, property_list defaults, property_list fixed) {
  conf_ptr conf(rd_kafka_conf_new());
  set(conf.get(), "bootstrap.servers", cfg.brokers);
  // librdkafka logs to stderr in its own format; keep it for real trouble only.
  set(conf.get(), "log_level", "4");
  for (const auto& [k, v] : defaults) set(conf.get(), k, v);
  for (const auto& [k, v] : cfg.properties) set(conf.get(), k, v);
  for (const auto& [k, v] : fixed) set(conf.get(), k, v);
  return conf;
}

handle_ptr make_handle(rd_kafka_type_t type, conf_ptr conf) {
  std::array<char, 512> err{};
  rd_kafka_t* rk = rd_kafka_new(type, conf.get(), err.data(), err.size());
  if (!rk) throw config_error(std::string("kafka client: ") + err.data());
  (void)conf.release();  // owned by rk from here on
  return handle_ptr(rk);
}

}  // namespace clerk_sync::kafka::detail
