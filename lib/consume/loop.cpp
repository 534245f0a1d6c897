#include "consume/loop.hpp"

#include <sys/stat.h>

#include <algorithm>
#include <cstdio>
#include <map>
#include <mutex>
#include <optional>
#include <set>
#include <string>
#include <system_error>
#include <thread>
#include <vector>

#include "config/options.hpp"
#include "log/log.hpp"
#include "projection/applier.hpp"
#include "store/database.hpp"
#include "store/file_lock.hpp"

namespace clerk_sync::consume {
namespace {

using namespace std::chrono_literals;
using projection::outcome;

// "file-<device>-<inode>" of an open database file ("file" alone if it
// cannot be read, which leaves the host to tell files apart).
std::string file_identity(const std::string& path) {
  struct stat st {};
  if (::stat(path.c_str(), &st) != 0) return "file";
  char buf[64];
  std::snprintf(buf, sizeof buf, "file-%llx-%llu", static_cast<unsigned long long>(st.st_dev),
                static_cast<unsigned long long>(st.st_ino));
  return buf;
}

void log_result(const projection::event_result& r) {
  const auto lv = r.result == outcome::dead_letter ? log::level::warn
                  : r.result == outcome::skipped   ? log::level::debug
                                                   : log::level::info;
  const std::string_view o = projection::name(r.result);
  const std::string_view p = projection::name(r.projection);
  if (r.detail.empty())
    log::write(lv, "event",
               {{"svix_id", r.svix_id}, {"type", r.type}, {"user", r.user}, {"projection", p}, {"outcome", o},
                {"partition", r.partition}, {"offset", r.offset}});
  else  // a dead letter's reason, a conflict, a type no projection maps: each worth a look
    log::write(log::level::warn, "event",
               {{"svix_id", r.svix_id}, {"type", r.type}, {"user", r.user}, {"projection", p}, {"outcome", o},
                {"partition", r.partition}, {"offset", r.offset}, {"reason", r.detail}});
}

class consume_loop {
 public:
  consume_loop(const loop_config& cfg, loop_state& state)
      : cfg_(cfg), state_(state), db_(cfg.db_path, {.busy_timeout = cfg.busy_timeout, .keep_wal_files = true}), applier_(db_, {cfg.projection}, cfg.write_turn) {}

  // However the loop ends (an exception included): what its transactions
  // waited for and held of the write turn.
  ~consume_loop() {
    const auto& t = applier_.totals();
    const auto ms = [](std::chrono::nanoseconds d) {
      return std::chrono::duration_cast<std::chrono::milliseconds>(d).count();
    };
    try {
      log::info("write_totals", {{"projection", projection::name(cfg_.projection)},
                                 {"batches", t.batches},
                                 {"waited_ms", ms(t.waited)},
                                 {"held_ms", ms(t.held)},
                                 {"held_cpu_ms", ms(t.held_cpu)}});
    } catch (const std::exception&) {
      // Out of memory for one log line: nothing to do about it here.
    }
  }
  consume_loop(const consume_loop&) = delete;
  consume_loop& operator=(const consume_loop&) = delete;

  int run(const std::atomic<bool>& stop) {
    retry_.stop = &stop;
    // Held while this projection's loop runs: ctl swap-in takes it
    // exclusively while it replaces the projection's rows and offsets, and
    // refuses while a consumer holds it; a consumer starting meanwhile waits.
    const auto lock_path = store::projection_lock_path(cfg_.db_path, projection::name(cfg_.projection));
    // Looked at again every 200 ms rather than waited on, so that a stop
    // (systemctl stop during a long swap) ends the wait.
    auto held = store::file_lock::try_lock(lock_path, store::file_lock::mode::shared);
    if (!held) log::info("swap_wait", {{"projection", projection::name(cfg_.projection)}, {"lock", lock_path}});
    state_.swap_waiting = !held;
    while (!held) {
      if (stop.load()) return 0;  // nothing read, nothing applied
      state_.heartbeat_ms = steady_ms();  // waiting as asked, not stuck
      std::this_thread::sleep_for(200ms);
      held = store::file_lock::try_lock(lock_path, store::file_lock::mode::shared);
    }
    state_.swap_waiting = false;
    kafka::consumer cons(cfg_.kafka, group_,
                         {.on_assign = [this](std::vector<kafka::topic_partition> parts) { return on_assign(parts); },
                          .on_revoke = [this](const std::vector<kafka::topic_partition>&) { on_revoke(); }},
                         {.max_poll_interval = cfg_.max_poll_interval, .client_id = client_id_});
    cons_ = &cons;
    cons.subscribe({cfg_.topic});
    state_.subscribed = true;
    log::info("subscribed", {{"projection", projection::name(cfg_.projection)}, {"topic", cfg_.topic}});
    unassigned();
    while (!stop.load() && !failed_) {
      state_.heartbeat_ms = steady_ms();
      // librdkafka retries for ever and says so only at warn (brokers down,
      // disconnects): nothing is consumed, and that is an error.
      if (const auto waited = joined_ ? std::nullopt : unassigned_.due(std::chrono::steady_clock::now())) {
        // The brokers' word when they turned the consumer away: not a question.
        if (const auto refused = cons.refusal())
          log::error("not_joined",
                     {{"projection", projection::name(cfg_.projection)},
                      {"topic", cfg_.topic},
                      {"waited_s", static_cast<std::int64_t>(waited->count())},
                      {"reason", refused->reason},
                      {"outcome", refused->what == kafka::refusal::kind::tls
                                      ? "no partitions assigned: the TLS handshake with Kafka failed (check "
                                        "ssl.ca.location, ssl.endpoint.identification.algorithm, security.protocol)"
                                      : "no partitions assigned: Kafka refused the credentials (check "
                                        "sasl.username, sasl.password, sasl.mechanism)"}});
        else {
          const auto why = why_not_joined(cons);
          log::error("not_joined", {{"projection", projection::name(cfg_.projection)},
                                    {"topic", cfg_.topic},
                                    {"waited_s", static_cast<std::int64_t>(waited->count())},
                                    {"outcome", why}});
        }
      }
      // With an open batch, wait only a moment: a lone event is applied at once.
      std::optional<kafka::message> m;
      try {
        m = cons.poll(batch_.empty() ? 100ms : 1ms);
      } catch (const kafka::offset_out_of_range& e) {
        out_of_range(e);
      }
      if (failed_) break;
      if (m && !checks_.empty()) {
        const resume r = check_resume(*m);
        if (r == resume::recreated) {
          failed_ = true;
          failed_code_ = exit_offset_out_of_range;
          break;
        }
        if (r == resume::reread) continue;
      }
      if (m) {
        if (batch_.empty()) {
          batch_started_ = std::chrono::steady_clock::now();
          batch_bytes_ = 0;
        }
        batch_.push_back(to_envelope(std::move(*m)));
        batch_bytes_ += batch_.back().body.size();
        if (batch_.size() < cfg_.batch_size && batch_bytes_ < cfg_.batch_bytes &&
            std::chrono::steady_clock::now() - batch_started_ < cfg_.batch_latency)
          continue;
      }
      if (!batch_.empty() && !flush()) failed_ = true;
      if (!failed_ && batch_.empty() && std::chrono::steady_clock::now() - file_checked_ >= 1s && !same_file())
        failed_ = true;
      if (!failed_ && batch_.empty()) {
        prune();
        if (position_check_due() && applied_ != verified_ && !check_position()) failed_ = true;
      }
    }
    // Not rate-limited on the way out: the writes below, and a restart,
    // must not meet a file moved there in the last second.
    if (!failed_ && !same_file()) failed_ = true;
    if (!failed_ && !flush()) failed_ = true;
    if (!failed_ && !settle_position()) failed_ = true;
    // A batch that could not be written is dropped unapplied: its offsets
    // were not stored, so whoever gets the partitions reads it again.
    if (failed_) batch_.clear();
    cons.close();
    return failed_ ? failed_code_ : 0;
  }

 private:
  // A record by its offset and the svix-id applied with it.
  using known_record = projection::checked_record;
  std::vector<kafka::topic_partition> on_assign(std::vector<kafka::topic_partition> parts) {
    joined_ = true;  // even with no partition: the group answered
    try {
      // ctl swap-in cannot be replacing them: it holds this projection's
      // lock (run()) while it does.
      const auto stored = projection::stored_positions(db_, cfg_.projection, cfg_.topic);
      stored_checked_.clear();
      for (const auto& [partition, at] : stored)
        if (at.checked) stored_checked_[partition] = *at.checked;
      checks_.clear();
      applied_.clear();
      verified_.clear();
      check_now_ = false;
      position_checked_ = std::chrono::steady_clock::now();
      // Every partition's log range, asked at once within one bound: a
      // leader down fails only its own partitions' checks.
      std::vector<std::int32_t> ids;
      for (const auto& p : parts) ids.push_back(p.partition);
      const auto ranges = cons_->watermarks(cfg_.topic, ids, 5s);
      state_.heartbeat_ms = steady_ms();
      for (auto& p : parts) {
        const auto it = stored.find(p.partition);
        p.offset = it == stored.end() ? kafka::offset_beginning : it->second.next_offset;
        // Resume one record early, at the record applied last, to compare
        // it with the svix-id stored with the offset (check_resume): a
        // topic deleted and recreated under the same name, then refilled
        // past the stored offset, holds another record there.
        // A record applied without a svix-id (dead-lettered: a record
        // another tool wrote) stored "": compared as such, since the
        // record in a recreated topic's log is another one.
        const auto* id = it == stored.end() || !it->second.last_svix_id ? nullptr : &*it->second.last_svix_id;
        bool reread = false;
        if (p.offset > 0 && !id)
          unchecked(p.partition, p.offset, "no_svix_id");  // stored before migration 003
        else if (p.offset > 0)
          reread = holds_record_before(p.partition, {p.offset - 1, *id}, ranges.at(p.partition));
        if (reread) checks_[p.partition] = {p.offset - 1, *id};
        log::info("assigned", {{"projection", projection::name(cfg_.projection)},
                               {"partition", p.partition},
                               {"offset", p.offset},
                               {"reread", reread}});
        if (reread) --p.offset;
      }
      for (const auto& p : parts)
        if (p.offset == kafka::offset_beginning) warn_if_log_trimmed(p.partition, ranges.at(p.partition));
      check_group_whole(parts.size());
    } catch (const store::db_error& e) {
      log::error("offsets_unreadable", {{"projection", projection::name(cfg_.projection)}, {"error", e.what()}});
      failed_ = true;  // nothing polled from here on is applied
      // Assign nothing: partitions without a stored offset would meet
      // auto.offset.reset=error and turn a passing database error (exit 3,
      // restarted) into an offset out of range (exit 5, not restarted).
      return {};
    }
    return parts;
  }

  // A partition assigned to another member of the group is applied by that
  // member: into this database when it writes this same file (several
  // processes on one host may share a projection's partitions), into
  // another file otherwise (a consumer on another host, one run by hand with
  // another --db, a copy of this file), and then this database misses those
  // events for as long as it runs. Members writing this file have this
  // member's client.id (it names the file's device and inode) and host.
  // Asked only when this assignment falls short of the topic; said at error,
  // naming the others, and at info once none is left.
  void check_group_whole(std::size_t assigned) {
    std::vector<std::int32_t> all;
    try {
      all = cons_->partitions_of(cfg_.topic, 5s);
    } catch (const kafka::fatal_error& e) {
      // The resume checks may have read the log's range just before: said
      // here, or a member writing another file would go unnoticed.
      log::warn("group_unchecked", {{"projection", projection::name(cfg_.projection)}, {"reason", e.what()}});
      return;
    }
    state_.heartbeat_ms = steady_ms();
    std::string others;
    if (!all.empty() && assigned < all.size()) {
      try {
        const auto group = cons_->describe_group(5s);
        const auto self_id = cons_->member_id();
        const kafka::group_member* self = nullptr;
        for (const auto& m : group.members)
          if (m.member_id == self_id) self = &m;
        for (const auto& m : group.members)
          if (&m != self && (!self || m.client_id != self->client_id || m.host != self->host))
            others += (others.empty() ? "" : ", ") + m.client_id + "@" + m.host;
      } catch (const kafka::fatal_error& e) {
        log::warn("group_unchecked", {{"projection", projection::name(cfg_.projection)}, {"reason", e.what()}});
        return;
      }
      state_.heartbeat_ms = steady_ms();
    }
    if (others.empty()) {
      if (shared_) log::info("group_whole", {{"projection", projection::name(cfg_.projection)}, {"group", group_}});
      shared_ = false;
      return;
    }
    shared_ = true;
    log::error("group_shared",
               {{"projection", projection::name(cfg_.projection)},
                {"group", group_},
                {"assigned", assigned},
                {"partitions", all.size()},
                {"others", others},
                {"outcome", "consumers of this projection writing another database file hold the other "
                            "partitions: their events go there, not here, while they run"}});
  }

  // A partition without a stored offset is read from the log's first
  // record: if that is past offset 0, the events before it were deleted and
  // this projection will never see them (ctl replay refuses such a log
  // without --allow-incomplete). Said at warn on each assignment until an
  // offset is stored, and so is a log range that could not be read.
  void warn_if_log_trimmed(std::int32_t partition, const kafka::watermark_reading& range) {
    if (!range.failed.empty()) {
      log::warn("start_unchecked", {{"projection", projection::name(cfg_.projection)},
                                    {"partition", partition},
                                    {"reason", range.failed}});
      return;
    }
    if (range.low > 0)
      log::warn("start_incomplete", {{"projection", projection::name(cfg_.projection)},
                                     {"partition", partition},
                                     {"log_start", range.low},
                                     {"outcome", "no stored offset, and the events before log_start were deleted: "
                                                 "this projection will miss them"}});
  }

  // What a consumer not given partitions and not refused is told, from a
  // metadata request of at most 2 s once the join deadline has passed: a
  // topic Kafka lists no partitions of (not created yet, or deleted), or
  // one it does while the group assigns nothing (an empty assignment counts
  // as joined, so not other members holding them all); else the question
  // of reaching Kafka.
  std::string why_not_joined(const kafka::consumer& cons) const {
    std::size_t partitions = 0;
    try {
      partitions = cons.partitions_of(cfg_.topic, 2s).size();
    } catch (const kafka::fatal_error& e) {
      return std::string("no partitions assigned: is Kafka reachable (address, security.protocol, credentials; "
                         "see kafka_error lines)? Its metadata: ") + e.what();
    }
    if (partitions == 0)
      return "no partitions assigned: topic " + cfg_.topic +
             " does not exist (not created yet, or deleted; clerk-sync-ctl topic ensure creates it), or Kafka "
             "lists none of its partitions";
    return "no partitions assigned, though Kafka answers and the topic has " + std::to_string(partitions) +
           ": group " + group_ + " gives none (its coordinator unavailable: __consumer_offsets short of "
           "replicas, offsets.topic.replication.factor above the brokers' count; or a rebalance waiting on "
           "another member)";
  }

  // Whether the log holds `before`, the record before the stored offset, to
  // re-read; says why not when that is not the usual case of a log trimmed
  // up to the offset. Where the log may hold it but the range says nothing
  // (not read, or ending before it), the first position check compares.
  bool holds_record_before(std::int32_t partition, const known_record& before,
                           const kafka::watermark_reading& range) {
    const std::int64_t next = before.offset + 1;
    if (!range.failed.empty()) {
      compare_later(partition, before, range.failed);
      return false;
    }
    const auto low = range.low;
    const auto high = range.high;
    if (low < next && next <= high) return true;
    // Trimmed past the offset: the fetch meets offset_out_of_range (exit 5).
    if (low == next) unchecked(partition, next, "trimmed");
    // Shorter than the offset: a recreated topic's fetch meets
    // offset_out_of_range too (exit 5), but a leader that has not yet
    // caught up answers the fetch later, the comparison skipped.
    if (next > high) compare_later(partition, before, "log_end_behind");
    return false;
  }

  enum class resume { apply, reread, recreated };

  // The first record of a partition that resumed one record early: the
  // record already applied (reread: dropped), or another one (recreated:
  // logged, the loop ends with exit 5). Every later record is applied.
  resume check_resume(const kafka::message& m) {
    const auto it = checks_.find(m.partition);
    if (it == checks_.end()) return resume::apply;
    const known_record c = std::move(it->second);
    checks_.erase(it);
    if (m.offset != c.offset) {
      // No record at that offset any more (compaction, an aborted
      // transaction): a stored checked record is compared before m is applied.
      const auto checked = stored_checked_.find(m.partition);
      if (checked != stored_checked_.end() && checked->second.offset < c.offset)
        compare_later(m.partition, c, "record_missing");
      else
        unchecked(m.partition, c.offset + 1, "record_missing");
      return resume::apply;
    }
    const auto found = kafka::find_header(m.headers, "svix-id").value_or("");
    if (found == c.svix_id) {
      applied_[m.partition] = c;
      // A record checked before it, stored with the offset (a stop without
      // the check of settle_position(), such as a kill): c may come from a
      // topic recreated since, so that record is the reference, checked
      // before anything is applied.
      const auto checked = stored_checked_.find(m.partition);
      if (checked != stored_checked_.end() && checked->second.offset < c.offset) {
        verified_[m.partition] = checked->second;
        check_now_ = true;
      } else {
        verified_[m.partition] = c;
      }
      return resume::reread;
    }
    log::error("topic_recreated", {{"projection", projection::name(cfg_.projection)},
                                   {"topic", m.topic},
                                   {"partition", m.partition},
                                   {"offset", m.offset},
                                   {"applied_svix_id", c.svix_id},
                                   {"found_svix_id", found}});
    return resume::recreated;
  }

  // poll() found that a partition's log no longer holds the offset it
  // fetched. For the record before the stored offset, re-read to check it,
  // that is the stored offset's own out of range (exit 5, naming it) unless
  // the log was trimmed up to the stored offset exactly since on_assign asked
  // (a restart resumes there: exit 4).
  [[noreturn]] void out_of_range(const kafka::offset_out_of_range& e) {
    const auto it = checks_.find(e.partition);
    if (it == checks_.end() || e.offset != it->second.offset) throw e;
    const std::int64_t next = e.offset + 1;
    if (e.log_start == next)
      throw kafka::fatal_error("the record before the stored offset " + std::to_string(next) + " of " + e.topic +
                               "/" + std::to_string(e.partition) + " was deleted while resuming");
    // Where the log starts could not be read: whether the stored offset is
    // in it is unknown, so a restart asks again (exit 4), rather than exit 5,
    // which waits for an operator.
    if (e.log_start < 0)
      throw kafka::fatal_error("the record before the stored offset " + std::to_string(next) + " of " + e.topic +
                               "/" + std::to_string(e.partition) + " is gone, and the log's range could not be read");
    throw kafka::offset_out_of_range(e.topic, e.partition, next, e.log_start, e.log_end);
  }

  // A partition that resumes at its stored offset without the comparison.
  void unchecked(std::int32_t partition, std::int64_t offset, const std::string& reason) {
    log::warn("resume_unchecked", {{"projection", projection::name(cfg_.projection)},
                                   {"partition", partition},
                                   {"offset", offset},
                                   {"reason", reason}});
  }

  // A partition whose resume could not compare `before`, the record before
  // its stored offset (the broker not answering, the log not holding it
  // yet): the first position check compares instead, before anything is
  // applied (check_now_), the stored checked record if there is one (a
  // kill left it), else `before`. A check that cannot read it in time lets
  // the batch be applied, as any check does (position_unchecked), and a
  // later one finds a recreation and moves the offset back (applied_after).
  // Until a check has read it, every batch
  // stores it again as the checked record: neither a restart nor a kill
  // meanwhile loses it, as the first batch would by storing its own.
  void compare_later(std::int32_t partition, const known_record& before, const std::string& reason) {
    const auto checked = stored_checked_.find(partition);
    const known_record& first =
        checked != stored_checked_.end() && checked->second.offset < before.offset ? checked->second : before;
    applied_[partition] = before;
    verified_[partition] = first;
    check_now_ = true;
    log::warn("resume_unchecked", {{"projection", projection::name(cfg_.projection)},
                                   {"partition", partition},
                                   {"offset", before.offset + 1},
                                   {"reason", reason},
                                   {"checked_offset", first.offset}});
  }

  // Sweeps the ledger for rows past the retention, one bounded step (2,000
  // rows read, one short transaction) per interval between batches, so that
  // pruning never holds the write lock for long.
  void prune() {
    if (cfg_.ledger_retention.count() <= 0) return;
    const auto now = std::chrono::steady_clock::now();
    if (now < next_prune_) return;
    next_prune_ = now + cfg_.prune_interval;
    const auto cutoff = std::chrono::duration_cast<std::chrono::milliseconds>(
                            std::chrono::system_clock::now().time_since_epoch() - cfg_.ledger_retention)
                            .count();
    try {
      std::unique_lock<std::mutex> turn;
      if (cfg_.write_turn) turn = std::unique_lock(*cfg_.write_turn);
      const auto step = projection::prune_ledger(db_, cfg_.projection, cutoff, prune_cursor_, 2'000);
      prune_cursor_ = step.next;
      pruned_ += step.deleted;
      // One line per sweep, not per step.
      if (step.next.empty() && pruned_ > 0) {
        log::info("pruned", {{"projection", projection::name(cfg_.projection)}, {"rows", pruned_}});
        pruned_ = 0;
      }
    } catch (const store::db_error& e) {
      // Busy or failing: the next interval tries again; events are unaffected.
      // Rate-limited: a database that stays broken would otherwise say so
      // once a second while the consumer is idle.
      limiter_.write("prune_failed", log::level::warn, "prune_failed",
                     {{"projection", projection::name(cfg_.projection)}, {"error", e.what()}});
    }
  }

  // From now on the loop has no assignment (subscribed, or revoked: a
  // rebalance, or the group's session lost with the cluster).
  void unassigned() {
    joined_ = false;
    unassigned_.start(std::chrono::steady_clock::now());
  }

  // Eager rebalance: commit what we hold before the partitions go elsewhere.
  // Runs inside librdkafka's C rebalance callback (also from close() while
  // an exception unwinds): nothing may escape from here.
  void on_revoke() noexcept {
    if (!failed_) {
      try {
        if (!flush() || !settle_position()) failed_ = true;
        log::info("revoked", {{"projection", projection::name(cfg_.projection)}});
      } catch (const kafka::fatal_error& e) {  // the position check's reader
        log::error("kafka_failed", {{"projection", projection::name(cfg_.projection)}, {"error", e.what()}});
        failed_ = true;
        failed_code_ = exit_kafka_failed;
      } catch (const std::exception& e) {
        log::error("db_failed", {{"projection", projection::name(cfg_.projection)}, {"error", e.what()}});
        failed_ = true;
      }
    }
    // After the flush, which may take its retries: the group's time to
    // assign again starts now.
    unassigned();
  }

  // Applies the open batch in one transaction. A database error never
  // advances offsets: the same in-memory batch is retried under the retry
  // policy, and when it is spent the loop gives up (false).
  bool flush() {
    if (batch_.empty()) return true;
    if (!same_file()) return false;
    if (position_check_due() && !check_position()) return false;
    try {
      with_retry(
          retry_,
          [&] {
            const auto t0 = std::chrono::steady_clock::now();
            const auto results = applier_.apply(batch_, verified_);
            log::debug("batch", {{"projection", projection::name(cfg_.projection)},
                                 {"events", batch_.size()},
                                 {"ms", std::chrono::duration_cast<std::chrono::milliseconds>(
                                            std::chrono::steady_clock::now() - t0).count()}});
            for (const auto& r : results) log_result(r);
            return 0;
          },
          [&](int attempt, const store::db_error& e, bool give_up) {
            log::write(give_up ? log::level::error : log::level::warn, give_up ? "db_failed" : "db_retry",
                       {{"projection", projection::name(cfg_.projection)},
                        {"attempt", attempt},
                        {"events", batch_.size()},
                        {"db", cfg_.db_path},
                        {"error", e.what()}});
            state_.heartbeat_ms = steady_ms();
          });
    } catch (const store::db_error&) {
      return false;
    }
    // Each partition's last record of the batch (one copy of its svix-id
    // a partition, not one an event). A partition's first records read (no
    // stored position to check them against): the last of them is the
    // reference.
    std::vector<std::int32_t> seen;
    for (auto it = batch_.rbegin(); it != batch_.rend(); ++it) {
      if (std::find(seen.begin(), seen.end(), it->partition) != seen.end()) continue;
      seen.push_back(it->partition);
      const auto& last = applied_[it->partition] = {it->offset, it->svix_id};
      verified_.try_emplace(it->partition, last);
    }
    batch_.clear();
    return true;
  }

  // Whether the database path still names the file this loop writes: before
  // each batch, once a second while idle, and on the way out. A file moved
  // there (a backup restored with mv rather than ctl swap-in) or the path
  // deleted would leave this loop writing a file nothing else reads.
  // Otherwise one error line and exit 6, which systemd does not restart:
  // every process with the old file open shares its -wal and -shm (SQLite
  // finds them by name), so a consumer restarted on the file there while
  // another still writes the old one would mix the two. First the WAL is
  // folded into the file it belongs to and emptied, so that the file there
  // reads as itself once they have all stopped.
  bool same_file() {
    file_checked_ = std::chrono::steady_clock::now();
    if (!db_.file_moved()) return true;
    bool emptied = false;
    try {
      emptied = store::checkpoint_wal(db_);
    } catch (const store::db_error& e) {
      // Why the -wal could not be emptied, beside the line below that says it was not.
      log::warn("wal_checkpoint_failed",
                {{"projection", projection::name(cfg_.projection)}, {"db", cfg_.db_path}, {"error", e.what()}});
    }
    log::error("db_failed", {{"projection", projection::name(cfg_.projection)},
                             {"db", cfg_.db_path},
                             {"error", "the database path no longer names the file this consumer opened (another "
                                       "file moved there, or it was moved or deleted): stop every clerk-sync unit "
                                       "using it, remove the -wal and -shm beside it, then start them"},
                             {"wal_emptied", emptied}});
    failed_code_ = exit_db_replaced;
    return false;
  }

  [[nodiscard]] bool position_check_due() const {
    return !verified_.empty() &&
           (check_now_ || std::chrono::steady_clock::now() - position_checked_ >= cfg_.position_check_interval);
  }

  // Whether the log being read is still the one the applied records came
  // from: the latest record known to be in it (verified_) is still there,
  // with its svix-id. A topic deleted and recreated while the consumer runs,
  // then refilled past its position before its next fetch, raises nothing
  // in librdkafka 2.0.2, which reads on from the same offsets in the new
  // log: its first records would never be applied, and from then on the
  // resume check would pass. Run at most once a position_check_interval,
  // before a batch is applied (so that a log replaced while the consumer
  // waited is found before any of it is) and while idle after records were
  // applied; a log once replaced never comes back, so a check that passes
  // vouches for every record applied before it. A replaced log ends the
  // loop (exit 5) with the partition's stored position moved back to the
  // record that no longer matches, so that a restart finds it too; records
  // applied since that check (applied_after) may come from the new log:
  // rebuild with ctl replay. Every partition is looked at, and each
  // replaced one moved back. One read of a record per partition, outside the
  // write turn (librdkafka 2.0.2's reader takes from milliseconds to a
  // second). A record that cannot be read is said at warn (rate-limited):
  // gone from the log (trimmed, compacted), the check goes on from the
  // record applied last; not read (the broker slow), from the same record.
  // False (with failed_code_ set to exit 5) when a log was replaced.
  bool check_position() {
    position_checked_ = std::chrono::steady_clock::now();
    check_now_ = false;
    std::map<std::int32_t, std::set<std::int64_t>> wanted;
    for (const auto& [partition, known] : verified_) wanted[partition].insert(known.offset);
    if (!reader_) reader_.emplace(kafka::single_record_reader(cfg_.kafka), "");
    const auto read = kafka::header_at(*reader_, cfg_.topic, wanted, "svix-id", 5s);
    state_.heartbeat_ms = steady_ms();
    bool same = true;
    for (auto& [partition, known] : verified_) {
      const auto& last = applied_.at(partition);
      const auto f = read.found.find({partition, known.offset});
      if (f == read.found.end()) {
        // Gone from the log (compacted, trimmed): nothing to compare, and
        // the check goes on from the record applied last. Not read (the
        // broker slow, the reader failing, the log ending before it, which
        // the next fetch meets as out of range): the same record next time.
        const bool gone = read.gone.contains({partition, known.offset});
        const auto why_not = read.why_not({partition, known.offset});
        limiter_.write("position_unchecked:" + std::to_string(partition), log::level::warn, "position_unchecked",
                       {{"projection", projection::name(cfg_.projection)},
                        {"partition", partition},
                        {"offset", known.offset},
                        {"reason", why_not}});
        if (gone) known = last;
      } else if (f->second != known.svix_id) {
        log::error("topic_recreated", {{"projection", projection::name(cfg_.projection)},
                                       {"topic", cfg_.topic},
                                       {"partition", partition},
                                       {"offset", known.offset},
                                       {"applied_svix_id", known.svix_id},
                                       {"found_svix_id", f->second},
                                       {"applied_after", last.offset - known.offset}});
        if (last.offset > known.offset) rewind(partition, known);
        same = false;  // every partition is looked at, and each replaced one moved back
      } else {
        known = last;  // read before this look: from the same log
      }
    }
    if (!same) failed_code_ = exit_offset_out_of_range;
    return same;
  }

  // Before the partitions go (a rebalance) or the loop ends: records applied
  // since the last check are checked now, whatever the interval, so that a
  // replaced log is not left to a resume check that would find its own
  // records there.
  bool settle_position() {
    if (applied_ != verified_ && !check_position()) return false;
    forget_checked();
    return true;
  }

  // The records applied were checked: the checked records stored with the
  // offsets (apply()) are not needed on resume. One try: left, they cost
  // the next start one check.
  void forget_checked() {
    try {
      std::unique_lock<std::mutex> turn;
      if (cfg_.write_turn) turn = std::unique_lock(*cfg_.write_turn);
      for (const auto& [partition, last] : applied_)
        if (verified_.at(partition) == last)  // not a record the check could not read
          projection::forget_checked(db_, cfg_.projection, cfg_.topic, partition, last.offset + 1);
    } catch (const store::db_error& e) {
      log::warn("checked_not_forgotten", {{"projection", projection::name(cfg_.projection)}, {"error", e.what()}});
    }
  }

  // The partition's stored position back to just after `to`, under the
  // consumers' retry policy.
  void rewind(std::int32_t partition, const known_record& to) {
    try {
      with_retry(
          retry_,
          [&] {
            std::unique_lock<std::mutex> turn;
            if (cfg_.write_turn) turn = std::unique_lock(*cfg_.write_turn);
            projection::rewind_offset(db_, cfg_.projection, cfg_.topic, partition, to.offset + 1, to.svix_id);
            return 0;
          },
          [&](int attempt, const store::db_error& e, bool give_up) {
            log::write(give_up ? log::level::error : log::level::warn, give_up ? "db_failed" : "db_retry",
                       {{"projection", projection::name(cfg_.projection)},
                        {"attempt", attempt},
                        {"partition", partition},
                        // A restart still stops: the record checked last is
                        // the one stored as checked with the offset (apply()).
                        {"outcome", give_up ? "stored position not moved back, the record stored as checked "
                                              "with it still stops a restart; rebuild the projection"
                                            : "moving the stored position back"},
                        {"db", cfg_.db_path},
                        {"error", e.what()}});
            state_.heartbeat_ms = steady_ms();
          });
    } catch (const store::db_error&) {  // NOLINT(bugprone-empty-catch): said by the give-up line
    }
  }

  const loop_config& cfg_;
  retry_policy retry_ = cfg_.retry;  // and the stop flag, from run()
  loop_state& state_;
  store::database db_;
  projection::applier applier_;
  std::vector<projection::envelope> batch_;
  std::size_t batch_bytes_ = 0;  // of its bodies
  std::chrono::steady_clock::time_point batch_started_;
  std::chrono::steady_clock::time_point next_prune_{};
  std::chrono::steady_clock::time_point file_checked_ = std::chrono::steady_clock::now();
  std::string prune_cursor_;
  std::int64_t pruned_ = 0;
  bool failed_ = false;
  bool joined_ = false;  // the group's assignment (partitions or none) holds
  bool shared_ = false;  // the last check found members writing another database (group_shared)
  const std::string group_ = cfg_.group_prefix + "." + std::string(projection::name(cfg_.projection));
  // The group and the database file's device and inode: the same for every
  // process writing this file on this host, another for a copy.
  const std::string client_id_ = group_ + "." + file_identity(cfg_.db_path);
  log::overdue unassigned_{cfg_.join_deadline};
  int failed_code_ = exit_db_failed;
  kafka::consumer* cons_ = nullptr;  // set in run(), for on_assign
  // Per partition resuming one record early: the record before the stored
  // next offset and the svix-id stored with that offset (check_resume).
  std::map<std::int32_t, known_record> checks_;
  // Per partition, the record stored as checked with the offset, when it is
  // before the record applied last (check_resume, compare_later).
  std::map<std::int32_t, known_record> stored_checked_;
  // Per partition, the record applied last, and the latest record known to
  // be in the log being read (the resume check's, the first applied, or
  // one applied before the last position check passed), or, until a check
  // has read it, the one to compare first (compare_later()): check_position().
  std::map<std::int32_t, known_record> applied_, verified_;
  std::chrono::steady_clock::time_point position_checked_{};
  bool check_now_ = false;  // a record to check before applying (check_resume, compare_later)
  std::optional<kafka::consumer> reader_;  // group-less, for check_position()
  log::rate_limiter limiter_;              // position_unchecked (per partition), prune_failed
};

}  // namespace

std::int64_t steady_ms() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now().time_since_epoch())
      .count();
}

projection::envelope to_envelope(kafka::message&& m) {
  projection::envelope e;
  e.topic = std::move(m.topic);
  e.partition = m.partition;
  e.offset = m.offset;
  e.svix_id = std::string(kafka::find_header(m.headers, "svix-id").value_or(""));
  e.type = std::string(kafka::find_header(m.headers, "clerk-event-type").value_or(""));
  e.body = std::move(m.value);
  return e;
}

int run_loop(const loop_config& cfg, const std::atomic<bool>& stop, loop_state& state) {
  int code = 0;
  try {
    consume_loop l(cfg, state);
    code = l.run(stop);
  } catch (const store::open_error& e) {
    log::error("db_open_failed", {{"projection", projection::name(cfg.projection)}, {"error", e.what()}});
    code = exit_db_failed;
  } catch (const store::db_error& e) {
    log::error("db_failed", {{"projection", projection::name(cfg.projection)}, {"error", e.what()}});
    code = exit_db_failed;
  } catch (const std::system_error& e) {  // the projection's lock file
    log::error("db_failed", {{"projection", projection::name(cfg.projection)}, {"error", e.what()}});
    code = exit_db_failed;
  } catch (const kafka::offset_out_of_range& e) {
    log::error("offset_out_of_range", {{"projection", projection::name(cfg.projection)},
                                       {"topic", e.topic},
                                       {"partition", e.partition},
                                       {"offset", e.offset},
                                       {"log_start", e.log_start},
                                       {"log_end", e.log_end}});
    code = exit_offset_out_of_range;
  } catch (const kafka::config_error& e) {
    // A bad librdkafka property: the start-up contract's one line and exit 2
    // (once, though every projection's worker finds the same property bad).
    static std::once_flag reported;
    std::call_once(reported,
                   [&] { (void)config::report_exit("clerk-sync-consumer", "bad_setting", e.what(), exit_bad_kafka_config); });
    code = exit_bad_kafka_config;
  } catch (const std::exception& e) {
    log::error("kafka_failed", {{"projection", projection::name(cfg.projection)}, {"error", e.what()}});
    code = exit_kafka_failed;
  }
  state.exit_code = code;
  state.done = true;
  return code;
}

}  // namespace clerk_sync::consume
