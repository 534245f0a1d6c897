// clerk-sync-consumer: projects Clerk events from Kafka into SQLite, exactly
// once. Assembles flags, one consume-loop thread per projection, signals and
// sd_notify; the work itself is in lib/consume and lib/projection.

#include <pthread.h>
#include <signal.h>

#include <algorithm>
#include <condition_variable>
#include <cstdio>
#include <memory>
#include <mutex>
#include <optional>
#include <stdexcept>
#include <stop_token>
#include <string>
#include <thread>
#include <vector>

#include "config/options.hpp"
#include "consume/loop.hpp"
#include "consume/retry.hpp"
#include "kafka/consumer.hpp"
#include "log/log.hpp"
#include "projection/mapping.hpp"
#include "store/database.hpp"
#include "systemd/notify.hpp"
#include "systemd/signals.hpp"

namespace cs = clerk_sync;
using namespace std::chrono_literals;

namespace {

struct settings {
  cs::consume::loop_config worker;
  std::string projections;
  std::size_t batch_size = 2000;
  std::size_t batch_bytes = 8 * 1024 * 1024;
  long batch_latency_ms = 50;
  long busy_timeout_ms = 5'000;
  long retry_ms = 30'000;
  cs::config::log_options log;
};

std::vector<cs::projection::kind> parse_projections(const std::string& list) {
  std::string bad;
  const auto kinds = cs::projection::parse_kinds(list, &bad);
  if (!kinds)
    throw cs::config::usage_error("unknown projection '" + bad + "' (expected users, referrals, balances or sessions)");
  return *kinds;
}

// "90d", "36h", "30m", "45s" or "0" (keep forever).
std::chrono::seconds parse_retention(const std::string& text) {
  const auto bad = [&] {
    return cs::config::usage_error("--ledger-retention: expected a number with s, m, h or d (e.g. 90d), got '" +
                                   text + "'");
  };
  if (text == "0") return std::chrono::seconds(0);
  if (text.size() < 2) throw bad();
  std::size_t used = 0;
  long long n = 0;
  try {
    n = std::stoll(text.substr(0, text.size() - 1), &used);
  } catch (const std::exception&) {
    throw bad();
  }
  if (used != text.size() - 1 || n <= 0 || n > 100'000) throw bad();
  switch (text.back()) {
    case 's': return std::chrono::seconds(n);
    case 'm': return std::chrono::minutes(n);
    case 'h': return std::chrono::hours(n);
    case 'd': return std::chrono::hours(24 * n);
    default: throw bad();
  }
}

int run(int argc, char** argv) {
  CLI::App app("Projects Clerk events from Kafka into SQLite tables, exactly once", "clerk-sync-consumer");
  settings s;
  app.add_option("--projection", s.projections, "users, referrals, balances, sessions, or a comma list")
      ->envname("CLERK_SYNC_PROJECTIONS")
      ->required();
  s.worker.db_path = "clerk-sync.db";
  app.add_option("--db", s.worker.db_path, "SQLite database file (created and migrated if needed)")
      ->envname("CLERK_SYNC_DB")
      ->capture_default_str();
  app.add_option("--topic", s.worker.topic, "Kafka topic of Clerk events")
      ->check(cs::config::topic_name())
      ->envname("CLERK_SYNC_TOPIC")
      ->capture_default_str();
  app.add_option("--group-prefix", s.worker.group_prefix, "Consumer groups are <prefix>.<projection>")
      ->envname("CLERK_SYNC_GROUP_PREFIX")
      ->capture_default_str();
  app.add_option("--batch-size", s.batch_size, "Most events per transaction")
      ->envname("CLERK_SYNC_BATCH_SIZE")
      ->check(CLI::Range(1, 100'000))
      ->capture_default_str();
  app.add_option("--batch-bytes", s.batch_bytes,
                 "Most bytes of event bodies per transaction (the event that reaches it ends the batch)")
      ->envname("CLERK_SYNC_BATCH_BYTES")
      ->check(CLI::Range(1, 1024 * 1024 * 1024))
      ->capture_default_str();
  app.add_option("--batch-latency-ms", s.batch_latency_ms, "Longest wait to fill a batch")
      ->envname("CLERK_SYNC_BATCH_LATENCY_MS")
      ->check(CLI::Range(0, 10'000))
      ->capture_default_str();
  app.add_option("--db-busy-timeout-ms", s.busy_timeout_ms, "Wait for another writer's lock before an error")
      ->envname("CLERK_SYNC_DB_BUSY_TIMEOUT_MS")
      ->check(CLI::Range(0, 600'000))
      ->capture_default_str();
  app.add_option("--db-retry-ms", s.retry_ms,
                 "Retry a failing batch with backoff this long, then exit 3 (below max.poll.interval.ms)")
      ->envname("CLERK_SYNC_DB_RETRY_MS")
      ->check(CLI::Range(0, 240'000))
      ->capture_default_str();
  int join_deadline_s = 60;
  app.add_option("--join-deadline-s", join_deadline_s,
                 "Seconds without partitions from the group before an error line (not_joined)")
      ->envname("CLERK_SYNC_JOIN_DEADLINE_S")
      ->check(CLI::Range(1, 86'400))
      ->capture_default_str();
  std::string retention = "90d";
  app.add_option("--ledger-retention", retention,
                 "Prune idempotency-ledger rows older than this (s, m, h or d suffix; 0 keeps them forever)")
      ->envname("CLERK_SYNC_LEDGER_RETENTION")
      ->capture_default_str();
  long position_check_ms = 10'000;
  app.add_option("--position-check-ms", position_check_ms,
                 "Check at most this often that the topic was not recreated under the consumer (exit 5 if it was)")
      ->envname("CLERK_SYNC_POSITION_CHECK_MS")
      ->check(CLI::Range(100, 3'600'000))
      ->capture_default_str();
  cs::config::add_kafka_options(app, s.worker.kafka);
  cs::config::add_log_options(app, s.log);
  if (const auto code = cs::config::parse(app, argc, argv)) return *code;
  cs::config::apply(s.log);

  const auto kinds = parse_projections(s.projections);
  if (s.worker.topic.empty()) throw cs::config::usage_error("--topic is empty");
  if (s.worker.db_path.empty()) throw cs::config::usage_error("--db is empty");
  s.worker.batch_size = s.batch_size;
  s.worker.batch_bytes = s.batch_bytes;
  s.worker.batch_latency = std::chrono::milliseconds(s.batch_latency_ms);
  s.worker.busy_timeout = std::chrono::milliseconds(s.busy_timeout_ms);
  s.worker.retry.budget = std::chrono::milliseconds(s.retry_ms);
  s.worker.join_deadline = std::chrono::seconds(join_deadline_s);
  s.worker.position_check_interval = std::chrono::milliseconds(position_check_ms);
  // A batch still failing must end in db_failed and exit 3 before the group
  // evicts the member: its last attempt may start just inside the budget and
  // wait the busy timeout, after waiting as long for each loop of the process
  // ahead of it at the write turn (their failing attempts and ledger prunes
  // wait the busy timeout too): one wait per projection, and one more; then
  // this loop's own ledger prune after the batch, one more wait, and the two
  // position checks of the turn (before the batch and after it).
  const long busy_waits = static_cast<long>(kinds.size()) + 2;
  const long checks_ms =
      2 * std::chrono::duration_cast<std::chrono::milliseconds>(cs::consume::loop_config::position_check_limit).count();
  const long turn_ms = busy_waits * s.busy_timeout_ms + s.retry_ms + checks_ms;
  const auto max_poll_ms =
      cs::kafka::consumer::max_poll_interval(s.worker.kafka, {.max_poll_interval = s.worker.max_poll_interval}).count();
  if (turn_ms >= max_poll_ms)
    throw cs::config::usage_error(std::to_string(busy_waits) + " times --db-busy-timeout-ms (two more than the " +
                                  "projections) plus --db-retry-ms plus two position checks of " +
                                  std::to_string(checks_ms / 2) + " ms (" + std::to_string(turn_ms) +
                                  " ms) must stay below max.poll.interval.ms (" + std::to_string(max_poll_ms) + " ms)");
  s.worker.ledger_retention = parse_retention(retention);
  // One sweep step a second; more often only for a retention of seconds (tests).
  s.worker.prune_interval = std::clamp<std::chrono::milliseconds>(
      std::chrono::duration_cast<std::chrono::milliseconds>(s.worker.ledger_retention) / 4, 100ms, 1s);

  // A file size limit (`ulimit -f`, systemd's LimitFSIZE=) is a full disk
  // like any other: the write fails with EFBIG and takes the database
  // failure's path (db_retry, db_failed, exit 3), where SIGXFSZ's default
  // action killed the process without a line.
  ::signal(SIGXFSZ, SIG_IGN);

  // SIGHUP is blocked from here, before the open, which may take minutes
  // (a migration, or waiting for another process's): its default action
  // would end the process, which systemd counts as clean and does not
  // restart. Held pending, it is taken below like any later one. SIGTERM
  // and SIGINT stay deliverable until then, so a stop ends a long open.
  sigset_t hup;
  sigemptyset(&hup);
  sigaddset(&hup, SIGHUP);
  pthread_sigmask(SIG_BLOCK, &hup, nullptr);

  // Open (create, migrate) once here so that a bad path is one clear line
  // and exit 2, before any thread starts. A lock held past the busy
  // timeout, a full disk or an I/O error is a database failure instead,
  // retried as a batch's is (--db-retry-ms, db_retry lines), then exit 3:
  // the unit is restarted, where exit 2 would stop it for good. Without the
  // retries, a failure that lasts a minute or two used up the unit's start
  // limit (10 starts in 300 s, 5 s apart) and left it stopped after the
  // disk was freed.
  // A migration's time grows with the file (002 took 33 s over a ledger of
  // three million rows on a 2-core VM, by hand) and comes before READY=1,
  // where only systemd's start timeout applies (TimeoutStartSec, 90 s by
  // default; the watchdog starts with READY=1): killed there, its
  // transaction rolled back, the unit would restart into the same migration
  // for ever. So the start is extended, 30 s at a time, while the open runs.
  {
    cs::systemd::notify_extend_timeout(30s);
    std::jthread extend([](std::stop_token stop) {
      std::mutex m;
      std::condition_variable_any cv;
      std::unique_lock lock(m);
      while (!cv.wait_for(lock, stop, 10s, [&stop] { return stop.stop_requested(); }))
        cs::systemd::notify_extend_timeout(30s);
    });
    try {
      cs::consume::with_retry(
          s.worker.retry,
          [&s] {
            cs::store::database db(s.worker.db_path,
                                   {.busy_timeout = s.worker.busy_timeout,
                                    .keep_wal_files = true,
                                    .on_migration_wait = [&s](const std::string& lock) {
                                      cs::log::info("migration_wait", {{"db", s.worker.db_path}, {"lock", lock}});
                                    }});
            // A replay moved into place whole is live now; one that finished
            // with events missing (--allow-incomplete) is said, as swap-in
            // would have asked.
            if (cs::store::clear_replay_mark(db) == cs::store::incomplete_replay_id)
              cs::log::warn("incomplete_replay_live",
                            {{"db", s.worker.db_path},
                             {"outcome", "this file is a replay that finished with events missing (--allow-incomplete: "
                                         "its log did not start at offset 0, or the topic is compacted); its rows "
                                         "lack them, now as the live file"}});
          },
          [&s](int attempt, const cs::store::db_error& e, bool give_up) {
            if (!give_up)  // the last is db_open_failed, below
              cs::log::warn("db_retry", {{"stage", "open"}, {"attempt", attempt}, {"db", s.worker.db_path},
                                         {"error", e.what()}});
          });
    } catch (const cs::store::open_error& e) {
      throw cs::config::usage_error(e.what());
    } catch (const cs::store::db_error& e) {
      return cs::config::report_exit("clerk-sync-consumer", "db_open_failed", e.what(), cs::consume::exit_db_failed);
    }
  }

  // Signals are taken by this thread only (sigtimedwait), so the workers
  // never run a handler and need no global flag.
  sigset_t sigs;
  sigemptyset(&sigs);
  sigaddset(&sigs, SIGTERM);
  sigaddset(&sigs, SIGINT);
  sigaddset(&sigs, SIGHUP);
  pthread_sigmask(SIG_BLOCK, &sigs, nullptr);

  std::atomic<bool> stop{false};
  std::mutex write_turn;
  std::vector<std::unique_ptr<cs::consume::loop_state>> states;
  std::vector<std::thread> threads;
  try {
    for (const auto k : kinds) {
      auto cfg = s.worker;
      cfg.projection = k;
      cfg.write_turn = &write_turn;
      // The prefetch: librdkafka 2.0.2 stops fetching once the queue holds
      // queued.max.messages.kbytes and would look again only after up to a
      // second; kafka::consumer wakes it as soon as the queue is half empty
      // (fetch_nudge), so the queue needs to hold only what the loop drains
      // between two fetches. One budget of 52 MiB is shared by the
      // projections of a process, at most 40 MiB for one: 13 MiB each for four.
      // A fetch response stays in memory while any of its messages waits, and
      // the queue's bound is checked before a fetch, not during it, so at the
      // default of 1 MiB a partition a consumer of six partitions holds up to
      // 6 MiB beyond its queue: 256 KiB a partition took 27 MiB off the peak
      // RSS of four projections at the same speed. librdkafka raises the size
      // for a partition whose next record batch is larger. --kafka-property
      // overrides both (applied later).
      const auto prefetch_kb = std::min(40 * 1024, 52 * 1024 / static_cast<int>(kinds.size()));
      cfg.kafka.properties.insert(cfg.kafka.properties.begin(),
                                  {{"queued.max.messages.kbytes", std::to_string(prefetch_kb)},
                                   {"max.partition.fetch.bytes", std::to_string(256 * 1024)}});
      states.push_back(std::make_unique<cs::consume::loop_state>());
      auto* state = states.back().get();
      threads.emplace_back([cfg, state, &stop] { (void)cs::consume::run_loop(cfg, stop, *state); });
    }
  } catch (...) {
    // No thread or memory to be had (TasksMax, ENOMEM): the loops started
    // stop and are joined, so that this is one unexpected_error line and
    // exit 1, not std::terminate for a joinable thread, which aborts
    // without one.
    stop = true;
    for (auto& t : threads) t.join();
    throw;
  }

  const auto watchdog = cs::systemd::watchdog_interval();
  bool ready = false;
  auto last_ping = std::chrono::steady_clock::now();
  // A loop waiting for a swap-in's lock has not subscribed, so READY=1
  // waits with it, and a swap of a large file can outlast the start timeout:
  // the start is extended, as for the open, for as long as one waits.
  std::optional<std::chrono::steady_clock::time_point> last_extend;
  const timespec tick{0, 100'000'000};
  while (true) {
    const int sig = sigtimedwait(&sigs, nullptr, &tick);
    if (sig == SIGTERM || sig == SIGINT) {
      cs::log::info("stopping", {{"signal", sig == SIGTERM ? "SIGTERM" : "SIGINT"}});
      break;
    }
    if (sig == SIGHUP) cs::systemd::hangup_ignored();
    if (std::any_of(states.begin(), states.end(), [](const auto& st) { return st->done.load(); })) break;
    if (!ready && std::all_of(states.begin(), states.end(), [](const auto& st) { return st->subscribed.load(); })) {
      ready = true;
      cs::systemd::notify_ready();
      cs::log::info("ready", {{"projections", s.projections}, {"topic", s.worker.topic}});
    }
    if (!ready && std::any_of(states.begin(), states.end(), [](const auto& st) { return st->swap_waiting.load(); }) &&
        (!last_extend || std::chrono::steady_clock::now() - *last_extend >= 10s)) {
      cs::systemd::notify_extend_timeout(30s);
      last_extend = std::chrono::steady_clock::now();
    }
    // Ping only while every worker's loop is turning: a stuck worker should
    // let systemd's watchdog restart us.
    if (watchdog && std::chrono::steady_clock::now() - last_ping >= *watchdog) {
      const auto now = cs::consume::steady_ms();
      const auto limit = std::chrono::duration_cast<std::chrono::milliseconds>(*watchdog).count() * 2 +
                         s.retry_ms + busy_waits * s.busy_timeout_ms;
      if (std::all_of(states.begin(), states.end(),
                      [&](const auto& st) { return st->heartbeat_ms.load() == 0 || now - st->heartbeat_ms.load() < limit; })) {
        cs::systemd::notify_watchdog();
        last_ping = std::chrono::steady_clock::now();
      }
    }
  }
  cs::systemd::notify_stopping();
  stop = true;
  for (auto& t : threads) t.join();
  // The most severe wins, except that a bad setting (2) is reported as such.
  int code = 0;
  for (const auto& st : states) code = std::max(code, st->exit_code.load());
  for (const auto& st : states)
    if (st->exit_code.load() == cs::consume::exit_bad_kafka_config) code = cs::consume::exit_bad_kafka_config;
  // What the rate limiters hold back goes out before the last line.
  cs::log::rate_limiter::drain_all();
  if (code != cs::consume::exit_bad_kafka_config) cs::log::info("stopped", {{"exit_code", code}});
  return code;
}

}  // namespace

int main(int argc, char** argv) {
  return cs::config::run_main("clerk-sync-consumer", [&] { return run(argc, argv); });
}
