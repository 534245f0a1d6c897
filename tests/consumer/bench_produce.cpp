// bench-consumer-produce BROKERS TOPIC EVENTS USERS [SEED]: produces generated
// Clerk events as the receiver would (for scripts/bench-consumer and
// scripts/bench-scale), streamed from the generator so that millions fit.
// A topic that already holds as many records as these arguments generate is
// kept as it is (a large one takes minutes to produce; the topic's name
// carries the arguments, and only the count is checked); one holding another
// count is deleted and produced again. Prints the number of records. Not a test.
#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <thread>

#include "consumer/generator.hpp"
#include "kafka/admin.hpp"
#include "kafka/consumer.hpp"
#include "kafka/producer.hpp"
#include "ops/topic.hpp"

namespace kafka = clerk_sync::kafka;
using namespace std::chrono_literals;

namespace {

// Records the topic holds (sum of high watermarks: nothing is ever deleted
// from a bench topic); -1 when it does not exist.
long records_in(const kafka::client_config& cfg, const std::string& topic) {
  kafka::consumer reader(cfg, "");
  const auto parts = reader.partitions_of(topic, 10s);
  if (parts.empty()) return -1;
  long n = 0;
  for (const auto p : parts) n += reader.watermarks(topic, p, 10s).second;
  return n;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 5 && argc != 6) {
    std::fprintf(stderr, "usage: bench-consumer-produce BROKERS TOPIC EVENTS USERS [SEED]\n");
    return 2;
  }
  kafka::client_config cfg;
  cfg.brokers = argv[1];
  const std::string topic = argv[2];
  const clerk_sync::test::generator_options opts{
      .users = std::atoi(argv[4]), .events = std::atol(argv[3]), .seed = argc == 6 ? std::strtoull(argv[5], nullptr, 10) : 1};

  if (const long existing = records_in(cfg, topic); existing > 0) {
    long expected = 0;
    clerk_sync::test::generate_events(opts, [&](const clerk_sync::test::generated_event&) { ++expected; });
    if (existing == expected) {
      std::fprintf(stderr, "bench-consumer-produce: %s already holds the %ld records, kept\n", topic.c_str(), existing);
      std::printf("%ld\n", existing);
      return 0;
    }
    std::fprintf(stderr, "bench-consumer-produce: %s holds %ld records, not %ld: produced again\n", topic.c_str(),
                 existing, expected);
    kafka::delete_topic(cfg, topic, 30s);
    std::this_thread::sleep_for(2s);  // the deletion reaches the broker's metadata
  }
  // Created as `clerk-sync-ctl topic ensure` creates the events topic (six
  // partitions, kept forever, room for the largest webhook), so that the
  // benches replay the topic operators run, and `ctl status` on it has
  // nothing to warn about.
  clerk_sync::ops::topic_settings settings;
  settings.name = topic;
  (void)clerk_sync::ops::ensure_topic(cfg, settings, 30s);
  kafka::producer prod(cfg, {.message_timeout = 60s, .linger = 20ms});
  std::atomic<long> failed{0};
  long produced = 0;
  bool refused = false;
  clerk_sync::test::generate_events(opts, [&](const clerk_sync::test::generated_event& e) {
    if (refused) return;
    const kafka::outgoing_record rec{topic, e.key, e.body,
                                     {{"svix-id", e.svix_id}, {"clerk-event-type", e.type}, {"received-at", "0"}}};
    while (true) {
      const auto st = prod.produce(rec, [&](const kafka::delivery_report& r) {
        if (!r.ok) ++failed;
      });
      if (st == kafka::enqueue_status::queued) break;
      if (st != kafka::enqueue_status::queue_full) {
        std::fprintf(stderr, "bench-consumer-produce: a record was refused (enqueue status %d)\n", static_cast<int>(st));
        refused = true;
        return;
      }
      std::this_thread::sleep_for(2ms);
    }
    ++produced;
  });
  if (refused) return 1;
  if (!prod.flush(120s) || failed > 0) {
    std::fprintf(stderr, "bench-consumer-produce: %ld records not acknowledged (or not within 120 s)\n", failed.load());
    return 1;
  }
  std::printf("%ld\n", produced);
  return 0;
}
