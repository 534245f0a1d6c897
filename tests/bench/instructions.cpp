// Bench-only driver for scripts/bench-instructions, run under callgrind:
//   bench-instructions <case> <side> <items>
// does one case's work <items> times with callgrind's collection on only
// around that loop (CALLGRIND_TOGGLE_COLLECT; with --collect-atstart=no the
// totals are the loop's alone), so the script divides the instructions by
// <items>. Instruction counts do not move with the machine's other load, so
// one run shows what a change to a hot path costs, where wall-clock pairs
// on a shared 2-core VM drown a few per cent in their spread (the log
// sink's flusher thread wakes on wall time, so its cases move by about
// 0.01 %). The driver uses glibc's malloc, as the consumer does; the
// receiver links jemalloc.
//
// Each case has two sides, measured the same way on the same inputs:
//   clerk-sync  what the programs do for one item;
//   floor       the least any implementation must do for it (named by
//               floor_of() below), so that the ratio says how far above it
//               the project's code is.
// Cases:
//   classify    http::classify of a signed 2,132-byte Clerk webhook (the
//               receiver bench's body), distinct svix ids: the receiver's
//               work per webhook outside HTTP and Kafka (signature,
//               envelope, decision). Floor: its HMAC-SHA256 alone.
//   decode      event::decode of the consumer bench's generated events (a
//               projection decodes each event once). Floor: RapidJSON's SAX
//               reader over a copy of the body, in place as decode reads it,
//               with a handler that keeps nothing: every byte read once.
//   log_logfmt  the receiver's `published` line (log::info) to /dev/null,
//   log_json    in each format. Floor: snprintf of the same fields + fwrite.
//   apply       the consumer bench's events through four appliers, one a
//               projection, each with its own connection to one fresh
//               database, in batches of 2,000: what the four loops of a
//               consumer process do for an event, Kafka and log lines apart
//               (decode, ledger, rows, offsets, commit). Its floor is
//               bench-consumer-ceiling's loop, which the script counts.

#include <openssl/core_names.h>
#include <unistd.h>
#include <openssl/evp.h>
#include <rapidjson/reader.h>
#include <valgrind/callgrind.h>

#include <chrono>
#include <cstdio>
#include <filesystem>
#include <functional>
#include <cstdlib>
#include <fstream>
#include <iostream>
#include <memory>
#include <sstream>
#include <string>
#include <string_view>
#include <vector>

#include "consumer/generator.hpp"
#include "event/clerk_event.hpp"
#include "http/handler.hpp"
#include "log/log.hpp"
#include "projection/applier.hpp"
#include "store/database.hpp"
#include "verify/svix.hpp"

namespace {

using namespace clerk_sync;

// Keeps a result alive so that the compiler cannot drop the work.
template <class T>
void keep(const T& v) {
  asm volatile("" : : "g"(&v) : "memory");
}

std::string read_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw std::runtime_error("cannot read " + path);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

struct signed_request {
  std::string id, timestamp, signature;
};

int classify_case(bool floor, int items, const std::string& body_file) {
  const std::string body = read_file(body_file);
  // A key made for the run: never a real secret, never printed.
  std::string raw(24, '\0');
  for (std::size_t i = 0; i < raw.size(); ++i) raw[i] = static_cast<char>(std::rand());
  const auto now = std::chrono::system_clock::now();
  const auto ts = std::chrono::duration_cast<std::chrono::seconds>(now.time_since_epoch()).count();
  std::vector<signed_request> reqs;
  reqs.reserve(static_cast<std::size_t>(items));
  for (int i = 0; i < items; ++i) {
    std::string id = "msg_bench_" + std::to_string(i);
    reqs.push_back({id, std::to_string(ts), verify::sign(raw, id, ts, body)});
  }
  http::handler_config cfg;
  cfg.keys = {raw};
  if (floor) {
    std::unique_ptr<EVP_MAC, decltype(&EVP_MAC_free)> mac(EVP_MAC_fetch(nullptr, "HMAC", nullptr), &EVP_MAC_free);
    std::unique_ptr<EVP_MAC_CTX, decltype(&EVP_MAC_CTX_free)> ctx(EVP_MAC_CTX_new(mac.get()), &EVP_MAC_CTX_free);
    char digest_name[] = "SHA256";
    const OSSL_PARAM params[] = {OSSL_PARAM_construct_utf8_string(OSSL_MAC_PARAM_DIGEST, digest_name, 0),
                                 OSSL_PARAM_construct_end()};
    if (!ctx || EVP_MAC_CTX_set_params(ctx.get(), params) != 1) return 2;
    const auto* k = reinterpret_cast<const unsigned char*>(raw.data());
    unsigned char out[EVP_MAX_MD_SIZE];
    std::size_t out_len = 0;
    CALLGRIND_TOGGLE_COLLECT;
    for (const auto& r : reqs) {
      EVP_MAC_init(ctx.get(), k, raw.size(), nullptr);
      for (const std::string_view piece : {std::string_view(r.id), std::string_view("."),
                                           std::string_view(r.timestamp), std::string_view("."),
                                           std::string_view(body)})
        EVP_MAC_update(ctx.get(), reinterpret_cast<const unsigned char*>(piece.data()), piece.size());
      EVP_MAC_final(ctx.get(), out, &out_len, sizeof out);
      keep(out);
    }
    CALLGRIND_TOGGLE_COLLECT;
    return 0;
  }
  int published = 0;
  CALLGRIND_TOGGLE_COLLECT;
  for (const auto& r : reqs) {
    http::request_view req{"POST", cfg.path, body, [&r](std::string_view name) -> std::optional<std::string_view> {
                             if (name == "svix-id") return r.id;
                             if (name == "svix-timestamp") return r.timestamp;
                             if (name == "svix-signature") return r.signature;
                             return std::nullopt;
                           }};
    const auto d = http::classify(req, cfg, now, http::readiness::ready);
    published += d.publish.has_value();
    keep(d);
  }
  CALLGRIND_TOGGLE_COLLECT;
  // Every request must have been accepted, or the figure is of refusals.
  return published == items ? 0 : 3;
}

// The consumer bench's stream (its users and seed), `items` events long.
std::vector<test::generated_event> bench_events(int items) {
  return test::generate_events({.users = 2000, .events = items, .seed = 1});
}

int decode_case(bool floor, int items) {
  const auto events = bench_events(items);
  int decoded = 0;
  std::string buffer;
  CALLGRIND_TOGGLE_COLLECT;
  for (const auto& e : events) {
    if (floor) {
      // What decode's parse reads, with a handler that keeps nothing.
      buffer.assign(e.body);
      rapidjson::InsituStringStream in(buffer.data());
      rapidjson::BaseReaderHandler<> nothing;
      rapidjson::Reader reader;
      constexpr unsigned flags =
          rapidjson::kParseIterativeFlag | rapidjson::kParseInsituFlag | rapidjson::kParseNumbersAsStringsFlag;
      decoded += !reader.Parse<flags>(in, nothing).IsError();
      keep(buffer);
    } else {
      const auto d = event::decode(e.body);
      decoded += std::holds_alternative<event::clerk_event>(d);
      keep(d);
    }
  }
  CALLGRIND_TOGGLE_COLLECT;
  std::printf("items=%zu\n", events.size());  // the generator may give one more
  return decoded == static_cast<int>(events.size()) ? 0 : 3;
}

// A folder of the driver's own under the temporary directory, removed
// however the case ends.
struct scratch_dir {
  std::filesystem::path path =
      std::filesystem::temp_directory_path() / ("bench-instructions-" + std::to_string(::getpid()));
  scratch_dir() { std::filesystem::create_directories(path); }
  ~scratch_dir() {
    std::error_code ignored;
    std::filesystem::remove_all(path, ignored);
  }
  scratch_dir(const scratch_dir&) = delete;
  scratch_dir& operator=(const scratch_dir&) = delete;
};

int log_case(bool floor, int items, log::format f) {
  // Into a file, so that the lines can be found written afterwards (a
  // threshold or a format that dropped them would count nothing real).
  const scratch_dir dir;
  const auto out = dir.path / "lines";
  if (!std::freopen(out.c_str(), "w", stderr)) return 2;
  log::init(f, log::level::info);
  const std::string svix_id = "msg_2pTzOv4KmTgF8kZJrXtlw3sQpNf";
  const std::string type = "user.updated";
  const std::string user = "user_2pTzOwbxKmEv5NLZ0t7m1hQcqYs";
  const bool json = f == log::format::json;
  char buf[512];
  CALLGRIND_TOGGLE_COLLECT;
  for (int i = 0; i < items; ++i) {
    const double ms = 0.25 + i % 1000 * 0.001;
    if (!floor) {
      log::info("published", {{"svix_id", svix_id}, {"type", type}, {"user", user}, {"status", 200},
                               {"outcome", "acknowledged"}, {"partition", i % 6}, {"offset", 1000000 + i},
                               {"ms", ms}});
      continue;
    }
    const int n =
        json ? std::snprintf(buf, sizeof buf,
                             "{\"ts\":\"2026-12-06T22:00:00.000Z\",\"level\":\"info\",\"msg\":\"published\","
                             "\"svix_id\":\"%s\",\"type\":\"%s\",\"user\":\"%s\",\"status\":%d,\"outcome\":"
                             "\"acknowledged\",\"partition\":%d,\"offset\":%d,\"ms\":%.3f}\n",
                             svix_id.c_str(), type.c_str(), user.c_str(), 200, i % 6, 1000000 + i, ms)
             : std::snprintf(buf, sizeof buf,
                             "ts=2026-12-06T22:00:00.000Z level=info msg=published svix_id=%s type=%s user=%s "
                             "status=%d outcome=acknowledged partition=%d offset=%d ms=%.3f\n",
                             svix_id.c_str(), type.c_str(), user.c_str(), 200, i % 6, 1000000 + i, ms);
    std::fwrite(buf, 1, static_cast<std::size_t>(n), stderr);
  }
  CALLGRIND_TOGGLE_COLLECT;
  std::fflush(stderr);
  // Every line written: at least the floor's shortest line's bytes each.
  return std::filesystem::file_size(out) >= static_cast<std::uintmax_t>(items) * 100 ? 0 : 3;
}

int apply_case(int items) {
  const auto events = bench_events(items);
  // Partitions by key, so that each user's events keep their order, as the
  // receiver's keyed records do; offsets count up in each.
  std::vector<projection::envelope> records;
  std::int64_t next[6] = {};
  for (const auto& e : events) {
    const auto p = static_cast<std::int32_t>(std::hash<std::string>{}(e.key) % 6);
    records.push_back({"clerk.events", p, next[p]++, e.svix_id, e.type, e.body});
  }
  const scratch_dir dir;
  const std::string path = (dir.path / "apply.db").string();
  int dead = 0, applied = 0;
  {
    std::vector<std::unique_ptr<store::database>> dbs;
    std::vector<std::unique_ptr<projection::applier>> appliers;
    for (const auto k : projection::all_kinds) {
      dbs.push_back(std::make_unique<store::database>(path));
      appliers.push_back(std::make_unique<projection::applier>(*dbs.back(), std::vector{k}));
    }
    const std::span<const projection::envelope> all(records);
    CALLGRIND_TOGGLE_COLLECT;
    for (std::size_t at = 0; at < all.size(); at += 2000) {
      const auto batch = all.subspan(at, std::min<std::size_t>(2000, all.size() - at));
      for (auto& a : appliers)
        for (const auto& r : a->apply(batch)) {
          dead += r.result == projection::outcome::dead_letter;
          applied += r.result == projection::outcome::applied;
        }
    }
    CALLGRIND_TOGGLE_COLLECT;
  }
  std::printf("items=%zu\n", events.size());
  // No dead letter, and rows written: a stream all skipped would count nothing real.
  return dead == 0 && applied > 0 ? 0 : 3;
}

}  // namespace

int main(int argc, char** argv) {
  const std::string which = argc > 1 ? argv[1] : "";
  const std::string side = argc > 2 ? argv[2] : "";
  const int items = argc > 3 ? std::atoi(argv[3]) : 0;
  if ((side != "clerk-sync" && side != "floor") || items <= 0 || (which == "classify" && argc != 5) ||
      (which != "classify" && argc != 4)) {
    std::cerr << "usage: bench-instructions classify|decode|log_logfmt|log_json|apply clerk-sync|floor <items>"
                 " [<body-file> for classify]\n";
    return 2;
  }
  const bool floor = side == "floor";
  try {
    if (which == "classify") return classify_case(floor, items, argv[4]);
    if (which == "decode") return decode_case(floor, items);
    if (which == "log_logfmt") return log_case(floor, items, log::format::logfmt);
    if (which == "log_json") return log_case(floor, items, log::format::json);
    if (which == "apply" && !floor) return apply_case(items);
  } catch (const std::exception& e) {
    std::cerr << "bench-instructions: " << e.what() << "\n";
    return 2;
  }
  std::cerr << "bench-instructions: unknown case " << which << "\n";
  return 2;
}
