#include "projection/mapping.hpp"

#include <doctest/doctest.h>

namespace pj = clerk_sync::projection;
namespace ev = clerk_sync::event;

TEST_CASE("decimal text is normalized exactly, never through a double") {
  CHECK(pj::normalize_decimal("007.50") == "7.5");
  CHECK(pj::normalize_decimal("1e3") == "1000");
  CHECK(pj::normalize_decimal("1.5E-3") == "0.0015");
  CHECK(pj::normalize_decimal("-0.000") == "0");
  CHECK(pj::normalize_decimal("+12") == "12");
  CHECK(pj::normalize_decimal(".5") == "0.5");
  CHECK(pj::normalize_decimal("123456789012345678901234567890.000000000000000001") ==
        "123456789012345678901234567890.000000000000000001");
  for (const char* bad : {"", "abc", "1.2.3", "1e", "--1", "0x10", " 1", "1e1001", "NaN"})
    CHECK_FALSE_MESSAGE(pj::normalize_decimal(bad).has_value(), bad);
}

TEST_CASE("an amount too large for a double survives exactly, written out in digits too, and reads back as itself") {
  const std::string digits400(400, '9');
  CHECK(pj::normalize_decimal(digits400) == digits400);
  CHECK(pj::normalize_decimal("-" + digits400 + ".10") == "-" + digits400 + ".1");
  CHECK(pj::normalize_decimal("0." + std::string(399, '0') + "1") == "0." + std::string(399, '0') + "1");
  for (const char* in : {"1e400", "-1.5E-400", "9.99e399", "007.50"}) {
    const auto once = pj::normalize_decimal(in);
    REQUIRE_MESSAGE(once.has_value(), in);
    CHECK_MESSAGE(pj::normalize_decimal(*once) == once, in);
  }
  ev::user u;
  u.id = "u1";
  u.keys.g2a_balance = ev::scalar{digits400, false};
  CHECK(std::get<pj::balance_row>(pj::map_balance(u)).g2a_balance == digits400);
  // The same value however written: the bound is the text's, not the exponent's.
  CHECK(pj::normalize_decimal("1e401") == "1" + std::string(401, '0'));
  CHECK(pj::normalize_decimal("10e400") == pj::normalize_decimal("1e401"));
  CHECK(pj::normalize_decimal("1e999") == "1" + std::string(999, '0'));
  // Still bounded: metadata is user data.
  CHECK_FALSE(pj::normalize_decimal(std::string(5000, '1')).has_value());
  CHECK_FALSE(pj::normalize_decimal("1e1000").has_value());      // 1,001 characters written out
  CHECK_FALSE(pj::normalize_decimal("1e999999999").has_value());  // never a gigabyte of zeros
}

TEST_CASE("projection names parse one or a comma list - unknown names are reported") {
  CHECK(pj::parse_kinds("users")->size() == 1);
  CHECK(*pj::parse_kinds("users, sessions,users") == std::vector<pj::kind>{pj::kind::users, pj::kind::sessions});
  std::string bad;
  CHECK_FALSE(pj::parse_kinds("users,payments", &bad).has_value());
  CHECK(bad == "payments");
  CHECK_FALSE(pj::parse_kinds("", &bad).has_value());
}

TEST_CASE("roles: the five known ones, spacer by default, anything else stays spacer and is reported") {
  ev::user u;
  u.id = "u1";
  CHECK(pj::map_user(u).role == "spacer");
  u.keys.role = ev::scalar{"pro-curator", false};
  CHECK(pj::map_user(u).role == "pro-curator");
  u.keys.role = ev::scalar{"superuser", false};
  const auto r = pj::map_user(u);
  CHECK(r.role == "spacer");
  CHECK(r.rejected_role == "superuser");
  u.keys.role = ev::scalar{"object", true};
  CHECK(pj::map_user(u).role == "spacer");
  CHECK(pj::map_user(u).rejected_role == "an object");  // not a role named "object"
}

TEST_CASE("referrals: self-referral is refused, and a code or referrer that is an object, array or boolean is a mapping error") {
  ev::user u;
  u.id = "u1";
  u.keys.referral_code = ev::scalar{"CODE1", false};
  u.keys.referrer_id = ev::scalar{"u1", false};
  const auto r = std::get<pj::referral_row>(pj::map_referral(u));
  CHECK(r.referral_code == "CODE1");
  CHECK_FALSE(r.referrer_id.has_value());
  CHECK(r.self_referral_refused);
  // Read as no code, an array gave the user's code away; read as "true", a
  // boolean became a referrer for good.
  u.keys.referrer_id = ev::scalar{"boolean", true};
  CHECK(std::get<pj::mapping_error>(pj::map_referral(u)).reason == "referrer_id is a boolean");
  u.keys.referrer_id.reset();
  u.keys.referral_code = ev::scalar{"array", true};
  CHECK(std::get<pj::mapping_error>(pj::map_referral(u)).reason == "referral_code is an array");
  u.keys.referral_code = ev::scalar{"", false};  // an empty code is none: the user gave theirs up
  CHECK_FALSE(std::get<pj::referral_row>(pj::map_referral(u)).referral_code.has_value());
}

TEST_CASE("balances: numbers or strings in, exact text out - bad amounts are mapping errors") {
  ev::user u;
  u.id = "u1";
  const auto zero = std::get<pj::balance_row>(pj::map_balance(u));
  CHECK(zero.points_balance == 0);
  CHECK(zero.g2a_balance == "0");
  u.keys.points_balance = ev::scalar{"1200", false};
  u.keys.nft_count = ev::scalar{"3", false};
  u.keys.g2a_balance = ev::scalar{"99999999999999999999.10", false};
  const auto row = std::get<pj::balance_row>(pj::map_balance(u));
  CHECK(row.points_balance == 1200);
  CHECK(row.nft_count == 3);
  CHECK(row.g2a_balance == "99999999999999999999.1");
  auto reason = [&](std::optional<ev::scalar> ev::go2asia_keys::*key, ev::scalar value) {
    u.keys = {};
    u.keys.*key = std::move(value);
    const auto r = pj::map_balance(u);
    REQUIRE(std::holds_alternative<pj::mapping_error>(r));
    return std::get<pj::mapping_error>(r).reason;
  };
  CHECK(reason(&ev::go2asia_keys::g2a_balance, ev::scalar{"ten", false}) == "g2a_balance is not a decimal number: ten");
  CHECK(reason(&ev::go2asia_keys::points_balance, ev::scalar{"1.5", false}) == "points_balance is not an integer: 1.5");
  CHECK(reason(&ev::go2asia_keys::points_balance, ev::scalar{"99999999999999999999", false}).starts_with("points_balance is out of range"));
  CHECK(reason(&ev::go2asia_keys::nft_count, ev::scalar{"-1", false}) == "nft_count is negative");
  CHECK(reason(&ev::go2asia_keys::g2a_balance, ev::scalar{"array", true}) == "g2a_balance is an array");
}

TEST_CASE("sessions: terminal states get ended_at") {
  ev::session s;
  s.id = "s";
  s.user_id = "u";
  s.updated_at = 10;
  for (const char* t : {"ended", "removed", "revoked", "expired", "abandoned", "replaced"}) {
    s.status = t;
    CHECK(pj::map_session(s).ended_at == 10);
  }
  s.status = "active";
  CHECK_FALSE(pj::map_session(s).ended_at.has_value());
  CHECK_FALSE(pj::is_terminal("pending"));
}
