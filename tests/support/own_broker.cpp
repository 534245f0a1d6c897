#include "support/own_broker.hpp"

#include <doctest/doctest.h>

#include <chrono>
#include <utility>

namespace clerk_sync::test {

std::string second_listener(int port, int controller_port, const std::string& protocol, int listener_port) {
  const auto plain = "PLAINTEXT://127.0.0.1:" + std::to_string(port);
  const auto other = protocol + "://127.0.0.1:" + std::to_string(listener_port);
  return "listeners=" + plain + ",CONTROLLER://127.0.0.1:" + std::to_string(controller_port) + "," + other +
         "\nadvertised.listeners=" + plain + "," + other +
         "\nlistener.security.protocol.map=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT," + protocol + ":" + protocol + "\n";
}

own_broker::own_broker(std::string extra_config, int port, int controller_port)
    : extra_config_(std::move(extra_config)), port_(port), controller_port_(controller_port) {
  control("start");
}

own_broker::~own_broker() { (void)run("stop"); }

std::string own_broker::server_properties() const { return read_file(dir_ / "kafka/server.properties"); }

void own_broker::control(const std::string& command) const {
  const auto r = run(command);
  REQUIRE_MESSAGE(r.status == 0, command << ": " << r.err);
}

run_result own_broker::run(const std::string& command) const {
  return test::run(source_path("scripts/kafka-local"), {command},
                   {{"KAFKA_LOCAL_PORT", std::to_string(port_)},
                    {"KAFKA_LOCAL_CONTROLLER_PORT", std::to_string(controller_port_)},
                    {"KAFKA_LOCAL_DIR", (dir_ / "kafka").string()},
                    {"KAFKA_LOCAL_EXTRA_CONFIG", extra_config_}},
                   std::chrono::seconds(120));
}

}  // namespace clerk_sync::test
