// The database subcommands: replay (backfill into a new file), compare,
// swap-in (a rebuilt projection into the live file), status (lag, rows, last
// apply; exit 1 past --max-lag, for a stored offset outside the log, or when
// the file stores a projection's offsets only for other topics) and
// dead-letters.
#include <signal.h>

#include <algorithm>
#include <cstdio>
#include <functional>
#include <iterator>
#include <limits>
#include <filesystem>
#include <ctime>
#include <memory>
#include <set>
#include <unordered_set>

#include "commands.hpp"
#include "config/options.hpp"
#include "http/options.hpp"
#include "log/log.hpp"
#include "ops/compare.hpp"
#include "ops/replay.hpp"
#include "ops/status.hpp"
#include "ops/swap.hpp"
#include "projection/applier.hpp"
#include "store/database.hpp"

namespace clerk_sync::ctl {
namespace {

// The one rule for --projection, in every command: a name, a comma list or
// all. Empty is refused, as is a list with an empty name: read as "all", an
// unset "$PROJ" in a script re-drove every projection's dead letters.
std::vector<projection::kind> kinds_of(const std::string& list) {
  if (list == "all") return {std::begin(projection::all_kinds), std::end(projection::all_kinds)};
  constexpr std::string_view known = " (users, referrals, balances, sessions, a comma list, or all)";
  std::string bad;
  const auto kinds = projection::parse_kinds(list, &bad);
  if (kinds && !kinds->empty()) return *kinds;
  if (!bad.empty()) throw config::usage_error("unknown projection '" + bad + "'" + std::string(known));
  if (list.find_first_not_of(" ,") == std::string::npos)
    throw config::usage_error("no projection named" + std::string(known));
  throw config::usage_error("'" + list + "' names an empty one" + std::string(known));
}

// Every --projection is added here, so that each command refuses what
// kinds_of refuses while parsing, before it opens a file or asks Kafka.
CLI::Option* add_projection_option(CLI::App& cmd, std::string& into, const std::string& help) {
  return cmd.add_option("--projection", into, help)
      ->check(CLI::Validator(
          [](const std::string& list) -> std::string {
            try {
              (void)kinds_of(list);
              return {};
            } catch (const config::usage_error& e) {
              return e.what();
            }
          },
          "", "projections"));
}

std::string iso_time(std::optional<std::int64_t> ms) {
  if (!ms) return "never";
  const std::time_t t = static_cast<std::time_t>(*ms / 1000);
  std::tm tm{};
  ::gmtime_r(&t, &tm);
  char buf[32];
  std::strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%SZ", &tm);
  return buf;
}

// status and dead-letters inspect a database the consumers made: a wrong
// path must not quietly create an empty one.
void require_existing(const std::string& path) {
  std::error_code ec;
  if (!std::filesystem::exists(path, ec)) throw config::usage_error("no database at " + path);
  if (std::filesystem::is_directory(path, ec)) throw config::usage_error(path + " is a directory, not a database file");
}

// For a command that writes to a live file: another process (a consumer
// started after an upgrade, another ctl) may be migrating it, and the open
// waits for that however long it takes. Said as the consumers say it, so
// that the wait is not a silent hang.
std::function<void(const std::string&)> log_migration_wait(const std::string& db) {
  return [db](const std::string& lock) { log::info("migration_wait", {{"db", db}, {"lock", lock}}); };
}

// Database failures are reported as one line and exit 1, like Kafka's.
template <class F>
int guarded(F&& body) {
  try {
    return body();
  } catch (const store::open_error& e) {
    return config::report_exit("clerk-sync-ctl", "failed", e.what(), exit_failed);
  } catch (const store::db_error& e) {
    return config::report_exit("clerk-sync-ctl", "failed", e.what(), exit_failed);
  } catch (const ops::replay_error& e) {
    return config::report_exit("clerk-sync-ctl", "failed", e.what(), exit_failed);
  } catch (const ops::compare_error& e) {
    return config::report_exit("clerk-sync-ctl", "failed", e.what(), exit_failed);
  } catch (const ops::swap_error& e) {
    return config::report_exit("clerk-sync-ctl", "failed", e.what(), exit_failed);
  }
}

// Ctrl-C, SIGTERM and SIGHUP (an ssh hang-up) stop a replay at its next
// poll or batch, which then removes its partial file. Blocked from here to
// exit, before librdkafka starts its threads, and taken with sigtimedwait
// by the replay's stop check: no handler, no global, and a signal during
// the clean-up, or after the replay caught up, cannot cut it short. One
// the caller ignores (nohup, a background job) stays ignored. SIGPIPE is
// blocked too: a log reader gone with the hang-up must not kill the replay
// before its clean-up (writes to it fail instead).
class stop_signals {
 public:
  stop_signals() {
    sigemptyset(&set_);
    for (const int sig : {SIGINT, SIGTERM, SIGHUP}) {
      struct sigaction current {};
      // A blocked signal is queued even when ignored: leave ignored ones out.
      if (::sigaction(sig, nullptr, &current) == 0 && current.sa_handler != SIG_IGN) sigaddset(&set_, sig);
    }
    sigset_t blocked = set_;
    sigaddset(&blocked, SIGPIPE);
    ::pthread_sigmask(SIG_BLOCK, &blocked, nullptr);
  }
  // The first of those signals received so far, 0 for none; never waits.
  int received() {
    if (received_ == 0) {
      const timespec now{};
      if (const int sig = ::sigtimedwait(&set_, nullptr, &now); sig > 0) received_ = sig;
    }
    return received_;
  }

 private:
  sigset_t set_{};
  int received_ = 0;
};

struct replay_args {
  kafka::client_config kafka;
  std::string topic = "clerk.events";
  std::string projections;
  std::string db;
  std::size_t batch = 2000;
  int stall_timeout_ms = 60'000;
  bool allow_incomplete = false;
};

// A --db for a new file, refused before Kafka is asked: the replay would
// read the whole topic first and fail only at the final rename (an empty
// --db wrote ./.partial, and left ./.partial.lock).
void require_new_file_path(const std::string& db) {
  namespace fs = std::filesystem;
  if (db.empty()) throw config::usage_error("--db is empty: name the new database file");
  std::error_code ec;
  if (fs::is_directory(db, ec)) throw config::usage_error(db + " is a directory: name the new database file");
  const fs::path parent = fs::path(db).parent_path();
  if (parent.empty()) return;  // the current directory
  const bool folder = fs::is_directory(parent, ec);
  if (ec && ec != std::errc::no_such_file_or_directory && ec != std::errc::not_a_directory)
    throw config::usage_error("--db " + db + ": cannot look at its directory " + parent.string() + " (" +
                              ec.message() + ")");
  if (!folder)
    throw config::usage_error("--db " + db + ": no directory " + parent.string() +
                              " (replay makes the file, not its directory)");
}

int replay(const replay_args& a) {
  require_new_file_path(a.db);
  ops::replay_options opts;
  opts.topic = a.topic;
  opts.projections = kinds_of(a.projections);
  opts.db_path = a.db;
  opts.batch_size = a.batch;
  opts.stall_timeout = std::chrono::milliseconds(a.stall_timeout_ms);
  opts.allow_incomplete = a.allow_incomplete;
  stop_signals signals;
  opts.stop_requested = [&] { return signals.received() != 0; };
  return guarded([&] {
    ops::replay_result r;
    try {
      r = ops::replay(a.kafka, opts, [&](const ops::replay_progress& p) {
        log::info("replay progress", {{"projection", a.projections}, {"read", p.read}, {"total", p.total},
                                      {"lag", p.lag}, {"dead_letters", p.dead_letters},
                                      {"ms", static_cast<std::int64_t>(p.elapsed.count())}});
      });
    } catch (const ops::replay_stopped& e) {
      // The work did not finish: exit 1, as for any replay that does not.
      const int sig = signals.received();
      const auto ms = static_cast<std::int64_t>(e.last.elapsed.count());
      if (e.left_behind.empty())
        log::warn("replay stopped", {{"projection", a.projections}, {"db", a.db}, {"signal", sig},
                                     {"read", e.last.read}, {"total", e.last.total}, {"ms", ms},
                                     {"outcome", e.wrote ? "partial file removed" : "nothing written"},
                                     {"exit_code", exit_failed}});
      else
        log::error("replay stopped", {{"projection", a.projections}, {"db", a.db}, {"signal", sig},
                                      {"read", e.last.read}, {"total", e.last.total}, {"ms", ms},
                                      {"outcome", "partial file not removed"}, {"error", e.what()},
                                      {"exit_code", exit_failed}});
      std::fflush(stderr);
      return exit_failed;
    }
    for (const auto& w : r.warnings) log::warn("replay incomplete", {{"why", w}});
    for (const auto& w : r.unchecked) log::warn("replay unchecked", {{"why", w}});
    log::info("replay caught up", {{"projection", a.projections}, {"db", a.db}, {"read", r.last.read},
                                   {"dead_letters", r.last.dead_letters}, {"incomplete", r.incomplete},
                                   {"ms", static_cast<std::int64_t>(r.last.elapsed.count())}});
    return exit_ok;
  });
}

struct compare_args {
  std::string projections;
  std::string a, b;
  std::size_t show = 5;
};

int compare(const compare_args& c) {
  // A path mistyped is a usage error (exit 2), not a difference (exit 1).
  require_existing(c.a);
  require_existing(c.b);
  return guarded([&] {
    int code = exit_ok;
    for (const auto k : kinds_of(c.projections)) {
      const auto r = ops::compare_projection(c.a, c.b, k, c.show);
      std::printf("%s: %s (A %lld rows, B %lld rows, %lld differences)\n", r.table.c_str(),
                  r.equal() ? "identical" : "DIFFERENT", static_cast<long long>(r.rows_a),
                  static_cast<long long>(r.rows_b), static_cast<long long>(r.differences));
      for (const auto& line : r.first) std::printf("  %s\n", line.c_str());
      if (!r.equal()) code = exit_failed;
    }
    return code;
  });
}

struct swap_args {
  kafka::client_config kafka;
  std::string topic = "clerk.events";
  std::string projections;
  std::string from;
  std::string db;
  int timeout_ms = 15'000;
  bool skip_log_check = false;
  bool live_log_gone = false;
  bool accept_incomplete = false;
};

// Both files' offsets of the topic against its log on the cluster this
// shell reaches, as the consumers will find them once started: each inside
// the log, the record before it the one applied last.
// - The rebuilt file's: a replay of another cluster, or of the topic before
//   it was recreated, would otherwise replace the live rows, and only the
//   consumer's restart would tell (exit 5), auth answering from the
//   foreign rows meanwhile.
// - The live file's: when they are not of this log either, this shell may
//   reach another cluster than the consumers (no environment file sourced,
//   a development broker on the default address), where the replay was
//   made too. Or the topic was recreated and its consumers stopped with
//   exit 5, the case a swap-in repairs: --live-log-gone says so.
void check_against_log(const swap_args& a, const std::vector<projection::kind>& kinds) {
  const std::string nothing = "; nothing was swapped in";
  const std::string skip = " (--skip-log-check swaps in without this check)";
  const std::string at = " at " + a.kafka.brokers;
  for (const bool live : {false, true}) {
    if (live && a.live_log_gone) continue;
    const auto& file = live ? a.db : a.from;
    const std::string why = live ? ": the consumers' offsets are not of this log, so this shell may reach another "
                                   "cluster than they do (source the environment file: KAFKA_BROKERS), or the topic "
                                   "was recreated (its consumers stopped with exit 5; then --live-log-gone)"
                                 : ": replayed from another cluster, or the topic was recreated since";
    std::vector<ops::projection_report> reports;
    try {
      reports = ops::collect_status(a.kafka, a.topic, file, kinds, std::chrono::milliseconds(a.timeout_ms));
    } catch (const kafka::fatal_error& e) {
      throw ops::swap_error("could not check the offsets of " + file + " against topic " + a.topic + at + ": " +
                            e.what() + nothing + skip);
    }
    for (const auto& r : reports) {
      if (!r.unknown_partitions.empty())
        throw ops::swap_error(file + " stores an offset of " + a.topic + "/" +
                              std::to_string(r.unknown_partitions.front()) + ", a partition the topic" + at +
                              " does not have" + why + nothing);
      for (const auto& p : r.partitions) {
        const auto where = std::string(projection::name(r.db.projection)) + " of " + a.topic + "/" +
                           std::to_string(p.partition) + " in " + file;
        // Nothing to compare where the file stores no offset.
        if (!p.watermarks_failed.empty() && p.stored)
          throw ops::swap_error("could not check the offsets of " + where + " against the cluster" + at + ": " +
                                p.watermarks_failed + nothing + skip);
        // Deleted since: a replay to make again; for the live file, records
        // its consumers had not read (a development topic starts at 0, so
        // not a sign of another cluster).
        if (p.out_of_range && p.stored.value_or(0) < p.low)
          throw ops::swap_error("the offset " + std::to_string(p.stored.value_or(0)) + " of " + where +
                                " is below the log's start " + std::to_string(p.low) + at +
                                (live ? ": records its consumers had not read were deleted (they stopped with exit "
                                        "5); this swap-in repairs that: --live-log-gone"
                                      : ": records were deleted since the replay; replay again") +
                                nothing);
        if (p.out_of_range)
          throw ops::swap_error("the offset " + std::to_string(p.stored.value_or(0)) + " of " + where +
                                " is outside the log [" + std::to_string(p.low) + ", " + std::to_string(p.high) +
                                "]" + at + why + nothing);
        if (p.recreated_found_svix_id)
          throw ops::swap_error("the record at offset " + std::to_string(p.compared_offset) + " of " + a.topic + "/" +
                                std::to_string(p.partition) + at + " is " + *p.recreated_found_svix_id + ", not " +
                                p.applied_svix_id + " which " + file + " applied" + why + nothing);
        if (!p.resume_unchecked.empty())
          throw ops::swap_error("could not check the record before the offset of " + where + at + ": " +
                                p.resume_unchecked + nothing + skip);
      }
    }
  }
}

int swap_in(const swap_args& a) {
  require_existing(a.from);
  require_existing(a.db);
  const auto kinds = kinds_of(a.projections);
  return guarded([&] {
    const auto check_log = [&] {
      if (!a.skip_log_check) check_against_log(a, kinds);
    };
    const auto result = ops::swap_in(a.from, a.db, kinds, a.topic, a.accept_incomplete, log_migration_wait(a.db), check_log);
    if (result.incomplete) {
      std::string names;  // as asked: "all" named
      for (const auto& s : result.projections) names += (names.empty() ? "" : ",") + std::string(projection::name(s.projection));
      log::warn("incomplete replay swapped in",
                {{"projections", names},
                 {"from", a.from},
                 {"outcome", "--accept-incomplete: the replay finished with events missing, and the live rows of "
                             "those events went with the swap"}});
    }
    for (const auto& s : result.projections) {
      log::info("swapped in", {{"projection", projection::name(s.projection)},
                               {"rows", s.rows},
                               {"ledger_rows", s.ledger_rows},
                               {"offsets", s.offsets},
                               {"dead_letters", s.dead_letters},
                               {"kept_dead_letters", s.kept_dead_letters},
                               {"rewound", s.rewound},
                               {"from", a.from},
                               {"db", a.db}});
      if (s.kept_redriven_dead_letters > 0)
        log::warn("resolved dead letters not replayed",
                  {{"projection", projection::name(s.projection)},
                   {"letters", s.kept_redriven_dead_letters},
                   {"outcome", "re-driven letters whose events the replay did not meet (the log no longer held "
                               "them): their events are in the rows no more; their payloads stay in dead_letters "
                               "(dead-letters list --all names them)"}});
      if (s.dismissed_applied > 0)
        log::warn("dismissed events applied by the replay",
                  {{"projection", projection::name(s.projection)},
                   {"letters", s.dismissed_applied},
                   {"outcome", "events dismissed from the live file mapped in the replay and are in the rows now; "
                               "their letters went with the swap"}});
      if (s.rewound > 0)
        log::warn("swapped in behind the live file",
                  {{"projection", projection::name(s.projection)},
                   {"records", s.rewound},
                   {"outcome", "the live offsets were past the replay's by these records: until its consumer has "
                               "read them again, the projection answers as of the replay (bans, deletions and "
                               "revocations since undone); start it now"}});
    }
    return exit_ok;
  });
}

struct status_args {
  kafka::client_config kafka;
  http::receiver_options limits;  // --body-limit and --header-limit only
  std::string topic = "clerk.events";
  std::string projections = "all";
  std::string db;
  std::int64_t max_lag = -1;
  std::int64_t max_dead_letters = -1;
  int timeout_ms = 15'000;
};

int status(const status_args& a) {
  http::validate_record_limits(a.limits);
  require_existing(a.db);
  return guarded([&] {
    const auto reports = ops::collect_status(a.kafka, a.topic, a.db, kinds_of(a.projections),
                                             std::chrono::milliseconds(a.timeout_ms));
    int code = exit_ok;
    // A fact of the topic, not of a projection: one line per partition.
    std::set<std::int32_t> unknown;
    std::printf("%-10s %10s %10s %8s  %s\n", "projection", "lag", "rows", "dead", "last applied");
    for (const auto& r : reports) {
      const auto name = std::string(projection::name(r.db.projection));
      // A partition's lag unknown: the sum is only a floor ("5+").
      const bool partial = std::any_of(r.partitions.begin(), r.partitions.end(),
                                       [](const auto& p) { return !p.watermarks_failed.empty(); });
      const auto lag = std::to_string(r.lag) + (partial ? "+" : "");
      std::printf("%-10s %10s %10lld %8lld  %s\n", name.c_str(), lag.c_str(), static_cast<long long>(r.db.rows),
                  static_cast<long long>(r.db.pending_dead_letters), iso_time(r.db.last_applied_at).c_str());
      for (const auto& p : r.partitions) {
        if (!p.watermarks_failed.empty()) {
          // Whatever --max-lag says: a partial answer must not pass a monitor.
          std::printf("  partition %d: stored %s, watermarks UNKNOWN, lag unknown: %s\n", p.partition,
                      p.stored ? std::to_string(*p.stored).c_str() : "none", p.watermarks_failed.c_str());
          if (unknown.insert(p.partition).second)
            log::error("watermarks_unknown",
                       {{"topic", a.topic}, {"partition", p.partition}, {"reason", p.watermarks_failed}});
          code = exit_failed;
          continue;
        }
        const auto passed =
            p.passed_over ? " (then " + std::to_string(p.passed_over) + " offsets of transaction markers or aborted records)"
                          : std::string();
        // No stored offset: its consumer starts at the log's first record,
        // the events before it deleted (its start_incomplete warning).
        const bool trimmed_start = !p.stored && p.low > 0;
        std::printf("  partition %d: stored %s, watermarks [%lld, %lld), lag %lld%s%s\n", p.partition,
                    p.stored ? std::to_string(*p.stored).c_str() : "none", static_cast<long long>(p.low),
                    static_cast<long long>(p.high), static_cast<long long>(p.lag), passed.c_str(),
                    p.out_of_range              ? ", OUT OF RANGE: the consumer stops here with exit 5"
                    : p.recreated_found_svix_id ? ", RECREATED: a record the consumer applied is another event "
                                                  "now; the consumer stops here with exit 5"
                    : trimmed_start             ? ", TRIMMED: the events before the log's start were deleted; "
                                                  "this projection misses them"
                                                : "");
        if (trimmed_start)
          log::warn("start_incomplete", {{"projection", name},
                                         {"partition", p.partition},
                                         {"log_start", p.low},
                                         {"outcome", "no stored offset, and the events before log_start were "
                                                     "deleted: this projection will miss them"}});
        if (!p.resume_unchecked.empty())
          log::warn("resume_unchecked", {{"projection", name},
                                         {"partition", p.partition},
                                         {"offset", *p.stored},
                                         {"reason", p.resume_unchecked}});
        if (p.recreated_found_svix_id) {
          log::error("topic_recreated", {{"projection", name},
                                         {"topic", a.topic},
                                         {"partition", p.partition},
                                         {"offset", p.compared_offset},
                                         {"applied_svix_id", p.applied_svix_id},
                                         {"found_svix_id", *p.recreated_found_svix_id}});
          code = exit_failed;
        }
        if (p.out_of_range) {
          // Whatever --max-lag says: this projection is not moving.
          log::error("offset_out_of_range", {{"projection", name},
                                             {"partition", p.partition},
                                             {"offset", *p.stored},
                                             {"log_start", p.low},
                                             {"log_end", p.high}});
          code = exit_failed;
        }
      }
      if (!r.other_topics.empty()) {
        // The lag above is of a topic this projection never read: its 0
        // would pass any monitor given a stray --topic.
        std::string listed;
        for (const auto& t : r.other_topics) listed += (listed.empty() ? "" : ",") + t;
        std::printf("  WRONG TOPIC: no offsets stored for %s; this file's %s offsets are for %s\n", a.topic.c_str(),
                    name.c_str(), listed.c_str());
        log::error("topic_mismatch", {{"projection", name}, {"topic", a.topic}, {"stored_topics", listed}});
        code = exit_failed;
      }
      // Offsets of partitions the topic does not have: another cluster's
      // topic, or one recreated with fewer partitions.
      for (const auto p : r.unknown_partitions) {
        std::printf("  partition %d: stored, but %s has no such partition\n", p, a.topic.c_str());
        log::error("partition_unknown", {{"projection", name}, {"topic", a.topic}, {"partition", p}});
        code = exit_failed;
      }
      if (a.max_lag >= 0 && r.lag > a.max_lag) {
        log::warn("lag over threshold", {{"projection", name}, {"lag", r.lag}, {"max_lag", a.max_lag}});
        code = exit_failed;
      }
      // A consumer that dead-letters what it reads keeps its lag at zero.
      if (a.max_dead_letters >= 0 && r.db.pending_dead_letters > a.max_dead_letters) {
        log::warn("dead letters over threshold", {{"projection", name},
                                                  {"dead_letters", r.db.pending_dead_letters},
                                                  {"max_dead_letters", a.max_dead_letters}});
        code = exit_failed;
      }
    }
    // The topic's own settings, which nothing running checks: one created
    // by a broker's auto-creation or by hand (one copy, a week's retention)
    // loses events silently. Warnings only, as `topic ensure` without --strict.
    try {
      (void)log_topic_warnings(a.topic, ops::check_topic(a.kafka, a.topic, std::chrono::milliseconds(a.timeout_ms),
                                                         http::max_message_bytes(a.limits)));
    } catch (const kafka::fatal_error& e) {
      // A monitoring principal may not describe configs: said, not failed.
      log::warn("topic settings unknown", {{"topic", a.topic}, {"error", e.what()}});
    }
    return code;
  });
}

struct dead_letter_args {
  std::string db;
  std::string projection;  // empty: not given (the option refuses '')
  bool all = false;
  std::vector<std::int64_t> ids;
  std::string note;  // dismiss --reason
};

// The dead letters of every projection named by --projection (a comma list
// or all; not given: all), oldest first.
std::vector<projection::dead_letter> selected_dead_letters(store::database& db, const std::string& projections,
                                                           bool include_resolved) {
  if (projections.empty() || projections == "all") return projection::list_dead_letters(db, {}, include_resolved);
  std::vector<projection::dead_letter> out;
  for (const auto k : kinds_of(projections)) {
    auto some = projection::list_dead_letters(db, k, include_resolved);
    std::move(some.begin(), some.end(), std::back_inserter(out));
  }
  std::sort(out.begin(), out.end(), [](const auto& x, const auto& y) { return x.id < y.id; });
  return out;
}

int dead_letters_list(const dead_letter_args& a) {
  require_existing(a.db);
  return guarded([&] {
    store::database db(a.db, {.read_only = true});
    const auto letters = selected_dead_letters(db, a.projection, a.all);
    // The svix-id, type and reason came with an event: escaped and cut as
    // log fields are, so that one cannot forge lines on the terminal.
    const auto shown = [](const std::string& v) { return log::escape(log::format::logfmt, log::cut(v, 500)); };
    for (const auto& d : letters)
      std::printf("%lld %s %s/%d@%lld svix_id=%s type=%s at=%s%s reason=%s\n", static_cast<long long>(d.id),
                  shown(d.projection).c_str(), shown(d.topic).c_str(), d.partition,
                  static_cast<long long>(d.offset), shown(d.svix_id).c_str(), shown(d.type).c_str(),
                  iso_time(d.created_at).c_str(), d.dismissed_at ? " dismissed" : d.resolved_at ? " resolved" : "",
                  shown(d.reason).c_str());
    log::info("dead letters", {{"count", letters.size()}, {"resolved_included", a.all}});
    return exit_ok;
  });
}

// The file a dead-letters command writes: a clerk-sync one (another file is
// refused unchanged), migrated first, after a migration another process
// runs; its WAL files kept for the auth service, as the consumers keep them.
store::database open_for_dead_letters(const std::string& path) {
  return store::database(path, {.must_be = store::open_options::existing::clerk_sync,
                                .on_migration_wait = log_migration_wait(path)});
}

void say_no_pending(std::int64_t id) {
  log::error("no pending dead letter", {{"id", id}, {"outcome", "no such id, or resolved already"}});
}

int dead_letters_retry(const dead_letter_args& a) {
  require_existing(a.db);
  if (!a.projection.empty() && !a.all)
    throw config::usage_error("--projection selects with --all; ids name dead letters of any projection");
  // Before the open, which would migrate the file.
  if (a.ids.empty() && !a.all) throw config::usage_error("give dead letter ids, or --all");
  return guarded([&] {
    auto db = open_for_dead_letters(a.db);
    // Each id once: named twice (or named and selected by --all), its second
    // turn would find it resolved by the first and fail the run.
    std::vector<std::int64_t> ids;
    std::unordered_set<std::int64_t> seen;  // --all may select every letter of a flood
    const auto add = [&](std::int64_t id) {
      if (seen.insert(id).second) ids.push_back(id);
    };
    for (const auto id : a.ids) add(id);
    if (a.all)
      for (const auto& d : selected_dead_letters(db, a.projection, false)) add(d.id);
    if (ids.empty()) {
      log::info("no pending dead letters");  // --all, and nothing to re-drive: done
      return exit_ok;
    }
    int code = exit_ok;
    for (const auto id : ids) {
      const auto r = projection::redrive_dead_letter(db, id);
      if (!r.found) {
        say_no_pending(id);
        code = exit_failed;
      } else if (r.result == projection::outcome::dead_letter) {
        log::warn("dead letter still fails", {{"id", id},
                                              {"projection", r.projection},
                                              {"svix_id", r.svix_id},
                                              {"type", r.type},
                                              {"reason", r.detail}});
        code = exit_failed;
      } else {
        // A conflict the apply met (a referrer kept, a code waiting) is a
        // warning, as the consumer's line for it is.
        std::vector<log::field> f{{"id", id},
                                  {"projection", r.projection},
                                  {"svix_id", r.svix_id},
                                  {"type", r.type},
                                  {"outcome", projection::name(r.result)}};
        if (!r.detail.empty()) f.emplace_back("detail", r.detail);
        log::write(r.detail.empty() ? log::level::info : log::level::warn, "dead letter re-driven", f);
      }
    }
    return code;
  });
}

// An event the operator decides not to apply (a record another tool wrote,
// without a svix-id, that no fix will map): resolved without its rows, so
// that retry --all and status --max-dead-letters stop counting it.
int dead_letters_dismiss(const dead_letter_args& a) {
  require_existing(a.db);
  if (a.note.find_first_not_of(" \t") == std::string::npos)
    throw config::usage_error("--reason must say why the events are dismissed");
  return guarded([&] {
    auto db = open_for_dead_letters(a.db);
    int code = exit_ok;
    std::unordered_set<std::int64_t> seen;
    for (const auto id : a.ids) {
      if (!seen.insert(id).second) continue;
      const auto d = projection::dismiss_dead_letter(db, id, a.note);
      if (!d) {
        say_no_pending(id);
        code = exit_failed;
        continue;
      }
      // At warn: an event left out of the projection, by hand.
      log::warn("dead letter dismissed", {{"id", id},
                                          {"projection", d->projection},
                                          {"svix_id", d->svix_id},
                                          {"type", d->type},
                                          {"reason", a.note}});
    }
    return code;
  });
}

}  // namespace

void add_db_commands(CLI::App& app, runner& run) {
  auto* rp = app.add_subcommand(
      "replay",
      "Rebuild projections from offset 0 of the topic into a NEW database file (written as <db>.partial, "
      "renamed once complete); exits 0 once caught up with the high watermarks taken at start, 1 when the "
      "rebuild cannot be complete or is stopped (SIGINT, SIGTERM, SIGHUP: the partial file is removed)");
  auto r = std::make_shared<replay_args>();
  config::add_kafka_options(*rp, r->kafka);
  rp->add_option("--topic", r->topic, "Events topic")
      ->check(config::topic_name())
      ->envname("CLERK_SYNC_TOPIC")
      ->capture_default_str();
  add_projection_option(*rp, r->projections, "users, referrals, balances, sessions, a comma list, or all")
      ->required();
  rp->add_option("--db", r->db, "The new database file (must not exist or be empty)")->required();
  rp->add_option("--batch", r->batch, "Messages per transaction")->check(CLI::Range(1, 100'000))->capture_default_str();
  rp->add_option("--stall-timeout-ms", r->stall_timeout_ms, "Give up when nothing read moves the replay on for this long (events arriving since it began do not count)")
      ->check(CLI::Range(1'000, 86'400'000))
      ->capture_default_str();
  rp->add_flag("--allow-incomplete", r->allow_incomplete,
               "Accept a rebuild that misses events deleted from the log (retention, deleted records)");
  rp->callback([r, &run] { run = [r] { return replay(*r); }; });

  auto* cmp = app.add_subcommand(
      "compare", "Compare a projection's table in two database files row for row; exit 1 when they differ");
  auto c = std::make_shared<compare_args>();
  add_projection_option(*cmp, c->projections, "users, referrals, balances, sessions, a comma list, or all")
      ->required();
  cmp->add_option("a", c->a, "First database file")->required();
  cmp->add_option("b", c->b, "Second database file")->required();
  cmp->add_option("--show", c->show, "Differing rows to print")->capture_default_str();
  cmp->callback([c, &run] { run = [c] { return compare(*c); }; });

  auto* sw = app.add_subcommand(
      "swap-in",
      "Put projections rebuilt by replay into the live database in one transaction: their rows, ledger, stored "
      "offsets and dead letters replace the live file's; refused while a consumer of them runs on it");
  auto w = std::make_shared<swap_args>();
  add_projection_option(*sw, w->projections, "users, referrals, balances, sessions, a comma list, or all")
      ->required();
  sw->add_option("--from", w->from, "The file replay wrote")->required();
  sw->add_option("--db", w->db, "The live database file")->envname("CLERK_SYNC_DB")->required();
  config::add_kafka_options(*sw, w->kafka);
  sw->add_option("--topic", w->topic, "Events topic the consumers read, which the replay must be of")
      ->check(config::topic_name())
      ->envname("CLERK_SYNC_TOPIC")
      ->capture_default_str();
  sw->add_option("--timeout-ms", w->timeout_ms, "Timeout of each Kafka request of the log check")
      ->check(CLI::Range(1'000, 600'000))
      ->capture_default_str();
  sw->add_flag("--skip-log-check", w->skip_log_check,
               "Swap in without checking the two files' offsets against the cluster's log (Kafka unreachable)");
  sw->add_flag("--live-log-gone", w->live_log_gone,
               "The live file's offsets are of a log that is gone (the topic recreated, or records deleted before "
               "its consumers read them: they stopped with exit 5): check the rebuilt file's alone");
  sw->add_flag("--accept-incomplete", w->accept_incomplete,
               "Swap in a file whose replay finished with events missing (replay --allow-incomplete): the live "
               "rows of those events go too");
  sw->callback([w, &run] { run = [w] { return swap_in(*w); }; });

  auto* st = app.add_subcommand(
      "status",
      "Per projection: lag (stored offsets against high watermarks), rows, dead letters, last apply; exit 1 when "
      "a stored offset is outside the log, when a partition's watermarks cannot be read (the others are still "
      "shown), or when the file stores a projection's offsets only for other topics "
      "(a wrong --topic)");
  auto s = std::make_shared<status_args>();
  config::add_kafka_options(*st, s->kafka);
  st->add_option("--topic", s->topic, "Events topic")
      ->check(config::topic_name())
      ->envname("CLERK_SYNC_TOPIC")
      ->capture_default_str();
  st->add_option("--db", s->db, "Database file")->envname("CLERK_SYNC_DB")->required();
  add_projection_option(*st, s->projections, "Projections to show (comma list or all)")->capture_default_str();
  // Not negative: unset is "no check", and a monitor given -5 would never alarm.
  // (CLI::NonNegativeNumber's message spelt out the largest double.)
  const auto not_negative = CLI::Range(std::int64_t{0}, std::numeric_limits<std::int64_t>::max());
  st->add_option("--max-lag", s->max_lag, "Exit 1 when a projection's lag exceeds N messages (for monitors)")
      ->check(not_negative);
  st->add_option("--max-dead-letters", s->max_dead_letters,
                 "Exit 1 when a projection holds more than N pending dead letters (for monitors)")
      ->check(not_negative);
  http::add_record_limit_options(*st, s->limits);
  st->add_option("--timeout-ms", s->timeout_ms, "Kafka request timeout")
      ->check(CLI::Range(100, 600'000))
      ->capture_default_str();
  st->callback([s, &run] { run = [s] { return status(*s); }; });

  auto* dl = app.add_subcommand("dead-letters", "List, re-drive or dismiss events that could not be applied");
  dl->require_subcommand(1);
  auto d = std::make_shared<dead_letter_args>();
  auto* list = dl->add_subcommand("list", "List pending dead letters (all of them with --all)");
  list->add_option("--db", d->db, "Database file")->envname("CLERK_SYNC_DB")->required();
  add_projection_option(*list, d->projection, "Only these projections (a comma list, or all; not given: all)");
  list->add_flag("--all", d->all, "Include resolved ones");
  list->callback([d, &run] { run = [d] { return dead_letters_list(*d); }; });
  auto* retry = dl->add_subcommand(
      "retry", "Re-run the mapping on dead letters (after a fix); applied ones are marked resolved");
  retry->add_option("--db", d->db, "Database file")->envname("CLERK_SYNC_DB")->required();
  retry->add_option("ids", d->ids, "Dead letter ids");
  add_projection_option(*retry, d->projection, "With --all: only these projections (a comma list, or all)");
  retry->add_flag("--all", d->all, "Every pending dead letter");
  retry->callback([d, &run] { run = [d] { return dead_letters_retry(*d); }; });
  auto* dismiss = dl->add_subcommand(
      "dismiss", "Mark dead letters resolved WITHOUT applying them (an event no fix will map); says so at warn");
  dismiss->add_option("--db", d->db, "Database file")->envname("CLERK_SYNC_DB")->required();
  dismiss->add_option("ids", d->ids, "Dead letter ids")->required();
  dismiss->add_option("--reason", d->note, "Why, kept with each letter's reason")->required();
  dismiss->callback([d, &run] { run = [d] { return dead_letters_dismiss(*d); }; });
}

}  // namespace clerk_sync::ctl
