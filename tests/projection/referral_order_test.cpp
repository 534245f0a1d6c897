// Who holds a referral code, and who referred whom, must not depend on the
// order the consumer met the events. Each user's events sit in one
// partition, but Svix retries put an older one after a newer one; between
// partitions a live consumer and a `ctl replay` may interleave them any
// way. These tests apply the same histories in several interleavings (and
// batch splits), then in any arrival order at all, and require the same
// referrals table each time: for interleavings, the table the rule gives (a
// code belongs to the live user whose current claim of it is the earliest:
// updated_at of the first event of the unbroken run naming it, then user
// id; the others wait for it in pending_referral_code; a deleted user holds
// nothing); for arrival orders, the table of updated_at order.

#include <doctest/doctest.h>

#include <SQLiteCpp/SQLiteCpp.h>

#include <algorithm>
#include <cstdint>
#include <map>
#include <optional>
#include <random>
#include <string>
#include <tuple>
#include <vector>

#include "projection/applier.hpp"
#include "support/support.hpp"

namespace pj = clerk_sync::projection;
namespace store = clerk_sync::store;

namespace {

// Clerk's times are ms since epoch; small offsets from here keep ties likely.
constexpr std::int64_t t0 = 1716883200000;

// One event of one user: an update naming a code (or none), or a deletion.
struct step {
  bool deletion = false;
  std::int64_t at = 0;  // updated_at, or the deletion's timestamp
  std::optional<std::string> code;
  std::optional<std::string> referrer;
};

struct history {
  std::vector<std::string> users;        // user ids, index = partition
  std::vector<std::vector<step>> steps;  // per user, in partition order
};

std::string body_of(const std::string& user, const step& s, bool first) {
  if (s.deletion)
    return R"({"type":"user.deleted","timestamp":)" + std::to_string(s.at) + R"(,"data":{"id":")" + user +
           R"(","deleted":true}})";
  const std::string type = first ? "user.created" : "user.updated";
  std::string meta;
  if (s.code) meta += R"("referral_code":")" + *s.code + R"(")";
  if (s.referrer) meta += std::string(meta.empty() ? "" : ",") + R"("referrer_id":")" + *s.referrer + R"(")";
  meta = "{" + meta + "}";
  return R"({"type":")" + type + R"(","timestamp":)" + std::to_string(s.at) + R"(,"data":{"id":")" + user +
         R"(","updated_at":)" + std::to_string(s.at) + R"(,"created_at":1,"public_metadata":)" + meta + "}}";
}

// Every event of the history as the consumer reads it: partition = user.
std::vector<std::vector<pj::envelope>> partitions_of(const history& h, const std::string& tag) {
  std::vector<std::vector<pj::envelope>> out(h.users.size());
  for (std::size_t u = 0; u < h.users.size(); ++u)
    for (std::size_t i = 0; i < h.steps[u].size(); ++i)
      out[u].push_back({"clerk.events", static_cast<std::int32_t>(u), static_cast<std::int64_t>(i),
                        tag + "_" + h.users[u] + "_" + std::to_string(i), "x",
                        body_of(h.users[u], h.steps[u][i], i == 0)});
  return out;
}

// The referrals table, every column, by user.
std::string dump(store::database& db) {
  SQLite::Statement st(db.native(), "SELECT * FROM referrals ORDER BY user_id");
  std::string out;
  while (st.executeStep()) {
    for (int i = 0; i < st.getColumnCount(); ++i)
      out += (st.getColumn(i).isNull() ? std::string("NULL") : st.getColumn(i).getString()) + "|";
    out += "\n";
  }
  return out;
}

// The columns the rule decides: user|code|pending|deleted.
std::string holders(store::database& db) {
  SQLite::Statement st(db.native(),
                       "SELECT user_id || '|' || coalesce(referral_code, 'NULL') || '|' || "
                       "coalesce(pending_referral_code, 'NULL') || '|' || (deleted_at IS NOT NULL) "
                       "FROM referrals ORDER BY user_id");
  std::string out;
  while (st.executeStep()) out += st.getColumn(0).getString() + "\n";
  return out;
}

// One database for all the runs, emptied before each: a fresh file's
// migrations and prepared statements cost more than the runs themselves.
struct bench {
  store::database db{":memory:"};
  pj::applier app{db, {pj::kind::referrals}};
};

// Applies `events` in that order, cut into batches of the given sizes
// (cycled), to an emptied database; returns every result line.
std::vector<pj::event_result> apply_all(bench& b, const std::vector<pj::envelope>& events,
                                        const std::vector<std::size_t>& batch_sizes) {
  for (const char* table : {"referrals", "applied_events", "kafka_offsets"})
    b.db.native().exec(std::string("DELETE FROM ") + table);
  std::vector<pj::event_result> results;
  std::size_t i = 0, cut = 0;
  while (i < events.size()) {
    const std::size_t n = std::min(batch_sizes[cut++ % batch_sizes.size()], events.size() - i);
    const std::vector<pj::envelope> batch(events.begin() + static_cast<std::ptrdiff_t>(i),
                                          events.begin() + static_cast<std::ptrdiff_t>(i + n));
    auto rs = b.app.apply(batch);  // a UNIQUE violation mid-transaction would throw here
    results.insert(results.end(), rs.begin(), rs.end());
    i += n;
  }
  return results;
}

// Applies the partitions merged in `order` (a list of partition numbers,
// each as often as it has events), cut into batches of the given sizes
// (cycled), to an emptied database; returns the full dump and the holders.
std::pair<std::string, std::string> apply_in(bench& b, const std::vector<std::vector<pj::envelope>>& parts,
                                             const std::vector<std::size_t>& order,
                                             const std::vector<std::size_t>& batch_sizes) {
  std::vector<std::size_t> next(parts.size(), 0);
  std::vector<pj::envelope> merged;
  for (const auto p : order) merged.push_back(parts[p][next[p]++]);
  (void)apply_all(b, merged, batch_sizes);
  return {dump(b.db), holders(b.db)};
}

// The rule, computed from the history alone (no SQL, no interleaving):
// each user's events in partition order, dated as DESIGN.md and the
// README say (an event older than the row writes nothing but dates the
// claim of the code named now), then each code given to the live user
// whose claim began first.
std::string expected_holders(const history& h) {
  struct row {
    std::int64_t updated_at = 0;  // 0: no update yet
    std::optional<std::int64_t> deleted_at;
    std::optional<std::string> named;
    std::int64_t since = 0;
    std::optional<std::int64_t> broken_at;  // the latest event known not to name `named`
  };
  std::map<std::string, row> rows;
  for (std::size_t u = 0; u < h.users.size(); ++u) {
    for (const auto& s : h.steps[u]) {
      row& r = rows[h.users[u]];
      if (s.deletion) {
        if (!r.deleted_at) r.deleted_at = s.at;
        continue;
      }
      if (r.deleted_at && s.at <= *r.deleted_at) continue;  // a tombstone is final
      if (s.at >= r.updated_at) {
        if (s.code && s.code != r.named) {  // a new run of claims
          r.since = s.at;
          r.broken_at = r.updated_at != 0 ? std::optional(r.updated_at) : std::nullopt;
        }
        r.named = s.code;
        r.updated_at = s.at;
      } else if (r.named && (!r.broken_at || s.at > *r.broken_at)) {
        if (s.code == r.named) {
          r.since = std::min(r.since, s.at);  // the run began earlier
        } else {
          r.broken_at = s.at;  // the run broke later than it was thought to begin
          if (s.at >= r.since) r.since = r.updated_at;
        }
      }
    }
  }
  std::map<std::string, std::string> winner;  // code -> user
  for (const auto& [id, r] : rows) {
    if (!r.named || r.deleted_at) continue;
    auto it = winner.find(*r.named);
    if (it == winner.end() || std::pair(r.since, id) < std::pair(rows[it->second].since, it->second))
      winner[*r.named] = id;
  }
  std::string out;
  for (const auto& [id, r] : rows) {
    const bool holds = r.named && winner[*r.named] == id;
    out += id + "|" + (holds ? *r.named : "NULL") + "|" + (r.named && !holds ? *r.named : "NULL") + "|" +
           (r.deleted_at ? "1" : "0") + "\n";
  }
  return out;
}

history random_history(std::mt19937_64& rng) {
  auto pick = [&](int lo, int hi) { return std::uniform_int_distribution<int>(lo, hi)(rng); };
  static const char* const codes[] = {"X", "Y", "Z"};
  history h;
  const int users = pick(2, 4);
  const int ncodes = pick(1, 3);
  for (int u = 0; u < users; ++u) {
    h.users.push_back("u" + std::to_string(u));
    std::vector<step> steps;
    // Times on a coarse grid: equal updated_at across users happens often.
    std::int64_t t = t0 + 10 * pick(0, 4);
    const int n = pick(1, 4);
    bool deleted = false;
    for (int i = 0; i < n; ++i) {
      if (i > 0 && !deleted && pick(0, 99) < 20) {
        deleted = true;
        steps.push_back({true, t + 10 * pick(0, 2), std::nullopt, std::nullopt});
        continue;
      }
      step s;
      // Mostly forward; sometimes the same time, sometimes an older
      // snapshot (stale), and after a deletion a late update either side of it.
      const int dir = pick(0, 99);
      s.at = dir < 15 ? t - 10 : dir < 30 ? t : t + 10 * pick(1, 3);
      if (i == 0) s.at = t;
      t = std::max(t, s.at);
      if (pick(0, 99) >= 15) s.code = codes[pick(0, ncodes - 1)];
      steps.push_back(s);
    }
    h.steps.push_back(std::move(steps));
  }
  return h;
}

// A random merge of the partitions that keeps each one's order.
std::vector<std::size_t> random_merge(const history& h, std::mt19937_64& rng) {
  std::vector<std::size_t> order;
  for (std::size_t u = 0; u < h.steps.size(); ++u) order.insert(order.end(), h.steps[u].size(), u);
  std::shuffle(order.begin(), order.end(), rng);
  return order;
}

std::vector<std::size_t> user_after_user(const history& h, bool reversed) {
  std::vector<std::size_t> order;
  for (std::size_t k = 0; k < h.steps.size(); ++k) {
    const std::size_t u = reversed ? h.steps.size() - 1 - k : k;
    order.insert(order.end(), h.steps[u].size(), u);
  }
  return order;
}

std::string describe(const history& h) {
  std::string out;
  for (std::size_t u = 0; u < h.users.size(); ++u) {
    out += h.users[u] + ":";
    for (const auto& s : h.steps[u])
      out += s.deletion ? " deleted@" + std::to_string(s.at - t0)
                        : " " + s.code.value_or("-") + (s.referrer ? "/" + *s.referrer : "") + "@" +
                              std::to_string(s.at - t0);
    out += "\n";
  }
  return out;
}

// Every interleaving tried gives one table, and it is the rule's.
void check_order_free(bench& b, const history& h, std::mt19937_64& rng, int random_orders, const std::string& tag) {
  CAPTURE(describe(h));
  const auto parts = partitions_of(h, tag);
  const auto expected = expected_holders(h);
  const auto [first_dump, first_holders] = apply_in(b, parts, user_after_user(h, false), {1});
  CHECK(first_holders == expected);
  std::vector<std::vector<std::size_t>> orders{user_after_user(h, true)};
  for (int i = 0; i < random_orders; ++i) orders.push_back(random_merge(h, rng));
  for (const auto& order : orders) {
    const std::vector<std::size_t> sizes{static_cast<std::size_t>(std::uniform_int_distribution<int>(1, 4)(rng)),
                                         static_cast<std::size_t>(std::uniform_int_distribution<int>(1, 4)(rng))};
    CHECK(apply_in(b, parts, order, sizes).first == first_dump);
  }
}

// Every event of the history in the order Clerk stamped them: updated_at
// (a deletion at its timestamp), then user. The order the table must not
// depend on is any other.
std::vector<pj::envelope> in_time_order(const history& h, const std::string& tag) {
  const auto parts = partitions_of(h, tag);
  std::vector<std::tuple<std::int64_t, std::size_t, std::size_t>> keys;  // at, user, index
  for (std::size_t u = 0; u < h.steps.size(); ++u)
    for (std::size_t i = 0; i < h.steps[u].size(); ++i) keys.emplace_back(h.steps[u][i].at, u, i);
  std::sort(keys.begin(), keys.end());
  std::vector<pj::envelope> out;
  for (const auto& [at, u, i] : keys) out.push_back(parts[u][i]);
  return out;
}

// Any arrival order: Svix retries one message while it delivers the
// next, so a user's own events come in any order too. Except that a
// deletion never arrives before an update older than it: a tombstone is
// final for anything not newer (DESIGN.md section 2), for every projection.
std::vector<pj::envelope> random_arrival(const history& h, const std::vector<pj::envelope>& events,
                                         std::mt19937_64& rng) {
  std::vector<std::size_t> order(events.size());
  for (std::size_t i = 0; i < order.size(); ++i) order[i] = i;
  std::shuffle(order.begin(), order.end(), rng);
  // An envelope's partition and offset are its user and step.
  const auto step_of = [&](const pj::envelope& e) -> const step& {
    return h.steps[static_cast<std::size_t>(e.partition)][static_cast<std::size_t>(e.offset)];
  };
  // Moving one deletion keeps the order of every other pair: one pass does.
  for (std::size_t del = 0; del < events.size(); ++del) {
    if (!step_of(events[del]).deletion) continue;
    const auto p = static_cast<std::size_t>(std::find(order.begin(), order.end(), del) - order.begin());
    std::size_t last_older = p;
    for (std::size_t q = p + 1; q < order.size(); ++q) {
      const auto& e = events[order[q]];
      if (e.partition == events[del].partition && step_of(e).at < step_of(events[del]).at) last_older = q;
    }
    std::rotate(order.begin() + static_cast<std::ptrdiff_t>(p), order.begin() + static_cast<std::ptrdiff_t>(p) + 1,
                order.begin() + static_cast<std::ptrdiff_t>(last_older) + 1);
  }
  std::vector<pj::envelope> out;
  for (const auto i : order) out.push_back(events[i]);
  return out;
}

// Histories for arbitrary arrival: each user's events carry distinct times
// (equal updated_at of one user with different content has no order to
// follow), names a referrer often (or itself), and never names again a
// code it left: that is what bounded state can date exactly (README,
// "referrals").
history reordered_history(std::mt19937_64& rng) {
  auto pick = [&](int lo, int hi) { return std::uniform_int_distribution<int>(lo, hi)(rng); };
  static const char* const codes[] = {"X", "Y", "Z"};
  history h;
  const int users = pick(2, 4);
  for (int u = 0; u < users; ++u) {
    const std::string id = "u" + std::to_string(u);
    h.users.push_back(id);
    const std::vector<std::string> referrers{"uR", "uS", id};  // the user itself: refused
    std::vector<int> grid(10);
    for (int k = 0; k < 10; ++k) grid[static_cast<std::size_t>(k)] = k;
    std::shuffle(grid.begin(), grid.end(), rng);
    const int n = pick(1, 5);
    grid.resize(static_cast<std::size_t>(n));
    std::sort(grid.begin(), grid.end());
    const int deletion = n > 1 && pick(0, 99) < 25 ? pick(0, n - 1) : -1;
    std::vector<step> steps;
    std::vector<std::string> left;  // codes this user named and then left
    std::optional<std::string> current;
    for (int i = 0; i < n; ++i) {
      step s;
      s.at = t0 + 10 * grid[static_cast<std::size_t>(i)];
      if (i == deletion) {
        s.deletion = true;
        steps.push_back(s);
        continue;
      }
      if (pick(0, 99) < 50) {
        std::optional<std::string> c;
        if (pick(0, 99) >= 15) c = codes[pick(0, 2)];
        if (c && std::find(left.begin(), left.end(), *c) != left.end()) c = current;
        if (current && c != current) left.push_back(*current);
        current = c;
      }
      s.code = current;
      if (pick(0, 99) < 40) s.referrer = referrers[static_cast<std::size_t>(pick(0, 2))];
      steps.push_back(s);
    }
    h.steps.push_back(std::move(steps));
  }
  return h;
}

// Every referrals row of `db` in one line, by user id:
// "user=held?pending" and then `more` (an SQL expression of its columns).
std::string referral_rows(store::database& db, const std::string& more) {
  SQLite::Statement st(db.native(),
                       "SELECT group_concat(user_id || '=' || coalesce(referral_code, '-') || '?' || "
                       "coalesce(pending_referral_code, '-') || " + more +
                           ", ' ') FROM (SELECT * FROM referrals ORDER BY user_id)");
  REQUIRE(st.executeStep());
  return st.getColumn(0).getString();
}

}  // namespace

TEST_CASE("referrals: a user's own events in either order give the table of updated_at order (exploratory repro)") {
  // u1 names C0 with referrer uB at 7 and with uC at 27; u0 names C0 at 19.
  // In time order u1 holds C0 and keeps uB, and uC is the conflict. Met
  // with u1's two events swapped (a Svix retry), u0 used to take C0 and u1
  // to keep uC, with no line naming uB.
  const history h{{"u0", "u1"},
                  {{{false, t0 + 19, "C0", std::nullopt}},
                   {{false, t0 + 7, "C0", "uB"}, {false, t0 + 27, "C0", "uC"}}}};
  bench b;
  const auto in_order = in_time_order(h, "own");
  (void)apply_all(b, in_order, {1});
  const std::string expected = dump(b.db);
  CHECK(holders(b.db) == "u0|NULL|C0|0\nu1|C0|NULL|0\n");
  for (const auto& order : std::vector<std::vector<std::size_t>>{{2, 1, 0}, {2, 0, 1}, {0, 2, 1}}) {
    std::vector<pj::envelope> arrival;
    for (const auto i : order) arrival.push_back(in_order[i]);
    for (const std::size_t batch : {std::size_t{1}, std::size_t{3}}) {
      CAPTURE(batch);
      const auto rs = apply_all(b, arrival, {batch});
      CHECK(dump(b.db) == expected);
      CHECK(std::any_of(rs.begin(), rs.end(), [](const pj::event_result& r) {
        return r.detail.find("referrer conflict: kept uB, refused uC") != std::string::npos;
      }));
    }
  }
}

TEST_CASE("referrals: any arrival order, a user's own events included, gives the table of updated_at order") {
  // A fixed seed and count: the same histories every run, well under a
  // second in an optimized build.
  std::mt19937_64 rng(20261207);
  bench b;
  for (int i = 0; i < 400; ++i) {
    const history h = reordered_history(rng);
    CAPTURE(describe(h));
    const auto events = in_time_order(h, "r" + std::to_string(i));
    (void)apply_all(b, events, {1});
    const std::string expected = dump(b.db);
    for (int k = 0; k < 6; ++k) {
      const auto arrival = random_arrival(h, events, rng);
      std::string got;
      for (const auto& e : arrival)
        got += " " + h.users[static_cast<std::size_t>(e.partition)] + "#" + std::to_string(e.offset);
      CAPTURE(got);
      const std::vector<std::size_t> sizes{static_cast<std::size_t>(std::uniform_int_distribution<int>(1, 4)(rng))};
      (void)apply_all(b, arrival, sizes);
      REQUIRE(dump(b.db) == expected);
    }
  }
}

TEST_CASE("referrals: a deleted holder's code passes to the user waiting for it, in either order (review repro)") {
  // A owns X (t=100, partition 0); B claims X (t=150, partition 1); A is
  // deleted (t=200). Met A-first, B used to wait for X for ever.
  const history h{{"uA", "uB"},
                  {{{false, t0 + 100, "X", std::nullopt}, {true, t0 + 200, std::nullopt, std::nullopt}},
                   {{false, t0 + 150, "X", std::nullopt}}}};
  const auto parts = partitions_of(h, "repro");
  bench b;
  const std::string expected = "uA|NULL|X|1\nuB|X|NULL|0\n";
  REQUIRE(expected_holders(h) == expected);
  const auto a_first = apply_in(b, parts, {0, 0, 1}, {1});
  CHECK(a_first.second == expected);
  for (const auto& order : std::vector<std::vector<std::size_t>>{{0, 1, 0}, {1, 0, 0}}) {
    CHECK(apply_in(b, parts, order, {1}).first == a_first.first);
    CHECK(apply_in(b, parts, order, {3}).first == a_first.first);  // one batch, one transaction
  }
}

TEST_CASE("referrals: of two live claims of one code the earlier holds it, whichever is applied first") {
  // B's claim (t=100) predates A's (t=150); A's later update keeps its
  // claim's start; C's claim ties with B's and loses on the user id.
  const history h{{"uA", "uB", "uC"},
                  {{{false, t0 + 150, "X", std::nullopt}, {false, t0 + 300, "X", std::nullopt}},
                   {{false, t0 + 100, "X", std::nullopt}},
                   {{false, t0 + 100, "X", std::nullopt}}}};
  const std::string expected = "uA|NULL|X|0\nuB|X|NULL|0\nuC|NULL|X|0\n";
  REQUIRE(expected_holders(h) == expected);
  const auto parts = partitions_of(h, "overlap");
  bench b;
  const auto reference = apply_in(b, parts, {0, 0, 1, 2}, {1});
  CHECK(reference.second == expected);
  for (const auto& order : std::vector<std::vector<std::size_t>>{{1, 0, 0, 2}, {2, 1, 0, 0}, {0, 2, 0, 1}})
    CHECK(apply_in(b, parts, order, {1}).first == reference.first);
}

TEST_CASE("referrals: random histories give one table in every interleaving that keeps each user's order") {
  // A fixed seed and count: the same histories every run, well under a
  // second in an optimized build.
  std::mt19937_64 rng(20261205);
  bench b;
  for (int i = 0; i < 600; ++i) check_order_free(b, random_history(rng), rng, 5, "h" + std::to_string(i));
}

TEST_CASE("referrals: migration 005 takes codes from deleted users and from users that wait for another") {
  // A file at schema 4 holding what the earlier rule left: a deleted
  // holder, a user keeping its code while waiting for another.
  clerk_sync::test::temp_dir dir;
  const auto path = (dir / "v4.db").string();
  clerk_sync::test::file_at_schema(path, 4);
  {
    SQLite::Database raw(path, SQLite::OPEN_READWRITE);
    raw.exec(
        "INSERT INTO referrals(user_id, referral_code, pending_referral_code, updated_at, deleted_at) VALUES "
        "('uA', 'X', NULL, 100, 200), ('uB', NULL, 'X', 150, NULL), ('uB2', NULL, 'X', 160, NULL), "
        "('uC', 'C4', 'C1', 200, NULL), ('uD', 'C1', NULL, 50, NULL), ('uE', NULL, 'C4', 170, NULL), "
        "('uF', 'Z', NULL, 300, NULL), ('uG', NULL, 'Z', 120, NULL), ('uH', NULL, NULL, 10, NULL)");
  }
  store::database db(path);  // migrates
  const auto rows = [&] { return referral_rows(db, "'@' || coalesce(referral_code_since, '-')"); };
  // uA's X goes to uB (waiting since 150, before uB2); uC gives up C4 to uE
  // and waits for C1; uF keeps Z though uG's row is older (when uF's claim
  // began is not known: the holder stays, its claim dated before uG's).
  CHECK(rows() ==
        "uA=-?X@100 uB=X?-@150 uB2=-?X@160 uC=-?C1@200 uD=C1?-@50 uE=C4?-@170 uF=Z?-@119 uG=-?Z@120 uH=-?-@-");
  // From there on the rule holds: a claim of Z dated between uG's and uF's
  // rows waits, as uG does.
  pj::applier app(db, {pj::kind::referrals});
  const pj::envelope claim{"clerk.events", 0, 0, "m5", "x",
                           body_of("uK", {false, 200, std::string("Z"), std::nullopt}, true)};
  const auto rs = app.apply({&claim, 1});
  CHECK(rs[0].detail == "referral_code conflict: Z belongs to uF, an earlier claim; waiting until it is released");
  CHECK(rows() == "uA=-?X@100 uB=X?-@150 uB2=-?X@160 uC=-?C1@200 uD=C1?-@50 uE=C4?-@170 uF=Z?-@119 uG=-?Z@120 "
                  "uH=-?-@- uK=-?Z@200");
}

TEST_CASE("referrals: migration 007 keeps referrers of before and dates their claims from their rows") {
  // A file at schema 6: uA named referrer uR and holds X (claim since 50,
  // row at 100); uB waits for X since 80.
  clerk_sync::test::temp_dir dir;
  const auto path = (dir / "v6.db").string();
  clerk_sync::test::file_at_schema(path, 6);
  {
    SQLite::Database raw(path, SQLite::OPEN_READWRITE);
    raw.exec(
        "INSERT INTO referrals(user_id, referral_code, referrer_id, pending_referral_code, updated_at, "
        "referral_code_since) VALUES ('uA', 'X', 'uR', NULL, 100, 50), ('uB', NULL, NULL, 'X', 90, 80), "
        "('uC', NULL, NULL, NULL, 70, NULL)");
  }
  store::database db(path);  // migrates
  const auto rows = [&] {
    return referral_rows(db, "'@' || coalesce(referral_code_since, '-') || '>' || coalesce(referral_code_broken_at, "
                             "'-') || '/' || coalesce(referrer_id, '-') || '@' || coalesce(referrer_since, '-')");
  };
  CHECK(rows() == "uA=X?-@50>50/uR@- uB=-?X@80>80/-@- uC=-?-@->-/-@-");
  pj::applier app(db, {pj::kind::referrals});
  const auto event = [](std::int64_t offset, const step& s) {
    return pj::envelope{"clerk.events", 0, offset, "m7_" + std::to_string(offset), "x", body_of("uA", s, false)};
  };
  // When the row's referrer was named is not known: an older event naming
  // another one is the conflict, and writes nothing.
  const auto r1 = app.apply(std::vector{event(0, {false, 40, "X", "uS"})});
  CHECK(r1[0].result == pj::outcome::stale);
  CHECK(r1[0].detail == "referrer conflict: kept uR, refused uS");
  // An older event naming the code does not move a claim of before back.
  const auto r2 = app.apply(std::vector{event(1, {false, 30, "X", std::nullopt})});
  CHECK(r2[0].result == pj::outcome::stale);
  CHECK(rows() == "uA=X?-@50>50/uR@- uB=-?X@80>80/-@- uC=-?-@->-/-@-");
  // One naming another code after the claim began breaks it: dated from
  // the row (100), uA's claim comes after uB's (80), which gets X.
  const auto r3 = app.apply(std::vector{event(2, {false, 60, "Y", std::nullopt})});
  CHECK(r3[0].detail == "referral_code X released to uB");
  CHECK(rows() == "uA=-?X@100>60/uR@- uB=X?-@80>80/-@- uC=-?-@->-/-@-");
}
