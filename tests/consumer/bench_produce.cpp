// bench-consumer-produce BROKERS TOPIC EVENTS USERS: produces generated Clerk
// events as the receiver would (for scripts/bench-consumer). Not a test.
#include <cstdio>
#include <cstdlib>
#include <string>

#include "consumer/generator.hpp"
#include "kafka/admin.hpp"
#include "kafka/producer.hpp"

#include <atomic>
#include <chrono>
#include <thread>

int main(int argc, char** argv) {
  if (argc != 5) {
    std::fprintf(stderr, "usage: bench-consumer-produce BROKERS TOPIC EVENTS USERS\n");
    return 2;
  }
  namespace kafka = clerk_sync::kafka;
  kafka::client_config cfg;
  cfg.brokers = argv[1];
  const std::string topic = argv[2];
  const auto events = clerk_sync::test::generate_events(
      {.users = std::atoi(argv[4]), .events = std::atoi(argv[3]), .seed = 1});
  (void)kafka::create_topic(cfg, {topic, 6, 1, {{"retention.ms", "-1"}}}, std::chrono::seconds(30));
  kafka::producer prod(cfg, {.message_timeout = std::chrono::seconds(60), .linger = std::chrono::milliseconds(20)});
  std::atomic<long> failed{0};
  for (const auto& e : events) {
    const kafka::outgoing_record rec{topic, e.key, e.body,
                                     {{"svix-id", e.svix_id}, {"clerk-event-type", e.type}, {"received-at", "0"}}};
    while (true) {
      const auto st = prod.produce(rec, [&](const kafka::delivery_report& r) {
        if (!r.ok) ++failed;
      });
      if (st == kafka::enqueue_status::queued) break;
      if (st != kafka::enqueue_status::queue_full) return 1;
      std::this_thread::sleep_for(std::chrono::milliseconds(2));
    }
  }
  if (!prod.flush(std::chrono::seconds(120)) || failed > 0) return 1;
  std::printf("%zu\n", events.size());
  return 0;
}
