// clerk-sync-receiver: verify Svix-signed Clerk webhooks, publish them to
// Kafka, answer 2xx only once Kafka acknowledged. This file only assembles
// lib/http, lib/kafka and lib/systemd. Exit status: 0 after SIGTERM/SIGINT,
// 2 for bad configuration, 3 after a fatal producer error.

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/posix/stream_descriptor.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/signal_set.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/use_awaitable.hpp>

#include <condition_variable>
#include <csignal>
#include <exception>
#include <cstdlib>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <fcntl.h>
#include <sys/resource.h>
#include <unistd.h>
#include <system_error>
#include <thread>
#include <vector>

#include "config/options.hpp"
#include "config/secrets.hpp"
#include "http/options.hpp"
#include "http/server.hpp"
#include "kafka/producer.hpp"
#include "kafka/replica_watch.hpp"
#include "log/log.hpp"
#include "ops/topic.hpp"
#include "systemd/notify.hpp"
#include "systemd/signals.hpp"
#include "systemd/watchdog.hpp"

// scripts/bench-receiver's case (b) measures this same program with the
// Kafka step replaced by an immediate acknowledgement. tests/bench builds
// that variant apart (bench-receiver-no-kafka, never installed), so that the
// shipped receiver has no way at all to answer 2xx for an event Kafka does
// not hold.
#ifndef CLERK_SYNC_ACK_WITHOUT_KAFKA
#define CLERK_SYNC_ACK_WITHOUT_KAFKA 0
#endif

namespace {

constexpr bool ack_without_kafka = CLERK_SYNC_ACK_WITHOUT_KAFKA != 0;

namespace net = boost::asio;
namespace http = clerk_sync::http;
namespace kafka = clerk_sync::kafka;
namespace log = clerk_sync::log;
namespace systemd = clerk_sync::systemd;
using namespace std::chrono_literals;

constexpr int exit_fatal = 3;

http::readiness readiness_of(kafka::producer::topic_state s) {
  using state = kafka::producer::topic_state;
  switch (s) {
    case state::available: return http::readiness::ready;
    case state::missing: return http::readiness::topic_missing;
    case state::unauthenticated: return http::readiness::authentication_failed;
    case state::tls_failed: return http::readiness::tls_failed;
    case state::unauthorized: return http::readiness::topic_unauthorized;
    case state::unreachable: break;
  }
  return http::readiness::kafka_unreachable;
}

// A thread that calls `tick` once a second until stopped: request_stop()
// ends the wait at once (a tick under way runs to its end), the destructor
// joins it.
class every_second {
 public:
  template <class F>
  explicit every_second(F tick)
      : thread_([this, tick = std::move(tick)]() mutable {
          std::unique_lock lock(m_);
          while (!stop_) {
            lock.unlock();
            tick();
            lock.lock();
            cv_.wait_for(lock, 1s, [this] { return stop_; });
          }
        }) {}
  void request_stop() {
    {
      std::lock_guard lock(m_);
      stop_ = true;
    }
    cv_.notify_all();
  }
  ~every_second() {
    request_stop();
    thread_.join();
  }
  every_second(const every_second&) = delete;
  every_second& operator=(const every_second&) = delete;

 private:
  std::mutex m_;
  std::condition_variable cv_;
  bool stop_ = false;
  std::thread thread_;
};

// Keeps /readyz current without blocking the I/O thread: a metadata
// round-trip for the events topic each second (every_second). Ready
// means the cluster answers and the topic exists (auto-creation is usually
// off, and without the topic every event would get a 503). Each change of
// state is logged once; not ready for `deadline` is an error line, not_ready,
// then one every 10 minutes while it lasts (librdkafka's own kafka_log
// lines come first, errors from the first failed connection on, but they
// do not say that every webhook meanwhile gets 503).
struct readiness_probe {
  using state = kafka::producer::topic_state;
  readiness_probe(const kafka::producer& producer, const kafka::client_config& cfg, std::string events_topic,
                  std::atomic<http::readiness>& readiness, std::chrono::seconds deadline)
      : p(producer), topic(std::move(events_topic)), ready(readiness), replicas(cfg, topic), unready(deadline) {}

  void operator()() {
    std::vector<kafka::producer::partition_sync> short_of_sync;
    std::vector<std::int32_t> leaderless;
    const state now = p.check_topic(topic, 2s, &short_of_sync, &leaderless);
    if (now == state::available) {
      replicas.update(short_of_sync);
      say_leaderless(leaderless);
    }
    const auto r = readiness_of(now);
    ready = r;
    const char* name = http::name(r);
    // What an operator must fix, not only retry: librdkafka's reason.
    const auto refused = now == state::unauthenticated || now == state::tls_failed ? p.refusal() : std::nullopt;
    const auto why = refused ? std::optional<std::string>(refused->reason) : std::nullopt;
    const auto t = std::chrono::steady_clock::now();
    if (now != last) {
      if (now == state::available)
        log::info("kafka_ready", {{"topic", topic}});
      else if (now == state::unauthenticated || now == state::tls_failed)
        log::error(name, {{"topic", topic}, {"reason", why ? std::string_view(*why) : ""}});
      else if (now == state::unauthorized)
        log::error(name, {{"topic", topic}, {"outcome", "these credentials may not describe the topic: check its ACLs"}});
      else
        log::warn(name, {{"topic", topic}});
      // Unreachable and missing in turn are one stretch of 503s.
      if (!last || *last == state::available) unready.start(t);
      last = now;
    }
    if (const auto waited = now == state::available ? std::nullopt : unready.due(t)) {
      std::vector<log::field> f{
          {"topic", topic}, {"status", name}, {"waited_s", static_cast<std::int64_t>(waited->count())}};
      if (why) f.emplace_back("reason", *why);
      f.emplace_back("outcome", "every webhook meanwhile was answered 503");
      log::write(log::level::error, "not_ready", f);
    }
  }

  // Partitions without a leader take no write: their webhooks get 503
  // until one is elected, while the others' are published and /readyz
  // stays ready. A partition whose only in-sync copy is on a broker that is
  // down (replication factor 1) shows no shortage of replicas, so nothing
  // else said so. An error line when the set changes, an info line when it
  // is empty again.
  void say_leaderless(const std::vector<std::int32_t>& parts) {
    std::string now;
    for (const auto id : parts) now += (now.empty() ? "" : ",") + std::to_string(id);
    if (now == leaderless_said) return;
    if (now.empty())
      log::info("partitions_led", {{"topic", topic}});
    else
      log::error("partitions_leaderless",
                 {{"topic", topic},
                  {"partitions", now},
                  {"outcome", "their webhooks get 503 until a leader is elected (a broker with the only copy down?)"}});
    leaderless_said = now;
  }

  const kafka::producer& p;
  std::string topic;
  std::atomic<http::readiness>& ready;
  kafka::replica_watch replicas;
  std::string leaderless_said;  // the partitions the last line named ("" for none)
  log::overdue unready;
  std::optional<state> last;
};

// The topic's settings as `clerk-sync-ctl topic ensure` and `status` judge
// them (retention or compaction that a replay would miss events to, room for
// the largest record, durability), said in the receiver's own log: a topic
// that something else made (a broker creating it for another client, a
// tool) takes every acks=all write, and nothing else here would say what is
// wrong with it. Checked once the topic has been ready for 5 s (not at
// once: a receiver stopped right after its start waits for no admin
// round-trips), again after each time it was not ready, and every 10
// minutes (its settings may be altered); one line when what is wrong
// changes: topic_settings (warn), back to topic_settings_ok (info), or
// topic_settings_unchecked (warn: the settings could not be read, such as
// credentials without DescribeConfigs; asked again after a minute). On its
// own thread (every_second): a check takes a few admin round-trips of up to
// 2 s each (5 to 7 s in all against a cluster that does not answer).
struct topic_audit {
  void operator()() {
    const auto now = std::chrono::steady_clock::now();
    if (ready.load() != http::readiness::ready) {
      ready_since.reset();
      return;
    }
    if (!ready_since) ready_since = now;
    if (now - *ready_since < 5s) return;
    // Settings that could not be read are asked for again after a minute.
    const auto again = said.starts_with(unchecked) ? std::chrono::minutes(1) : std::chrono::minutes(10);
    if (checked_at && *checked_at >= *ready_since && now - *checked_at < again) return;
    checked_at = now;
    said = check();
  }

  // One check; returns what is now said (unchanged: no line).
  std::string check() const {
    try {
      const auto r = clerk_sync::ops::check_topic(cfg, topic, 2s, largest_record);
      std::string wrong;
      for (const auto& w : r.all_warnings()) wrong += (wrong.empty() ? "" : "; ") + w;
      if (wrong == said) return said;
      if (wrong.empty())
        log::info("topic_settings_ok", {{"topic", topic}});
      else
        log::warn("topic_settings", {{"topic", topic},
                                     {"warnings", wrong},
                                     {"outcome", "webhooks are still taken; clerk-sync-ctl status shows the topic, "
                                                 "and topic ensure creates one without these"}});
      return wrong;
    } catch (const std::exception& e) {
      const std::string now = std::string(unchecked) + e.what();
      if (now != said) log::warn("topic_settings_unchecked", {{"topic", topic}, {"reason", e.what()}});
      return now;
    }
  }

  static constexpr std::string_view unchecked = "unchecked: ";
  kafka::client_config cfg;
  std::string topic;
  std::size_t largest_record = 0;
  const std::atomic<http::readiness>& ready;
  std::optional<std::chrono::steady_clock::time_point> ready_since = {};
  std::optional<std::chrono::steady_clock::time_point> checked_at = {};
  std::string said = {};  // what the last line said: "" for nothing wrong
};

// Raises the soft RLIMIT_NOFILE to the hard limit (systemd's default soft
// limit is 1024) and returns the descriptors now available.
std::uint64_t raise_nofile_limit() {
  rlimit lim{};
  if (getrlimit(RLIMIT_NOFILE, &lim) != 0) return 1024;
  if (lim.rlim_cur < lim.rlim_max) {
    rlimit raised = lim;
    raised.rlim_cur = lim.rlim_max;
    if (setrlimit(RLIMIT_NOFILE, &raised) == 0) lim = raised;
  }
  return lim.rlim_cur == RLIM_INFINITY ? std::uint64_t{1} << 20 : static_cast<std::uint64_t>(lim.rlim_cur);
}

int run(const http::receiver_options& opts, std::vector<clerk_sync::verify::key> keys,
        const http::listen_address& where) {
  // Connections must never take the descriptors Kafka needs to reconnect.
  const auto nofile = raise_nofile_limit();
  const auto max_connections = http::connection_cap(opts.max_connections, nofile);
  if (nofile < http::fd_reserve + 16)
    throw clerk_sync::config::usage_error("RLIMIT_NOFILE is " + std::to_string(nofile) + ": at least " +
                                          std::to_string(http::fd_reserve + 16) + " descriptors are needed");
  (max_connections < opts.max_connections ? log::warn : log::info)(
      "limits", {{"nofile", nofile}, {"fd_reserve", http::fd_reserve}, {"max_connections", max_connections},
                 {"max_connections_asked", opts.max_connections}, {"body_limit", opts.body_limit},
                 {"body_memory_budget", opts.body_memory_budget},
                 {"small_body", http::small_body(opts.body_memory_budget, max_connections)}});
  // At SIGTERM a publish under way is waited for up to the grace: a shorter
  // grace than the publish deadline may stop the process with it unanswered.
  if (opts.shutdown_grace_ms < opts.publish_deadline_ms)
    log::warn("shutdown_grace_short", {{"shutdown_grace_ms", opts.shutdown_grace_ms},
                                       {"publish_deadline_ms", opts.publish_deadline_ms},
                                       {"outcome", "a publish under way at a stop may be left unanswered (Svix "
                                                   "retries it): give a grace of the deadline or more"}});

  const std::size_t secret_count = keys.size();  // the number only, never a value
  net::io_context ioc(1);
  const std::chrono::milliseconds deadline(opts.publish_deadline_ms);
  const std::chrono::milliseconds grace(opts.shutdown_grace_ms);
  int exit_code = 0;
  bool shutting_down = false;
  bool hurried = false;  // a second signal: in-flight requests are not waited for
  std::function<void(int)> begin_shutdown;

  std::unique_ptr<kafka::producer> producer;
  http::publish_fn publish;
  if (ack_without_kafka) {
    log::warn("bench_mode", {{"outcome", "kafka skipped: every event is acknowledged without being stored"}});
    publish = [](const kafka::outgoing_record&, kafka::producer::delivery_callback done, std::string*) {
      done(kafka::delivery_report{true, -1, -1, {}, false});
      return kafka::enqueue_status::queued;
    };
  } else {
    kafka::producer_options popts;
    // The delivery report must arrive before the HTTP deadline, so that the
    // answer reflects what Kafka decided rather than a guess.
    popts.message_timeout = http::message_timeout(opts);
    popts.max_message_bytes = http::max_message_bytes(opts);
    // Reports are served on the I/O thread, when the producer's descriptor
    // says some wait: no thread hop per webhook.
    popts.serve_on_caller = true;
    producer = std::make_unique<kafka::producer>(opts.kafka, popts, [&ioc, &begin_shutdown](const std::string& why) {
      net::post(ioc, [&begin_shutdown, why] {
        log::error("producer_fatal", {{"error", why}});
        begin_shutdown(exit_fatal);
      });
    });
    kafka::producer* p = producer.get();
    publish = [p](const kafka::outgoing_record& rec, kafka::producer::delivery_callback done, std::string* why) {
      return p->produce(rec, std::move(done), why);
    };
  }

  const http::server_limits limits{opts.body_limit,
                                   opts.header_limit,
                                   std::chrono::milliseconds(opts.read_timeout_ms),
                                   std::chrono::milliseconds(opts.idle_timeout_ms),
                                   deadline,
                                   max_connections,
                                   opts.body_memory_budget};
  http::server srv(ioc, where, {opts.path, std::move(keys), std::chrono::seconds(opts.tolerance_s)}, limits,
                   opts.topic, publish);
  std::optional<every_second> probe;
  // Told to stop as the shutdown begins and joined after the flush: a check
  // under way ends meanwhile, and holds up the stop only by what is left of
  // it past the drain and the flush (a few seconds at most).
  std::optional<every_second> audit;
  if (producer) {
    probe.emplace(readiness_probe(*producer, opts.kafka, opts.topic, srv.kafka_state,
                                  std::chrono::seconds(opts.unready_deadline_s)));
    audit.emplace(topic_audit{.cfg = opts.kafka,
                              .topic = opts.topic,
                              .largest_record = http::max_message_bytes(opts),
                              .ready = srv.kafka_state});
  } else {
    srv.kafka_state = http::readiness::ready;
  }

  // Delivery reports, served on this thread whenever librdkafka says some
  // wait. The loop runs until ioc.stop() abandons it; if it ever ended
  // sooner, every later webhook would wait for a report in vain, so that
  // ends the process instead.
  std::optional<net::posix::stream_descriptor> reports;
  if (producer) {
    const int fd = fcntl(producer->report_fd(), F_DUPFD_CLOEXEC, 0);
    if (fd < 0) throw std::system_error(errno, std::generic_category(), "dup of the delivery report descriptor");
    reports.emplace(ioc, fd);
    net::co_spawn(
        ioc,
        [&reports, p = producer.get()]() -> net::awaitable<void> {
          for (;;) {
            auto [ec] = co_await reports->async_wait(net::posix::stream_descriptor::wait_read,
                                                     net::as_tuple(net::use_awaitable));
            if (ec) throw std::system_error(ec, "waiting for delivery reports");
            p->serve_reports();
          }
        },
        [&](const std::exception_ptr& e) {
          if (!e) return;
          // Said during a stop too, and its exit code: the requests still
          // waiting then get their 503 only at the deadline, acknowledged
          // by Kafka or not.
          try {
            std::rethrow_exception(e);
          } catch (const std::exception& x) {
            log::error("reports_failed", {{"error", x.what()}});
          }
          begin_shutdown(exit_fatal);
        });
  }

  net::signal_set signals(ioc, SIGTERM, SIGINT, SIGHUP);
  net::steady_timer watchdog(ioc);
  net::steady_timer drain(ioc);

  begin_shutdown = [&](int code) {
    if (shutting_down) {
      // A fatal error while draining after a signal still decides the exit.
      if (exit_code == 0) exit_code = code;
      return;
    }
    shutting_down = true;
    exit_code = code;
    if (audit) audit->request_stop();
    systemd::notify_stopping();
    log::info("stopping", {{"connections", srv.connections()}, {"exit_code", code}});
    srv.stop();
    watchdog.cancel();
    // A signal now (a second Ctrl-C, `systemctl kill`) ends the wait at
    // once: the requests still in flight get no answer, so Svix retries them.
    // (The first signal's wait is cancelled: a signal completes every wait.)
    signals.cancel();
    systemd::on_stop_signal(signals, [&](int sig) {
      hurried = true;
      log::warn("signal", {{"signal", sig},
                           {"connections", srv.connections()},
                           {"outcome", "signal while stopping: requests in flight are not waited for, Svix retries them"}});
    });
    // Wait for in-flight requests to be answered, within the grace period.
    net::co_spawn(
        ioc,
        [&]() -> net::awaitable<void> {
          const auto until = std::chrono::steady_clock::now() + grace;
          while (!hurried && srv.connections() > 0 && std::chrono::steady_clock::now() < until) {
            drain.expires_after(20ms);
            co_await drain.async_wait(net::use_awaitable);
          }
          if (!hurried && srv.connections() > 0) log::warn("grace_expired", {{"connections", srv.connections()}});
          ioc.stop();
        },
        net::detached);
  };
  systemd::on_stop_signal(signals, [&](int sig) {
    log::info("signal", {{"signal", sig}});
    begin_shutdown(0);
  });
  systemd::ping_watchdog_on(watchdog);

  srv.start();
  log::info("listening", {{"address", where.host}, {"port", srv.port()}, {"path", opts.path},
                          {"topic", opts.topic}, {"secrets", secret_count}});
  systemd::notify_ready();
  ioc.run();

  // The loop has stopped, so a signal now could not be served: the default
  // action ends the process, while the probe's last check ends (up to its
  // 2 s) or during the flush below. Every 2xx sent had its delivery report;
  // what the flush still waits for was never acknowledged.
  signals.clear();
  probe.reset();
  if (producer) {
    // A fatal error after the drain stopped the loop, or during the flush,
    // was posted to the loop in vain.
    const auto fatal_since_loop = [&] {
      if (exit_code == exit_fatal) return;
      if (const auto why = producer->fatal_reason()) {
        log::error("producer_fatal", {{"error", *why}});
        exit_code = exit_fatal;
      }
    };
    fatal_since_loop();
    const bool flushed = producer->flush(exit_code == exit_fatal || hurried ? 1000ms : grace);
    // Records left are dropped with the producer: none was acknowledged to
    // Svix, which sends them again, but an operator reading warnings sees it.
    (flushed ? log::info : log::warn)(
        "flushed", {{"outcome", flushed ? "complete" : "incomplete"}, {"in_flight", producer->in_flight()}});
    fatal_since_loop();
  }
  audit.reset();  // its last line, if a check was under way, before the last line
  // What the rate limiters hold back goes out before the last line.
  log::rate_limiter::drain_all();
  log::info("stopped", {{"exit_code", exit_code}});
  return exit_code;
}

}  // namespace

int main(int argc, char** argv) {
  return clerk_sync::config::run_main("clerk-sync-receiver", [&]() -> int {
    CLI::App app{"Receives Svix-signed Clerk webhooks and publishes them to Kafka", "clerk-sync-receiver"};
    http::receiver_options opts;
    http::add_receiver_options(app, opts);
    if (const auto rc = clerk_sync::config::parse(app, argc, argv)) return *rc;
    clerk_sync::config::apply(opts.log);
    http::validate(opts);
    const char* env = std::getenv("CLERK_WEBHOOK_SECRET");  // read once, here, and nowhere else
    auto keys = clerk_sync::config::load_secrets(env ? std::optional<std::string>(env) : std::nullopt, opts.secret_file);
    const auto where = http::parse_listen(opts.listen);
    return run(opts, std::move(keys), where);
  });
}
