#pragma once
// A single Apache Kafka broker of one test's own (scripts/kafka-local on free
// loopback ports, in a temporary folder): one a test may stop and start
// without disturbing the shared test broker, or one with settings the shared
// broker must not have (a default that changes what every topic gets).
// Started by the constructor (the test fails if it cannot), stopped by the
// destructor.

#include <string>

#include "support/process.hpp"
#include "support/support.hpp"

namespace clerk_sync::test {

// server.properties lines that add a client listener for `protocol`
// (SSL, SASL_PLAINTEXT) on `listener_port` beside scripts/kafka-local's
// PLAINTEXT one on `port` (which its readiness check asks) and the
// controller's: they replace kafka-local's listeners (a key given again wins).
[[nodiscard]] std::string second_listener(int port, int controller_port, const std::string& protocol,
                                          int listener_port);

class own_broker {
 public:
  // `extra_config`: server.properties lines appended to the broker's own (a
  // key given again wins). The ports are free ones unless given, for a
  // config that names them (a listener of its own).
  explicit own_broker(std::string extra_config = {}, int port = free_port(), int controller_port = free_port());
  ~own_broker();
  own_broker(const own_broker&) = delete;
  own_broker& operator=(const own_broker&) = delete;

  [[nodiscard]] std::string address() const { return "127.0.0.1:" + std::to_string(port_); }
  [[nodiscard]] const temp_dir& dir() const { return dir_; }
  [[nodiscard]] std::string server_properties() const;
  // start | stop | status; REQUIREs success.
  void control(const std::string& command) const;

 private:
  [[nodiscard]] run_result run(const std::string& command) const;
  std::string extra_config_;
  temp_dir dir_;
  int port_;
  int controller_port_;
};

}  // namespace clerk_sync::test
