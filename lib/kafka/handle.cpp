#include "kafka/handle.hpp"

#include <array>
#include <cctype>

#include "log/log.hpp"

namespace clerk_sync::kafka {

std::optional<std::string_view> find_header(const std::vector<header>& headers, std::string_view key) {
  for (const auto& h : headers)
    if (h.key == key) return std::string_view(h.value);
  return std::nullopt;
}

}  // namespace clerk_sync::kafka

namespace clerk_sync::kafka::detail {
namespace {

// One limiter for every client of the process: a broker that is down makes
// each client repeat the same lines every second or so.
log::rate_limiter& limiter() {
  static log::rate_limiter instance;
  return instance;
}

// Lines that differ only in numbers (counts, durations) are one kind; but
// librdkafka's leading "host:port/id: " names a broker, and one broker's
// trouble must not hide another's.
std::string kind_of(std::string_view tag, std::string_view text) {
  std::string key(tag);
  key += '|';
  const auto broker_end = text.find(": ");
  if (broker_end != std::string_view::npos && text.substr(0, broker_end).find(' ') == std::string_view::npos) {
    key += text.substr(0, broker_end + 2);
    text.remove_prefix(broker_end + 2);
  }
  for (const char c : text)
    if (!std::isdigit(static_cast<unsigned char>(c))) key += c;
  return key;
}

// syslog severities, as librdkafka uses them.
log::level level_of(int syslog_level) {
  if (syslog_level <= 3) return log::level::error;
  if (syslog_level == 4) return log::level::warn;
  if (syslog_level <= 6) return log::level::info;
  return log::level::debug;
}

void on_log(const rd_kafka_t* rk, int level, const char* fac, const char* buf) {
  const std::string_view facility = fac ? fac : "";
  const std::string_view text = buf ? buf : "";
  const char* client = rk ? rd_kafka_name(rk) : "";
  limiter().write(kind_of(facility, text), level_of(level), "kafka_log",
                  {{"client", client}, {"facility", facility}, {"text", text}});
}

void on_error(rd_kafka_t* rk, int err, const char* reason, void* /*opaque*/) { log_error(rk, err, reason); }

}  // namespace

void log_error(const rd_kafka_t* rk, int err, const char* reason) {
  const auto code = static_cast<rd_kafka_resp_err_t>(err);
  const std::string_view text = reason ? reason : rd_kafka_err2str(code);
  // Transport trouble is retried by librdkafka; what an operator must act
  // on (authentication, authorization, bad protocol) shows as an error.
  const bool transient = code == RD_KAFKA_RESP_ERR__TRANSPORT || code == RD_KAFKA_RESP_ERR__ALL_BROKERS_DOWN ||
                         code == RD_KAFKA_RESP_ERR__TIMED_OUT;
  const char* client = rk ? rd_kafka_name(rk) : "";
  limiter().write(kind_of(rd_kafka_err2name(code), text), transient ? log::level::warn : log::level::error,
                  "kafka_error", {{"client", client}, {"error", rd_kafka_err2name(code)}, {"reason", text}});
}

void set(rd_kafka_conf_t* conf, std::string_view key, std::string_view value) {
  std::array<char, 512> err{};
  const std::string k(key), v(value);
  if (rd_kafka_conf_set(conf, k.c_str(), v.c_str(), err.data(), err.size()) != RD_KAFKA_CONF_OK)
    throw config_error("kafka property '" + k + "': " + err.data());
}

namespace {

std::string get(rd_kafka_conf_t* conf, const std::string& key) {
  std::array<char, 512> buf{};
  std::size_t size = buf.size();
  if (rd_kafka_conf_get(conf, key.c_str(), buf.data(), &size) != RD_KAFKA_CONF_OK) return {};
  return buf.data();
}

}  // namespace

void refuse_overrides(const client_config& cfg, std::span<const std::pair<std::string_view, std::string_view>> fixed) {
  for (const auto& [k, v] : cfg.properties)
    for (const auto& [fk, fv] : fixed) {
      conf_ptr scratch(rd_kafka_conf_new());
      const std::string fixed_key(fk);
      set(scratch.get(), fixed_key, fv);
      const std::string before = get(scratch.get(), fixed_key);
      set(scratch.get(), k, v);
      if (get(scratch.get(), fixed_key) != before)
        throw config_error("kafka property '" + k + "': clerk-sync sets " + fixed_key + "=" + std::string(fv) +
                           " itself (its guarantees depend on it)");
    }
}

std::span<const std::pair<std::string_view, std::string_view>> every_client_fixed() {
  static constexpr std::array<std::pair<std::string_view, std::string_view>, 1> every_client{
      {{"allow.auto.create.topics", "false"}}};
  return every_client;
}

conf_ptr make_conf(const client_config& cfg, property_list defaults, property_list fixed) {
  refuse_overrides(cfg, {fixed.begin(), fixed.size()});
  refuse_overrides(cfg, every_client_fixed());
  conf_ptr conf(rd_kafka_conf_new());
  set(conf.get(), "bootstrap.servers", cfg.brokers);
  // Warnings and worse by default; an operator may raise it (`debug` too).
  set(conf.get(), "log_level", "4");
  for (const auto& [k, v] : defaults) set(conf.get(), k, v);
  for (const auto& [k, v] : cfg.properties) set(conf.get(), k, v);
  for (const auto& [k, v] : fixed) set(conf.get(), k, v);
  for (const auto& [k, v] : every_client_fixed()) set(conf.get(), k, v);
  rd_kafka_conf_set_log_cb(conf.get(), &on_log);
  rd_kafka_conf_set_error_cb(conf.get(), &on_error);
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
