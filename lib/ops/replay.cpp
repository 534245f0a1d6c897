#include "ops/replay.hpp"

#include <algorithm>
#include <filesystem>
#include <map>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <system_error>
#include <thread>
#include <utility>
#include <vector>

#include "consume/loop.hpp"
#include "consume/retry.hpp"
#include "log/log.hpp"
#include "ops/topic.hpp"
#include "projection/applier.hpp"
#include "store/database.hpp"
#include "store/file_lock.hpp"

namespace clerk_sync::ops {

void replay_tracker::add_partition(std::int32_t partition, std::int64_t low, std::int64_t high) {
  low_[partition] = low;
  high_[partition] = high;
  next_[partition] = low;
}

bool replay_tracker::accept(std::int32_t partition, std::int64_t offset) {
  const auto it = high_.find(partition);
  if (it == high_.end()) return false;
  auto& next = next_[partition];
  if (offset >= it->second) {
    // A partition's records arrive in order: every one before the target
    // was handed over or withheld (a transaction's markers, an aborted
    // transaction's records), even while new events keep arriving.
    next = it->second;
    return false;
  }
  if (offset + 1 > next) next = offset + 1;
  return true;
}

void replay_tracker::passed(std::int32_t partition, std::int64_t position) {
  const auto it = high_.find(partition);
  if (it == high_.end()) return;
  auto& next = next_[partition];
  next = std::max(next, std::min(position, it->second));
}

std::vector<kafka::topic_partition> replay_tracker::assignment(const std::string& topic) const {
  std::vector<kafka::topic_partition> parts;
  for (const auto& [p, high] : high_)
    if (const auto low = low_.at(p); high > low) parts.push_back({topic, p, low});
  return parts;
}

bool replay_tracker::done() const { return lag() == 0; }

std::int64_t replay_tracker::lag() const {
  std::int64_t sum = 0;
  for (const auto& [p, high] : high_) sum += high > next_.at(p) ? high - next_.at(p) : 0;
  return sum;
}

std::int64_t replay_tracker::total() const {
  std::int64_t sum = 0;
  for (const auto& [p, high] : high_) sum += high - low_.at(p);
  return sum;
}

void require_fresh_database(const std::string& path) {
  namespace fs = std::filesystem;
  std::error_code ec;
  for (const auto* suffix : {"", "-wal", "-journal"}) {
    const fs::path p = path + suffix;
    if (fs::exists(p, ec) && fs::file_size(p, ec) > 0)
      throw replay_error("refusing to replay into " + path + ": " +
                         (*suffix == '\0' ? "it already holds data (replay fills a new file)"
                                           : p.string() + " is left from an earlier database there: move it away"));
  }
}

std::string partial_path(const std::string& db_path) { return db_path + ".partial"; }

namespace {

std::string stopped_message(bool wrote, const std::vector<std::string>& left_behind) {
  if (!wrote) return "replay stopped before it wrote anything";
  if (left_behind.empty()) return "replay stopped; its partial file was removed";
  std::string m = "replay stopped; could not remove";
  for (const auto& p : left_behind) m += " " + p + ";";
  m.pop_back();
  return m;
}

}  // namespace

replay_stopped::replay_stopped(bool wrote_, std::vector<std::string> left_behind_, replay_progress last_)
    : replay_error(stopped_message(wrote_, left_behind_)),
      wrote(wrote_),
      left_behind(std::move(left_behind_)),
      last(last_) {}

namespace {

// Removes the partial file (and its WAL) unless released or discarded: a
// replay that did not finish leaves nothing that looks like a database. Held under an
// exclusive lock on "<partial>.lock" (left in place: removing a lock file
// races with its next user), so that a second replay into the same file
// cannot delete the first one's partial file and have its unfinished file
// renamed into place by the first.
class partial_file {
 public:
  explicit partial_file(std::string path) : path_(std::move(path)), lock_(take_lock(path_)) { remove(); }
  ~partial_file() {
    if (!released_) remove();
  }
  partial_file(const partial_file&) = delete;
  partial_file& operator=(const partial_file&) = delete;
  [[nodiscard]] const std::string& path() const { return path_; }
  void release() { released_ = true; }
  void remove_sidecars() const {
    std::error_code ec;
    for (const auto* suffix : {"-wal", "-shm", "-journal"}) std::filesystem::remove(path_ + suffix, ec);
  }
  // Removes the file and its sidecars now (the database closed first); the
  // paths still there, each with the reason.
  [[nodiscard]] std::vector<std::string> discard() {
    released_ = true;
    std::vector<std::string> left;
    for (const auto* suffix : {"", "-wal", "-shm", "-journal"}) {
      const auto p = path_ + suffix;
      std::error_code ec;
      std::filesystem::remove(p, ec);
      if (ec) left.push_back(p + " (" + ec.message() + ")");
    }
    return left;
  }

 private:
  void remove() const {
    std::error_code ec;
    std::filesystem::remove(path_, ec);
    remove_sidecars();
  }
  static store::file_lock take_lock(const std::string& partial) {
    try {
      auto l = store::file_lock::try_lock(partial + ".lock", store::file_lock::mode::exclusive);
      if (!l) throw replay_error("another replay into " + partial + " is running (it holds " + partial + ".lock)");
      return std::move(*l);
    } catch (const std::system_error& e) {
      throw replay_error(e.what());
    }
  }
  std::string path_;
  store::file_lock lock_;
  bool released_ = false;
};

// A database failure (busy, disk full) keeps nothing of the batch: the
// consumers' retry policy, then give up with the error.
std::vector<projection::event_result> apply_with_retry(projection::applier& ap,
                                                       const std::vector<projection::envelope>& batch,
                                                       const consume::retry_policy& policy) {
  return consume::with_retry(
      policy, [&] { return ap.apply(batch); },
      [](int attempt, const store::db_error& e, bool give_up) {
        log::write(give_up ? log::level::error : log::level::warn, give_up ? "db_failed" : "db_retry",
                   {{"attempt", attempt}, {"error", e.what()}});
      });
}

// Each partition's first record read by a replay: its offset and svix-id.
using first_records = std::map<std::int32_t, std::pair<std::int64_t, std::string>>;

// Whether the log is still the one the replay began with. A topic deleted,
// recreated and refilled meanwhile is read on from the same offsets, with no
// error from librdkafka 2.0.2, and the file would mix two logs. A log once
// replaced never comes back, so each partition's first record read, still
// there with its svix-id, vouches for every record after it.
struct log_check {
  std::optional<std::string> replaced;   // a first record now another event
  std::optional<std::string> unchecked;  // one that could not be read, and why
  std::vector<std::string> gone;         // ones deleted since (warnings)
};

log_check check_same_log(const kafka::client_config& cfg, const replay_options& opts, const first_records& first_read) {
  log_check check;
  if (first_read.empty()) return check;
  std::map<std::int32_t, std::set<std::int64_t>> wanted;
  for (const auto& [p, first] : first_read) wanted[p].insert(first.first);
  // A reader of its own: the replay's, tuned for throughput by the operator,
  // could hold a read of one record.
  kafka::consumer checker(kafka::single_record_reader(cfg), "");
  const auto read = kafka::header_at(checker, opts.topic, wanted, "svix-id", opts.request_timeout);
  for (const auto& [p, first] : first_read) {
    const auto key = std::make_pair(p, first.first);
    const auto f = read.found.find(key);
    const auto where = "partition " + std::to_string(p) + "'s record at offset " + std::to_string(first.first);
    // A record read from the log, now past its end: the log was replaced
    // by a shorter one (or lost records with an unclean leader election).
    if (f != read.found.end() && f->second != first.second && !check.replaced)
      check.replaced = "the topic was recreated during the replay: " + where + " was " + first.second +
                       " and is now " + f->second + "; nothing was moved to " + opts.db_path;
    else if (read.past_end.contains(key) && !check.replaced)
      check.replaced = "the topic was recreated during the replay: " + where + " (" + first.second +
                       ") is past the log's end now; nothing was moved to " + opts.db_path;
    else if (f == read.found.end() && !read.gone.contains(key) && !read.past_end.contains(key) && !check.unchecked)
      check.unchecked = where + ": " + read.why_not(key);
    else if (f == read.found.end() && read.gone.contains(key))
      check.gone.push_back(where + " was deleted during the replay: whether the topic was recreated meanwhile "
                           "was not checked");
  }
  return check;
}

// Compaction removes records from inside a log whose start stays at 0 (all
// but each user's newest: sessions, earlier updates), which the check of
// each partition's start cannot see. Settings that cannot be read (a
// principal without DescribeConfigs) are a warning: nothing says they are
// compacted, and topic ensure never makes them so.
void refuse_compacted(const kafka::consumer& reader, const replay_options& opts, replay_result& result) {
  std::optional<std::string> policy;
  try {
    const auto config = reader.topic_config(opts.topic, opts.request_timeout);
    if (!config) throw kafka::fatal_error("topic " + opts.topic + " does not exist");
    policy = compaction(*config);
  } catch (const kafka::fatal_error& e) {
    result.unchecked.push_back("the settings of topic " + opts.topic + " could not be read (" + e.what() +
                               "): whether compaction removed events from it was not checked");
    return;
  }
  if (!policy) return;
  const std::string why = "topic " + opts.topic + " has cleanup.policy=" + *policy +
                          ": compaction removes events from inside the log (all but each user's newest), the "
                          "rebuild would miss them";
  if (!opts.allow_incomplete) throw replay_error(why + " (--allow-incomplete accepts that)");
  result.warnings.push_back(why);
  result.incomplete = true;
}

}  // namespace

replay_result replay(const kafka::client_config& cfg, const replay_options& opts,
                     const std::function<void(const replay_progress&)>& on_progress) {
  if (opts.projections.empty()) throw replay_error("no projection to replay");
  require_fresh_database(opts.db_path);
  const auto started = std::chrono::steady_clock::now();
  replay_result result;
  const auto stop_requested = [&] { return opts.stop_requested && opts.stop_requested(); };

  kafka::consumer reader(cfg, "");  // no group: the live consumers are not disturbed
  const auto partitions = reader.partitions_of(opts.topic, opts.request_timeout);
  if (partitions.empty()) throw replay_error("topic " + opts.topic + " does not exist or has no partitions");
  replay_tracker tracker;
  for (const auto p : partitions) {
    if (stop_requested()) throw replay_stopped(false, {}, {});
    const auto [low, high] = reader.watermarks(opts.topic, p, opts.request_timeout);
    tracker.add_partition(p, low, high);
    if (low > 0) {
      const std::string why = "partition " + std::to_string(p) + " starts at offset " + std::to_string(low) +
                              ": earlier events were deleted, the rebuild would miss them";
      if (!opts.allow_incomplete) throw replay_error(why + " (--allow-incomplete accepts that)");
      result.warnings.push_back(why);
      result.incomplete = true;
    }
  }
  refuse_compacted(reader, opts, result);
  result.targets = tracker.targets();
  if (stop_requested()) throw replay_stopped(false, {}, {});

  partial_file partial(partial_path(opts.db_path));
  auto db = std::make_unique<store::database>(partial.path());
  auto ap = std::make_unique<projection::applier>(*db, opts.projections);
  reader.assign(tracker.assignment(opts.topic));

  replay_progress progress;
  progress.total = tracker.total();
  progress.lag = tracker.lag();
  std::vector<projection::envelope> batch;
  auto flush = [&] {
    if (batch.empty()) return;
    for (const auto& r : apply_with_retry(*ap, batch, opts.retry))
      if (r.result == projection::outcome::dead_letter) ++progress.dead_letters;
    batch.clear();
  };
  auto measure = [&] {
    progress.lag = tracker.lag();
    progress.read = progress.total - progress.lag;
    progress.elapsed =
        std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now() - started);
  };
  auto report = [&] {
    measure();
    if (on_progress) on_progress(progress);
  };

  // What is read is dropped with the file: the batch is not applied, the
  // database is closed before its files go.
  auto stop = [&] {
    batch.clear();
    measure();
    ap.reset();
    db.reset();
    throw replay_stopped(true, partial.discard(), progress);
  };

  // Checked once caught up, or when the log loses what is being read.
  first_records first_read;
  // Progress is the lag going down (a record accepted, a partition read up
  // to its target or passed) or a batch applied, not any message: events
  // arriving after the start on other partitions (the receiver runs on)
  // must neither hold off the stall nor the count of a partition whose log
  // ends in records the reader is never given.
  auto last_progress = std::chrono::steady_clock::now();
  auto last_lag = tracker.lag();
  auto last_report = last_progress;
  auto last_stop_check = last_progress;
  auto last_passed_check = last_progress;
  auto batch_since = last_progress;  // when the batch's first record was read
  const auto apply_batch = [&] {
    flush();
    last_progress = std::chrono::steady_clock::now();  // a slow database is not a stall
  };
  while (!tracker.done()) {
    std::optional<kafka::message> m;
    try {
      m = reader.poll(std::chrono::milliseconds(200));
    } catch (const kafka::offset_out_of_range& e) {
      // The log lost the records the replay was reading: trimmed, or the
      // topic recreated (refilled or not). Recreated is said when a first
      // record read is another event now, or past the log's end.
      if (const auto check = check_same_log(cfg, opts, first_read); check.replaced)
        throw replay_error(*check.replaced);
      throw replay_error(std::string(e.what()) + ": records were deleted or the topic was recreated during the " +
                         "replay; nothing was moved to " + opts.db_path);
    }
    const auto now = std::chrono::steady_clock::now();
    // Not at every message: the check may cost a system call.
    if (!m || now - last_stop_check >= std::chrono::milliseconds(100)) {
      last_stop_check = now;
      if (stop_requested()) stop();
    }
    if (m && tracker.accept(m->partition, m->offset)) {
      if (batch.empty()) batch_since = now;
      batch.push_back(consume::to_envelope(std::move(*m)));
      first_read.try_emplace(batch.back().partition, batch.back().offset, batch.back().svix_id);
    }
    // The high watermark taken at start may be past records the reader is
    // never given but moves past (a transaction's commit or abort marker,
    // an aborted transaction's records, as another tool's transactional
    // producer leaves at a log's end). Asked when nothing came, and at
    // least every 200 ms, as a poll may never come back empty.
    const bool ask_positions = !m || now - last_passed_check >= std::chrono::milliseconds(200);
    if (ask_positions) {
      last_passed_check = now;
      for (const auto& [p, position] : reader.positions(opts.topic)) tracker.passed(p, position);
    }
    const auto lag = tracker.lag();
    if (lag < last_lag) {
      last_lag = lag;
      last_progress = now;
    }
    if (ask_positions && lag > 0 && now - last_progress > opts.stall_timeout) {
      flush();
      report();
      throw replay_error("no progress for " + std::to_string(opts.stall_timeout.count()) + " ms with " +
                         std::to_string(lag) + " still to read");
    }
    if (batch.size() >= opts.batch_size || lag == 0 ||
        (!batch.empty() && (!m || now - batch_since >= std::chrono::seconds(1))))
      apply_batch();
    if (now - last_report >= opts.progress_interval) {
      last_report = now;
      report();
    }
  }
  flush();
  // Everything is read and applied; one read is left, the check that the
  // topic was not recreated meanwhile. A broker restarting or a leader
  // election at that moment fails it, and failing threw the finished work
  // away: it is tried again with backoff for up to the stall timeout. A
  // signal between tries stops the replay, as one before the end would.
  auto check = check_same_log(cfg, opts, first_read);
  const auto checking_since = std::chrono::steady_clock::now();
  auto backoff = std::chrono::milliseconds(500);
  int tries = 1;
  while (check.unchecked && !check.replaced &&
         std::chrono::steady_clock::now() - checking_since + backoff <= opts.stall_timeout) {
    log::warn("replay check failed", {{"attempt", tries},
                                      {"error", *check.unchecked},
                                      {"retry_in_ms", static_cast<std::int64_t>(backoff.count())}});
    for (const auto until = std::chrono::steady_clock::now() + backoff; std::chrono::steady_clock::now() < until;) {
      if (stop_requested()) stop();
      std::this_thread::sleep_for(std::chrono::milliseconds(100));
    }
    backoff = std::min(backoff * 2, std::chrono::milliseconds(5'000));
    check = check_same_log(cfg, opts, first_read);
    ++tries;
  }
  if (check.replaced) throw replay_error(*check.replaced);
  if (check.unchecked)
    throw replay_error("could not check that the topic was not recreated during the replay (" + *check.unchecked +
                       "; " + std::to_string(tries) + " tries in " +
                       std::to_string(std::chrono::duration_cast<std::chrono::seconds>(
                                          std::chrono::steady_clock::now() - checking_since)
                                          .count()) +
                       " s): nothing was moved to " + opts.db_path + "; run the replay again");
  result.unchecked.insert(result.unchecked.end(), check.gone.begin(), check.gone.end());
  reader.close();
  // A partition that gave the reader no record has no batch to store its
  // position: stored here, at its start, so that a log trimmed past it
  // before the consumer reads on stops that consumer (exit 5) and swap-in,
  // instead of a start at whatever the log's first record is by then. Its
  // start, not its target: a log of a transaction's markers only (another
  // tool's aborted write) holds no record before the target to check.
  for (const auto& [p, low] : tracker.starts())
    for (const auto k : opts.projections) projection::store_start(*db, k, opts.topic, p, low);
  // Finished: the mark swap-in asks for, in the file's header, folded with
  // the rest below; another when events were known missing.
  store::exec(*db, "PRAGMA application_id = " +
                       std::to_string(result.incomplete ? store::incomplete_replay_id : store::finished_replay_id));
  // Fold the WAL into the main file so that the file alone can be moved
  // into place (its sidecars are deleted below): all of it, or nothing is.
  if (!store::checkpoint_wal(*db))
    throw replay_error("could not fold the write-ahead log of " + partial.path() +
                       " into it (another connection has it open?); nothing was moved to " + opts.db_path);
  ap.reset();
  db.reset();
  require_fresh_database(opts.db_path);  // nobody wrote there meanwhile
  partial.remove_sidecars();
  try {
    std::filesystem::rename(partial.path(), opts.db_path);
  } catch (const std::filesystem::filesystem_error& e) {
    // Its directory removed or made read-only meanwhile, a full file
    // system: a failed replay like another, said as one.
    throw replay_error("could not rename " + partial.path() + " to " + opts.db_path + ": " + e.code().message() +
                       "; nothing was moved to " + opts.db_path);
  }
  partial.release();
  report();
  result.last = progress;
  return result;
}

}  // namespace clerk_sync::ops
