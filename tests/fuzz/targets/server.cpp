// The receiver's HTTP server itself (lib/http/server.cpp), driven over a
// loopback connection: the bytes of the input are what one client sends, a
// few at a time, before it half-closes; everything the server answers is
// read until it closes. Unlike `wire`, which follows the parser over one
// request, this runs the server's own loop: keep-alive and pipelined
// requests, 100-continue, early answers and their lingering close, the body
// memory budget, the publish step and its answer.
//
// Input: byte 0 sets the size of the client's writes (1 to 7,651 bytes);
// byte 1 the fake publisher's answer to every publish of this input (acked,
// refused by Kafka, queue full, too large, never reported) and whether
// Kafka is ready; the rest is sent. The webhook secret is the first
// published Svix vector's, with a tolerance wide enough for any timestamp,
// so that the seeds' signed requests verify (tests/fuzz/support/server_seeds.py
// writes them).
//
// Properties, for every input:
// - every record published is a body whose Svix signature, for the
//   record's own svix-id and svix-timestamp, the client sent: nothing is
//   published that was not signed, nor glued from two requests;
// - what the server sends parses as HTTP/1.1 answers, of the statuses the
//   design names, and nothing follows an answer that says it closes (not
//   checked when "HEAD" is anywhere in the input: an early answer to HEAD
//   keeps its Content-Length without the body, which a client can only
//   parse knowing the request);
// - with an orderly close (not a reset), each acknowledged publish was answered 200
//   "published", and no other answer says so (nothing lost, nothing made
//   up), and each publish was answered;
// - no 503 for the body memory budget: one connection cannot fill it, so
//   one would mean an earlier input's reservation was never given back;
// - the server has closed within 5 s of the connection (the client is done
//   well before: no connection waits for a timeout after its client is
//   done), and keeps no connection open.
//
// One server serves every input, as the receiver serves every client: its
// publish health (three failed publishes in a row make /readyz say
// publish_failing, for 30 s) carries over from one input to the next, so a
// finding may need the inputs before it. The seed publish_failing reaches
// that state in one input.

#include <boost/asio/io_context.hpp>
#include <boost/asio/post.hpp>

#include <algorithm>
#include <array>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "fuzz_input.hpp"
#include "http/server.hpp"
#include "log/log.hpp"
#include "loopback.hpp"
#include "verify/svix.hpp"

namespace net = boost::asio;
namespace cs = clerk_sync;
using namespace std::chrono_literals;

namespace {

// Published Svix vector A's secret (tests/fixtures/svix/svix-vectors.json).
constexpr std::string_view secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
constexpr std::string_view topic = "clerk.fuzz";

enum class publish_mode : std::uint8_t { acked, refused, queue_full, too_large, never_reported };

struct published_record {
  std::string value, svix_id, svix_timestamp;
};

struct environment {
  net::io_context ioc;
  cs::verify::key key = cs::verify::parse_secret(secret);
  std::unique_ptr<cs::http::server> server;
  publish_mode mode = publish_mode::acked;
  std::vector<published_record> published;
  std::vector<cs::kafka::producer::delivery_callback> unreported;  // kept alive until the input ends

  environment() {
    cs::log::init(cs::log::format::logfmt, cs::log::level::error);
    cs::http::handler_config handler;
    handler.keys = {key};
    handler.tolerance = std::chrono::hours(24 * 365 * 200);
    cs::http::server_limits limits;
    limits.read_timeout = 2s;
    limits.idle_timeout = 2s;
    limits.publish_deadline = 20ms;  // the never-reported publishes
    server = std::make_unique<cs::http::server>(
        ioc, cs::config::listen_address{"127.0.0.1", 0}, handler, limits, std::string(topic),
        [this](const cs::kafka::outgoing_record& rec, cs::kafka::producer::delivery_callback done, std::string*) {
          FUZZ_CHECK(rec.topic == topic);
          published_record r{std::string(rec.value), {}, {}};
          for (const auto& h : rec.headers) {
            if (h.key == "svix-id") r.svix_id = h.value;
            if (h.key == "svix-timestamp") r.svix_timestamp = h.value;
          }
          published.push_back(std::move(r));
          cs::kafka::delivery_report report;
          switch (mode) {
            case publish_mode::queue_full: return cs::kafka::enqueue_status::queue_full;
            case publish_mode::too_large: return cs::kafka::enqueue_status::too_large;
            case publish_mode::never_reported:
              unreported.push_back(std::move(done));
              return cs::kafka::enqueue_status::queued;
            case publish_mode::refused:
              report.error = "fuzz: refused";
              break;
            case publish_mode::acked:
              report.ok = true;
              report.partition = 0;
              report.offset = static_cast<std::int64_t>(published.size());
              break;
          }
          // As librdkafka's poller would: from elsewhere, later.
          net::post(ioc, [done = std::move(done), report] { done(report); });
          return cs::kafka::enqueue_status::queued;
        });
    server->start();
  }
};

environment& env() {
  static auto* e = new environment();  // lives as long as the process
  return *e;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  if (size < 2) return 0;
  auto& e = env();
  const auto piece = cs::fuzz::write_size(data[0]);
  e.mode = static_cast<publish_mode>((data[1] & 0x7) % 5);
  e.server->kafka_state = (data[1] & 0x38) == 0x38 ? cs::http::readiness::topic_missing : cs::http::readiness::ready;
  const auto sent = cs::fuzz::text(data + 2, size - 2);
  e.published.clear();

  const auto [received, read_end] =
      cs::fuzz::exchange(e.ioc, e.server->port(), sent, piece, [&] { return e.server->connections(); });
  e.unreported.clear();

  // Published: only what the client signed, whole.
  for (const auto& r : e.published) {
    const auto signature = cs::verify::sign(e.key, r.svix_id, r.svix_timestamp, r.value);
    FUZZ_CHECK(sent.find(signature) != std::string_view::npos);
  }
  const std::size_t acked = e.mode == publish_mode::acked ? e.published.size() : 0;

  // Answered: well-formed, known statuses, nothing after a closing answer.
  if (sent.find("HEAD") != std::string_view::npos) return 0;  // no body on the wire: not parsable without the request
  static constexpr std::array<unsigned, 8> known{200, 400, 401, 404, 405, 413, 431, 503};
  static const auto budget_refusal = cs::http::over_memory_budget().body;
  std::size_t says_published = 0, finals = 0;
  for (const auto& a : cs::fuzz::answers_of(received, known)) {
    if (a.result_int() == 100) continue;
    ++finals;
    FUZZ_CHECK(a.body() != budget_refusal);
    if (a.result_int() == 200 && a.body().starts_with("{\"status\":\"published\"")) ++says_published;
  }
  FUZZ_CHECK(says_published <= acked);
  if (!read_end || read_end == net::error::eof) {
    FUZZ_CHECK(says_published == acked);
    FUZZ_CHECK(finals >= e.published.size());
  }
  return 0;
}
