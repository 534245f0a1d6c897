#include "http/handler.hpp"

#include <rapidjson/document.h>

#include <array>

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

// A string member of an object, or nullopt.
std::optional<std::string_view> string_member(const rapidjson::Value& obj, const char* name) {
  if (!obj.IsObject()) return std::nullopt;
  const auto it = obj.FindMember(name);
  if (it == obj.MemberEnd() || !it->value.IsString()) return std::nullopt;
  return std::string_view(it->value.GetString(), it->value.GetStringLength());
}

std::string_view strip_query(std::string_view target) { return target.substr(0, target.find('?')); }

}  // namespace

decision classify(const request_view& req, const handler_config& cfg, std::chrono::system_clock::time_point now,
                  bool kafka_ready) {
  const auto path = strip_query(req.target);
  if (path == "/healthz" || path == "/readyz") {
    if (req.method != "GET" && req.method != "HEAD")
      return answer("method_not_allowed", "method", {405, "{\"error\":\"method not allowed\"}", {}, "GET, HEAD"});
    if (path == "/healthz") return answer("probe", "healthz", json(200, "{\"status\":\"ok\"}"));
    if (kafka_ready) return answer("probe", "readyz", json(200, "{\"status\":\"ready\"}"));
    return answer("probe", "readyz", {503, "{\"status\":\"kafka unreachable\"}", 5, {}});
  }
  if (path != cfg.path) return answer("not_found", "path", error_response(404, "not found"));
  if (req.method != "POST")
    return answer("method_not_allowed", "method", {405, "{\"error\":\"method not allowed\"}", {}, "POST"});

  const auto headers = verify::pick_headers(req.header);
  const auto v = verify::verify(req.body, headers, cfg.keys, now, cfg.tolerance);
  if (!v.ok()) {
    auto d = answer("rejected", v.text(), error_response(v.http_status(), v.text()));
    if (headers.id) d.svix_id = *headers.id;
    return d;
  }

  decision d;
  d.svix_id = *headers.id;
  // Read only `type` and the user id; the value published is the raw body,
  // untouched. In-situ parsing of a private, NUL-terminated copy is several
  // times faster than parsing a length-bounded buffer (a copy of ~2 KiB is cheap).
  std::string scratch(req.body);
  // A pool on the stack for the DOM: RapidJSON's default first chunk is a
  // 64 KiB malloc per request.
  std::array<char, 8192> pool;
  rapidjson::MemoryPoolAllocator<> allocator(pool.data(), pool.size());
  rapidjson::Document doc(&allocator);
  const bool has_nul = scratch.find('\0') != std::string::npos;  // raw NUL is never valid JSON
  if (!has_nul) doc.ParseInsitu(scratch.data());
  if (has_nul || doc.HasParseError() || !doc.IsObject()) {
    d.msg = "rejected";
    d.outcome = "not_json";
    d.answer = error_response(400, "body is not a JSON object");
    return d;
  }
  const auto type = string_member(doc, "type");
  if (!type || type->empty()) {
    d.msg = "rejected";
    d.outcome = "no_type";
    d.answer = error_response(400, "body has no type");
    return d;
  }
  d.type = *type;
  const bool user_event = type->starts_with("user.");
  const bool session_event = type->starts_with("session.");
  if (!user_event && !session_event) {
    d.msg = "ignored";
    d.outcome = "type";
    d.answer = json(200, "{\"status\":\"ignored\"}");
    return d;
  }
  const auto data = doc.FindMember("data");
  std::optional<std::string_view> user;
  if (data != doc.MemberEnd()) user = string_member(data->value, user_event ? "id" : "user_id");
  if (!user || user->empty()) {
    d.msg = "rejected";
    d.outcome = "no_user_id";
    d.answer = error_response(400, user_event ? "user event without data.id" : "session event without data.user_id");
    return d;
  }
  d.user = *user;
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
response headers_too_large() { return error_response(431, "headers too large"); }

}  // namespace clerk_sync::http
