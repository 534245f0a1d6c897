// Projection mapping: a decoded Clerk event -> the rows of every projection,
// written through the applier into an in-memory SQLite database (the body is
// the whole input). Properties: roles stay among the five; a self-referral is
// never stored; a decimal that maps is canonical (an independent reading for
// plain decimals, and idempotent) and is read back from SQLite as exactly the
// same text; integers map only from integral text; a terminal session is
// ended at its updated_at; every message ends with one outcome per projection.

#include <SQLiteCpp/SQLiteCpp.h>

#include <algorithm>
#include <cstdint>
#include <iterator>
#include <optional>
#include <string>
#include <string_view>
#include <variant>
#include <vector>

#include "event/clerk_event.hpp"
#include "fuzz_input.hpp"
#include "projection/applier.hpp"
#include "projection/mapping.hpp"
#include "store/database.hpp"

namespace cs = clerk_sync;
namespace pr = cs::projection;

namespace {

// A plain decimal (sign, digits, optional fraction, no exponent), read by
// hand: leading and trailing zeros dropped, "-0" is "0". nullopt otherwise.
std::optional<std::string> plain_decimal(std::string_view s) {
  bool negative = false;
  if (!s.empty() && (s.front() == '+' || s.front() == '-')) {
    negative = s.front() == '-';
    s.remove_prefix(1);
  }
  const auto dot = s.find('.');
  std::string_view whole = s.substr(0, dot);
  std::string_view frac = dot == std::string_view::npos ? std::string_view{} : s.substr(dot + 1);
  auto digits_only = [](std::string_view d) { return d.find_first_not_of("0123456789") == std::string_view::npos; };
  if (!digits_only(whole) || !digits_only(frac) || whole.size() + frac.size() == 0) return std::nullopt;
  while (!whole.empty() && whole.front() == '0') whole.remove_prefix(1);
  while (!frac.empty() && frac.back() == '0') frac.remove_suffix(1);
  if (whole.empty() && frac.empty()) return "0";
  std::string out = negative ? "-" : "";
  out += whole.empty() ? "0" : std::string(whole);
  if (!frac.empty()) out += "." + std::string(frac);
  return out;
}

// -?(0|[1-9][0-9]*)(\.[0-9]*[1-9])?, and never "-0".
bool canonical(std::string_view s) {
  if (s == "0") return true;
  if (s.starts_with('-')) s.remove_prefix(1);
  const auto dot = s.find('.');
  const auto whole = s.substr(0, dot);
  if (whole.empty() || whole.find_first_not_of("0123456789") != std::string_view::npos) return false;
  if (whole.size() > 1 && whole.front() == '0') return false;
  if (dot == std::string_view::npos) return whole != "0";
  const auto frac = s.substr(dot + 1);
  return !frac.empty() && frac.find_first_not_of("0123456789") == std::string_view::npos && frac.back() != '0';
}

void check_decimal(std::string_view text) {
  const auto canon = pr::normalize_decimal(text);
  if (!canon) return;
  FUZZ_CHECK(canonical(*canon));
  FUZZ_CHECK(pr::normalize_decimal(*canon) == canon);
  if (text.find_first_of("eE") == std::string_view::npos) FUZZ_CHECK(plain_decimal(text) == canon);
}

void check_user(const cs::event::user& u) {
  const auto row = pr::map_user(u);
  FUZZ_CHECK(std::find(std::begin(pr::known_roles), std::end(pr::known_roles), row.role) != std::end(pr::known_roles));
  if (row.rejected_role) FUZZ_CHECK(row.role == "spacer");

  const auto mapped = pr::map_referral(u);
  const auto composite = [](const std::optional<cs::event::scalar>& v) { return v && v->composite; };
  FUZZ_CHECK(std::holds_alternative<pr::mapping_error>(mapped) ==
             (composite(u.keys.referral_code) || composite(u.keys.referrer_id)));
  if (const auto* ref = std::get_if<pr::referral_row>(&mapped)) {
    FUZZ_CHECK(ref->referrer_id != u.id);
    FUZZ_CHECK(ref->self_referral_refused ==
               (!ref->referrer_id && u.keys.referrer_id && u.keys.referrer_id->text == u.id));
  }

  if (u.keys.g2a_balance && !u.keys.g2a_balance->composite) check_decimal(u.keys.g2a_balance->text);
  const auto balance = pr::map_balance(u);
  if (const auto* b = std::get_if<pr::balance_row>(&balance)) {
    FUZZ_CHECK(canonical(b->g2a_balance));
    if (u.keys.g2a_balance) FUZZ_CHECK(pr::normalize_decimal(u.keys.g2a_balance->text) == b->g2a_balance);
    else FUZZ_CHECK(b->g2a_balance == "0");
    if (u.keys.points_balance)
      FUZZ_CHECK(pr::normalize_decimal(u.keys.points_balance->text) == std::to_string(b->points_balance));
    FUZZ_CHECK(b->nft_count >= 0);
  } else {
    FUZZ_CHECK(!std::get<pr::mapping_error>(balance).reason.empty());
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const auto body = cs::fuzz::text(data, size);
  const auto decoded = cs::event::decode(body);
  const auto* e = std::get_if<cs::event::clerk_event>(&decoded);
  if (e) {
    if (const auto* u = std::get_if<cs::event::user>(&e->data)) check_user(*u);
    if (const auto* s = std::get_if<cs::event::session>(&e->data)) {
      const auto row = pr::map_session(*s);
      FUZZ_CHECK(row.id == s->id && row.user_id == s->user_id && !row.status.empty());
      FUZZ_CHECK(row.ended_at.has_value() == pr::is_terminal(row.status));
      if (row.ended_at) FUZZ_CHECK(*row.ended_at == row.updated_at);
      if (s->embedded_user) check_user(*s->embedded_user);
    }
  }

  // One database for the whole run, emptied after each input: every input
  // still meets empty tables (a crash replays exactly), and the migrations
  // and prepared statements are paid once instead of per input.
  static cs::store::database db(":memory:");
  static pr::applier applier(db, {std::begin(pr::all_kinds), std::end(pr::all_kinds)});
  static const std::vector<std::string> tables = [] {
    std::vector<std::string> out;
    // sqlite_sequence too: dead_letters' ids restart with each input.
    SQLite::Statement q(db.native(), "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_stat%'");
    while (q.executeStep()) out.push_back(q.getColumn(0).getString());
    return out;
  }();
  struct empty_after {
    ~empty_after() {
      for (const auto& t : tables) db.native().exec("DELETE FROM \"" + t + "\"");
    }
  } empty_tables;
  // Every input meets an empty ledger: the same svix-id is used for all.
  FUZZ_CHECK(db.native().execAndGet("SELECT count(*) FROM applied_events").getInt() == 0);
  const pr::envelope m{"fuzz", 0, 0, "msg_fuzz_1", e ? e->type : std::string(), std::string(body)};
  const auto results = applier.apply({&m, 1});
  FUZZ_CHECK(results.size() == std::size(pr::all_kinds));
  const auto* session = e ? std::get_if<cs::event::session>(&e->data) : nullptr;
  for (const auto& r : results) {
    if (!e) FUZZ_CHECK(r.result == pr::outcome::dead_letter);
    // A malformed embedded user: a dead letter for the user-derived
    // projections, never for the session it rides on.
    if (session && !session->embedded_user_error.empty())
      FUZZ_CHECK((r.result == pr::outcome::dead_letter) == (r.projection != pr::kind::sessions));
    if (r.projection != pr::kind::balances || r.result != pr::outcome::applied) continue;
    // The balance as SQLite gives it back: the same text, stored as text.
    const cs::event::user* u = e ? std::get_if<cs::event::user>(&e->data) : nullptr;
    if (const auto* s = e ? std::get_if<cs::event::session>(&e->data) : nullptr; s && s->embedded_user)
      u = &*s->embedded_user;
    if (!u) continue;  // user.deleted: a tombstone, no balance
    const auto mapped = pr::map_balance(*u);
    FUZZ_CHECK(std::holds_alternative<pr::balance_row>(mapped));
    SQLite::Statement q(db.native(), "SELECT g2a_balance, typeof(g2a_balance) FROM balances WHERE user_id = ?");
    q.bind(1, u->id);
    FUZZ_CHECK(q.executeStep());
    FUZZ_CHECK(q.getColumn(0).getString() == std::get<pr::balance_row>(mapped).g2a_balance);
    FUZZ_CHECK(q.getColumn(1).getString() == "text");
  }
  return 0;
}
