#include "http/handler.hpp"

#include <algorithm>
#include <cctype>

#include "event/envelope.hpp"

namespace clerk_sync::http {
namespace {

response json(int status, std::string body) { return {status, std::move(body), std::nullopt, {}}; }

response error_response(int status, std::string_view what) {
  return json(status, "{\"error\":\"" + std::string(what) + "\"}");
}

decision answer(std::string_view msg, std::string_view outcome, response r) {
  decision d;
  d.msg = msg;
  d.outcome = outcome;
  d.answer = std::move(r);
  return d;
}

std::string_view envelope_problem(event::envelope_error e) {
  switch (e) {
    case event::envelope_error::not_json: return "body is not a JSON object";
    case event::envelope_error::too_deep: return "body is nested too deeply";
    case event::envelope_error::no_type: return "body has no type";
    case event::envelope_error::no_user_id: return "event without its user id (data.id or data.user_id)";
  }
  return "bad body";
}

// The path of a request target, its query dropped: origin-form "/p?q", or
// absolute-form "http://host/p?q", which a server must accept (RFC 9112
// 3.2.2; a proxy may send it).
std::string_view path_of(std::string_view target) {
  for (const std::string_view scheme : {"http://", "https://"}) {
    if (target.size() < scheme.size() ||
        !std::equal(scheme.begin(), scheme.end(), target.begin(),
                    [](char a, char b) { return a == std::tolower(static_cast<unsigned char>(b)); }))
      continue;
    const auto end = target.find_first_of("/?", scheme.size());
    target = end == std::string_view::npos || target[end] == '?' ? std::string_view("/") : target.substr(end);
    break;
  }
  return target.substr(0, target.find('?'));
}

// Probes, 404 and 405: what the request line decides. nullopt for a POST
// to the webhook path.
std::optional<decision> route(std::string_view method, std::string_view target, const handler_config& cfg,
                              readiness kafka) {
  const auto path = path_of(target);
  if (path == "/healthz" || path == "/readyz") {
    if (method != "GET" && method != "HEAD")
      return answer("method_not_allowed", "method", {405, "{\"error\":\"method not allowed\"}", {}, "GET, HEAD"});
    if (path == "/healthz") return answer("probe", "healthz", json(200, "{\"status\":\"ok\"}"));
    if (kafka == readiness::ready) return answer("probe", "readyz", json(200, "{\"status\":\"ready\"}"));
    return answer("probe", "readyz", {503, std::string("{\"status\":\"") + name(kafka) + "\"}", 5, {}});
  }
  if (path != cfg.path) return answer("not_found", "path", error_response(404, "not found"));
  if (method != "POST")
    return answer("method_not_allowed", "method", {405, "{\"error\":\"method not allowed\"}", {}, "POST"});
  return std::nullopt;
}

decision rejected(const verify::verdict& v, const verify::signed_headers& headers) {
  auto d = answer("rejected", v.text(), error_response(v.http_status(), v.text()));
  if (headers.id) d.svix_id = *headers.id;
  return d;
}

}  // namespace

const char* name(readiness r) {
  switch (r) {
    case readiness::ready: return "ready";
    case readiness::topic_missing: return "topic_missing";
    case readiness::authentication_failed: return "authentication_failed";
    case readiness::tls_failed: return "tls_failed";
    case readiness::topic_unauthorized: return "topic_unauthorized";
    case readiness::publish_failing: return "publish_failing";
    case readiness::kafka_unreachable: break;
  }
  return "kafka_unreachable";
}

header_check classify_header(const request_view& req, const handler_config& cfg,
                             std::chrono::system_clock::time_point now, readiness kafka) {
  header_check out;
  if ((out.decided = route(req.method, req.target, cfg, kafka))) return out;
  out.headers = verify::pick_headers(req.header);
  if (const auto v = verify::check_headers(out.headers, cfg.keys, now, cfg.tolerance); !v.ok()) {
    out.decided = rejected(v, out.headers);
    out.by_signature = true;
  }
  return out;
}

decision classify(const request_view& req, const handler_config& cfg, std::chrono::system_clock::time_point now,
                  readiness kafka) {
  auto h = classify_header(req, cfg, now, kafka);
  if (h.decided) return std::move(*h.decided);
  return classify_body(req, h.headers, cfg);
}

decision classify_body(const request_view& req, const verify::signed_headers& headers, const handler_config& cfg) {
  const auto v = verify::verify_signature(req.body, headers, cfg.keys);
  if (!v.ok()) return rejected(v, headers);

  decision d;
  d.verified = true;
  d.svix_id = *headers.id;
  // Read only the envelope; the value published is the raw body, untouched.
  const auto env = event::read_envelope(req.body);
  if (const auto* err = std::get_if<event::envelope_error>(&env)) {
    d.msg = "rejected";
    d.outcome = event::to_string(*err);
    d.answer = error_response(400, envelope_problem(*err));
    return d;
  }
  const auto& e = std::get<event::envelope>(env);
  d.type = e.type;
  if (e.family == event::event_family::other) {
    d.msg = "ignored";
    d.outcome = "type";
    d.answer = json(200, std::string(ignored_body));
    return d;
  }
  d.user = e.user_id;
  d.msg = "published";
  d.outcome = "acknowledged";
  d.publish = publish_request{d.user, d.type, d.svix_id, std::string(*headers.timestamp)};
  return d;
}

response published(std::int32_t partition, std::int64_t offset) {
  return json(200, "{\"status\":\"published\",\"partition\":" + std::to_string(partition) +
                       ",\"offset\":" + std::to_string(offset) + "}");
}

response unavailable(std::string_view why, int retry_after_s) {
  return {503, "{\"error\":\"" + std::string(why) + "\"}", retry_after_s, {}};
}

std::vector<kafka::header> record_headers(const publish_request& p, std::int64_t received_at_ms) {
  return {{"svix-id", p.svix_id},
          {"svix-timestamp", p.svix_timestamp},
          {"clerk-event-type", p.type},
          {"received-at", std::to_string(received_at_ms)}};
}

response too_large() { return error_response(413, "body too large"); }
response too_large_for_kafka() { return error_response(413, "record too large for kafka"); }
response over_memory_budget() { return unavailable("too many request bodies in flight"); }
response bad_request() { return error_response(400, "malformed request"); }
response headers_too_large() { return error_response(431, "headers too large"); }
response repeated_signature_header() { return error_response(400, "a signature header given twice"); }

}  // namespace clerk_sync::http
