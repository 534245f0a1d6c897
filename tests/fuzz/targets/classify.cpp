// The receiver's request classification (http::classify) with the request
// from the input (parts: flags, method, target, header lines "name: value",
// body). A signature header whose value is SIGN is replaced by a valid
// signature of the request, so the JSON path is reached; flags holding
// "down" classify as if Kafka were unreachable. Properties: the status is one
// of the design's; msg is in the log vocabulary; a record is published only
// for a verified POST to the webhook path while Kafka is up, keyed by the
// event's user id, carrying the request's svix-id. The path is the target's,
// or an absolute-form target's path after its authority.

#include <algorithm>
#include <cctype>
#include <chrono>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <variant>
#include <vector>

#include "event/clerk_event.hpp"
#include "fuzz_input.hpp"
#include "http/handler.hpp"
#include "verify/svix.hpp"

namespace cs = clerk_sync;

namespace {

constexpr std::int64_t now_s = 1'790'000'000;  // seeds carry this timestamp

bool iequals(std::string_view a, std::string_view b) {
  return std::equal(a.begin(), a.end(), b.begin(), b.end(), [](char x, char y) {
    auto lower = [](char c) { return c >= 'A' && c <= 'Z' ? static_cast<char>(c - 'A' + 'a') : c; };
    return lower(x) == lower(y);
  });
}

using header_list = std::vector<std::pair<std::string_view, std::string>>;

header_list parse_headers(std::string_view block) {
  header_list out;
  while (!block.empty()) {
    const auto nl = block.find('\n');
    const auto line = block.substr(0, nl);
    block = nl == std::string_view::npos ? std::string_view{} : block.substr(nl + 1);
    const auto colon = line.find(':');
    if (colon == std::string_view::npos) continue;
    auto value = line.substr(colon + 1);
    if (value.starts_with(' ')) value.remove_prefix(1);
    out.emplace_back(line.substr(0, colon), std::string(value));
  }
  return out;
}

std::optional<std::string_view> find(const header_list& headers, std::string_view name) {
  for (const auto& [n, v] : headers)
    if (iequals(n, name)) return std::string_view(v);
  return std::nullopt;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const auto p = cs::fuzz::split(cs::fuzz::text(data, size), 5);
  const bool kafka_ready = p[0].find("down") == std::string_view::npos;
  const auto method = p[1], target = p[2], body = p[4];
  auto headers = parse_headers(p[3]);

  const cs::verify::key key = "clerk-sync-fuzz-key-0123456789";
  const cs::http::handler_config cfg{"/webhooks/clerk", {key}, cs::verify::default_tolerance};
  const auto now = std::chrono::system_clock::time_point{std::chrono::seconds{now_s}};

  const auto picked = cs::verify::pick_headers([&](std::string_view n) { return find(headers, n); });
  const std::string id(picked.id.value_or(""));
  const std::string ts(picked.timestamp.value_or(""));
  for (auto& [n, v] : headers)
    if (v == "SIGN" && (iequals(n, "svix-signature") || iequals(n, "webhook-signature")))
      v = cs::verify::sign(key, id, ts, body);

  const cs::http::request_view req{method, target, body,
                                   [&](std::string_view n) { return find(headers, n); }};
  const auto d = cs::http::classify(req, cfg, now,
                                    kafka_ready ? cs::http::readiness::ready : cs::http::readiness::kafka_unreachable);

  const int status = d.answer.status;
  FUZZ_CHECK(status == 200 || status == 400 || status == 401 || status == 404 || status == 405 ||
             status == 413 || status == 431 || status == 503);
  FUZZ_CHECK(d.msg == "published" || d.msg == "ignored" || d.msg == "rejected" || d.msg == "not_found" ||
             d.msg == "method_not_allowed" || d.msg == "probe");
  FUZZ_CHECK(!d.outcome.empty());
  FUZZ_CHECK((status == 405) == !d.answer.allow.empty());
  FUZZ_CHECK((status == 503) == d.answer.retry_after_s.has_value());
  FUZZ_CHECK(d.publish.has_value() == (d.msg == "published"));

  const auto signed_headers = cs::verify::pick_headers(req.header);
  const bool verified = cs::verify::verify(body, signed_headers, cfg.keys, now).ok();
  // The path the request is routed by, its query dropped: an absolute-form
  // target (scheme "http" or "https", any case, then an authority) is
  // routed by what follows its authority (RFC 9112 3.2.2), "/" when nothing.
  std::string_view routed = target;
  if (const auto sep = target.find("://"); sep == 4 || sep == 5) {
    std::string scheme(target.substr(0, sep));
    std::transform(scheme.begin(), scheme.end(), scheme.begin(),
                   [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
    if (scheme == "http" || scheme == "https") {
      const auto after = target.substr(sep + 3);
      const auto slash = after.find('/'), query = after.find('?');
      routed = slash != std::string_view::npos && slash < query ? after.substr(slash) : std::string_view("/");
    }
  }
  const auto path = routed.substr(0, routed.find('?'));
  if (d.publish) {
    // The 503 for Kafka being down comes from the publish step, not from here.
    FUZZ_CHECK(method == "POST" && path == cfg.path && verified);
    FUZZ_CHECK(!d.publish->key.empty());
    FUZZ_CHECK(d.publish->type.starts_with("user.") || d.publish->type.starts_with("session."));
    FUZZ_CHECK(d.publish->svix_id == id && d.publish->svix_timestamp == ts);
    FUZZ_CHECK(d.user == d.publish->key && d.type == d.publish->type);
    // When the consumers' decoder reads the same body as an event it
    // projects, it finds the same key (a user.* type it does not know is `other`).
    const auto decoded = cs::event::decode(body);
    if (const auto* e = std::get_if<cs::event::clerk_event>(&decoded);
        e && !std::holds_alternative<cs::event::other>(e->data))
      FUZZ_CHECK(cs::event::user_id_of(*e) == d.publish->key);
  } else if (d.msg == "ignored") {
    FUZZ_CHECK(status == 200 && verified);
    FUZZ_CHECK(!d.type.starts_with("user.") && !d.type.starts_with("session."));
  } else if (d.msg == "rejected") {
    FUZZ_CHECK(status == 400 || status == 401);
    FUZZ_CHECK(method == "POST" && path == cfg.path);
  } else if (d.msg == "probe") {
    FUZZ_CHECK(path == "/healthz" || path == "/readyz");
    FUZZ_CHECK(status == 200 || (status == 503 && !kafka_ready));
  } else if (d.msg == "not_found") {
    FUZZ_CHECK(status == 404 && path != cfg.path);
  } else {
    FUZZ_CHECK(status == 405);
  }
  // A signature problem is never blamed on a verified request, nor a body problem on an unverified one.
  if (d.msg == "rejected") {
    const bool body_problem = d.outcome == "not_json" || d.outcome == "too_deep" || d.outcome == "no_type" ||
                              d.outcome == "no_user_id";
    FUZZ_CHECK(body_problem == verified);
  }
  return 0;
}
