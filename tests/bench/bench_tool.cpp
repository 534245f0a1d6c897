// Bench-only helper for scripts/bench-receiver:
//   bench-tool presign <body-file> <count> <out.lua>   (secret from CLERK_WEBHOOK_SECRET)
//     writes a Lua table of <count> requests signed now, each with its own
//     svix id and user id (same body length), for wrk to cycle through;
//   bench-tool create-topic <brokers> <topic> <partitions>

#include <chrono>
#include <cstdlib>
#include <fstream>
#include <iostream>
#include <sstream>
#include <string>

#include "kafka/admin.hpp"
#include "verify/svix.hpp"

namespace {

// A Lua long string cannot be used safely (the body may contain "]]"), so
// escape as a quoted string.
std::string lua_quote(const std::string& s) {
  std::string out = "\"";
  for (const char c : s) {
    const auto u = static_cast<unsigned char>(c);
    if (c == '"' || c == '\\') {
      out += '\\';
      out += c;
    } else if (u < 0x20 || u >= 0x7f) {
      out += '\\' + std::to_string(u);
      out += "\"..\"";  // stop a following digit from joining the escape
    } else {
      out += c;
    }
  }
  return out + "\"";
}

int presign(const std::string& body_file, int count, const std::string& out_file) {
  const char* secret = std::getenv("CLERK_WEBHOOK_SECRET");
  if (!secret) {
    std::cerr << "bench-tool: CLERK_WEBHOOK_SECRET is not set\n";
    return 2;
  }
  const auto key = clerk_sync::verify::parse_secret(secret);
  std::ifstream in(body_file);
  std::stringstream ss;
  ss << in.rdbuf();
  const std::string body = ss.str();
  // Replace the user id with one of the same length per request, so that
  // keys spread over partitions like real traffic.
  const std::string marker = "\"id\": \"user_";
  const auto at = body.find(marker);
  if (at == std::string::npos) {
    std::cerr << "bench-tool: body has no user id\n";
    return 2;
  }
  const auto id_start = at + marker.size();
  const auto id_len = body.find('"', id_start) - id_start;
  const auto ts = std::chrono::duration_cast<std::chrono::seconds>(
                      std::chrono::system_clock::now().time_since_epoch())
                      .count();
  std::ofstream out(out_file);
  out << "return {\n";
  for (int i = 0; i < count; ++i) {
    std::string b = body;
    std::string uid = std::to_string(i);
    uid = std::string(id_len - uid.size(), '0') + uid;
    b.replace(id_start, id_len, uid);
    const std::string id = "msg_bench_" + std::to_string(ts) + "_" + std::to_string(i);
    out << "{id=" << lua_quote(id) << ",ts=\"" << ts << "\",sig=" << lua_quote(clerk_sync::verify::sign(key, id, ts, b))
        << ",body=" << lua_quote(b) << "},\n";
  }
  out << "}\n";
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  const std::string cmd = argc > 1 ? argv[1] : "";
  try {
    if (cmd == "presign" && argc == 5) return presign(argv[2], std::atoi(argv[3]), argv[4]);
    if (cmd == "create-topic" && argc == 5) {
      clerk_sync::kafka::client_config cfg;
      cfg.brokers = argv[2];
      (void)clerk_sync::kafka::create_topic(cfg, {argv[3], std::atoi(argv[4]), 1, {{"retention.ms", "-1"}}},
                                            std::chrono::seconds(30));
      return 0;
    }
  } catch (const std::exception& e) {
    std::cerr << "bench-tool: " << e.what() << "\n";
    return 1;
  }
  std::cerr << "usage: bench-tool presign <body-file> <count> <out.lua> | create-topic <brokers> <topic> <n>\n";
  return 2;
}
