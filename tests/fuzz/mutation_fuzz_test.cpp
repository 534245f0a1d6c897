// A short mutation fuzz run over the code that reads untrusted bytes: the
// receiver's request classification (after a valid signature, so the JSON
// path is reached), Clerk event decoding, and the projections' apply step.
// Seeds are Clerk's example bodies; each case is bounded in iterations and
// time. Most useful in the ASan+UBSan build (CLERK_SYNC_SANITIZE=ON), where a
// memory error fails the run; everywhere, the invariants below must hold.

#include <doctest/doctest.h>

#include <chrono>
#include <filesystem>
#include <map>
#include <random>
#include <string>
#include <vector>

#include "event/clerk_event.hpp"
#include "http/handler.hpp"
#include "projection/applier.hpp"
#include "store/database.hpp"
#include "support/support.hpp"
#include "verify/svix.hpp"

namespace cs = clerk_sync;
using namespace std::chrono_literals;

namespace {

constexpr int max_iterations = 20'000;
constexpr auto max_time = 3s;

std::vector<std::string> seeds() {
  std::vector<std::string> out;
  for (const auto& entry : std::filesystem::directory_iterator(cs::test::source_path("tests/fixtures/clerk")))
    if (entry.path().extension() == ".json") out.push_back(cs::test::read_file(entry.path()));
  REQUIRE(out.size() >= 8);
  return out;
}

// One random edit: flip, delete, insert a JSON-ish token, duplicate, truncate.
std::string mutate(std::string s, std::mt19937_64& rng) {
  static const std::vector<std::string> tokens{
      "{", "}", "[", "]", ",", ":", "\"", "null", "true", "-", "1e309", "\\u0000", "\"id\":", "\"type\":",
      "\"data\":{", "99999999999999999999999999.000000001", "\"user.updated\"", "\"session.ended\"", "\xff\xfe"};
  auto pos = [&](std::size_t n) { return n == 0 ? 0 : static_cast<std::size_t>(rng() % (n + 1)); };
  const int edits = 1 + static_cast<int>(rng() % 4);
  for (int e = 0; e < edits; ++e) {
    switch (rng() % 5) {
      case 0:
        if (!s.empty()) s[pos(s.size() - 1)] = static_cast<char>(rng() & 0xff);
        break;
      case 1: {
        const auto at = pos(s.size());
        s.erase(at, static_cast<std::size_t>(rng() % 16));
        break;
      }
      case 2:
        s.insert(pos(s.size()), tokens[rng() % tokens.size()]);
        break;
      case 3: {
        const auto at = pos(s.size());
        s.insert(pos(s.size()), s.substr(at, static_cast<std::size_t>(rng() % 64)));
        break;
      }
      default:
        s.resize(pos(s.size()));
    }
  }
  return s;
}

template <class F>
void fuzz(std::uint64_t seed, F&& one) {
  const auto corpus = seeds();
  std::mt19937_64 rng(seed);
  const auto until = std::chrono::steady_clock::now() + max_time;
  int n = 0;
  for (; n < max_iterations && std::chrono::steady_clock::now() < until; ++n) {
    const std::string body = mutate(corpus[rng() % corpus.size()], rng);
    INFO("seed " << seed << ", iteration " << n);
    one(body, n);
  }
  MESSAGE(n << " mutated bodies");
}

}  // namespace

TEST_CASE("fuzz: a validly signed mutated body is published with its user id, ignored, or a 400") {
  const cs::verify::key key = "fuzz-key-0123456789abcdef";
  const cs::http::handler_config cfg{"/webhooks/clerk", {key}, cs::verify::default_tolerance};
  const auto now = std::chrono::system_clock::now();
  const auto ts = std::chrono::duration_cast<std::chrono::seconds>(now.time_since_epoch()).count();
  int published = 0, refused = 0;
  fuzz(1, [&](const std::string& body, int n) {
    const std::string id = "msg_fuzz_" + std::to_string(n);
    const std::string ts_text = std::to_string(ts);
    const std::string sig = cs::verify::sign(key, id, ts, body);
    cs::http::request_view req{"POST", "/webhooks/clerk", body, [&](std::string_view name) -> std::optional<std::string_view> {
                                 if (name == "svix-id") return id;
                                 if (name == "svix-timestamp") return ts_text;
                                 if (name == "svix-signature") return sig;
                                 return std::nullopt;
                               }};
    const auto d = cs::http::classify(req, cfg, now, cs::http::readiness::ready);
    if (d.publish) {
      CHECK_FALSE(d.publish->key.empty());
      const bool handled = d.publish->type.starts_with("user.") || d.publish->type.starts_with("session.");
      CHECK(handled);
      CHECK(d.publish->svix_id == id);
      ++published;
    } else {
      const int status = d.answer.status;
      CHECK((status == 200 || status == 400));
      if (status == 400) ++refused;
    }
  });
  // Both sides of the JSON path were reached, or the run proved nothing.
  CHECK(published > 100);
  CHECK(refused > 100);
}

TEST_CASE("fuzz: decoding and applying mutated events never throws and always records an outcome") {
  cs::store::database db(":memory:");
  cs::projection::applier ap(db, {std::begin(cs::projection::all_kinds), std::end(cs::projection::all_kinds)});
  std::map<cs::projection::outcome, int> outcomes;
  fuzz(2, [&](const std::string& body, int n) {
    (void)cs::event::decode(body);  // must return, whatever the bytes
    const cs::projection::envelope m{"fuzz", 0, n, "msg_fuzz_" + std::to_string(n), "", body};
    std::vector<cs::projection::event_result> results;
    REQUIRE_NOTHROW(results = ap.apply({&m, 1}));
    CHECK(results.size() == std::size(cs::projection::all_kinds));
    for (const auto& r : results) ++outcomes[r.result];
  });
  // Mutations both still map and break the mapping.
  CHECK(outcomes[cs::projection::outcome::applied] > 100);
  CHECK(outcomes[cs::projection::outcome::dead_letter] > 100);
  // Every message moved every projection's offset: nothing was skipped.
  for (const auto k : cs::projection::all_kinds) {
    const auto stored = cs::projection::stored_offsets(db, k, "fuzz");
    REQUIRE(stored.size() == 1);
    CHECK(stored.begin()->second > 100);
  }
}
