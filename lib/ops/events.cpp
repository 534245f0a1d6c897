#include "ops/events.hpp"

#include <array>
#include <random>
#include <string_view>

namespace clerk_sync::ops {
namespace {

constexpr std::string_view alphabet = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
constexpr std::array<std::string_view, 5> roles = {"spacer", "vip", "pro-curator", "partner", "admin"};

std::string id_like(std::string_view prefix, std::mt19937_64& rng) {
  std::string out(prefix);
  std::uniform_int_distribution<std::size_t> pick(0, alphabet.size() - 1);
  for (int i = 0; i < 27; ++i) out += alphabet[pick(rng)];
  return out;
}

std::string envelope(std::string_view type, const std::string& data, std::int64_t ms) {
  // Real deliveries carry the envelope timestamp in ms.
  return R"({"data":)" + data +
         R"(,"event_attributes":{"http_request":{"client_ip":"192.0.2.10","user_agent":"clerk-sync-ctl"}},)"
         R"("instance_id":"ins_clerksyncgenerated","object":"event","timestamp":)" +
         std::to_string(ms) + R"(,"type":")" + std::string(type) + R"("})";
}

struct user_state {
  std::string id;
  int n = 0;  // index, for names and codes
  int version = 0;
  std::string role = "spacer";
  std::int64_t points = 0;
  std::int64_t nfts = 0;
  std::string referrer;
  std::int64_t created_ms = 0;
  bool deleted = false;
  std::vector<std::string> open_sessions;
};

std::string user_object(const user_state& u, std::int64_t ms) {
  const auto n = std::to_string(u.n);
  const std::string email_id = "idn_" + u.id.substr(5);
  std::string metadata = R"({"role":")" + u.role + R"(","referral_code":"G2A)" + n + R"(","points_balance":)" +
                         std::to_string(u.points) + R"(,"g2a_balance":")" + std::to_string(u.points / 7) + "." +
                         std::to_string(u.version) + R"(","nft_count":")" + std::to_string(u.nfts) + R"(")";
  if (!u.referrer.empty()) metadata += R"(,"referrer_id":")" + u.referrer + R"(")";
  metadata += "}";
  return R"({"object":"user","id":")" + u.id + R"(","external_id":null,"primary_email_address_id":")" + email_id +
         R"(","username":"user)" + n + R"(","first_name":"First)" + n + R"(","last_name":"Last)" +
         std::to_string(u.version) + R"(","image_url":"https://img.clerk.com/)" + n +
         R"(","public_metadata":)" + metadata +
         R"(,"private_metadata":{},"unsafe_metadata":{"role":"admin"},"email_addresses":[{"id":")" + email_id +
         R"(","object":"email_address","email_address":"user)" + n + R"(@example.com"}],)" +
         R"("banned":false,"last_sign_in_at":)" + std::to_string(ms) + R"(,"updated_at":)" + std::to_string(ms) +
         R"(,"created_at":)" + std::to_string(u.created_ms) + "}";
}

std::string session_object(const std::string& id, const user_state& u, std::string_view status, std::int64_t created,
                           std::int64_t ms) {
  return R"({"object":"session","id":")" + id + R"(","user_id":")" + u.id + R"(","client_id":"client_)" +
         u.id.substr(5) + R"(","status":")" + std::string(status) + R"(","last_active_at":)" + std::to_string(ms) +
         R"(,"expire_at":)" + std::to_string(created + 7 * 86'400'000) + R"(,"updated_at":)" + std::to_string(ms) +
         R"(,"created_at":)" + std::to_string(created) + "}";
}

}  // namespace

std::vector<generated_event> generate_events(int count, std::uint64_t seed, std::int64_t start_ms) {
  std::mt19937_64 rng(seed);
  std::vector<user_state> users;
  std::vector<generated_event> out;
  out.reserve(static_cast<std::size_t>(count > 0 ? count : 0));
  std::uniform_int_distribution<int> percent(0, 99);
  for (int i = 0; i < count; ++i) {
    const std::int64_t ms = start_ms + i * 1000;
    std::vector<user_state*> live;
    for (auto& u : users)
      if (!u.deleted) live.push_back(&u);
    const int roll = percent(rng);
    if (live.empty() || roll < 25) {
      user_state u;
      u.id = id_like("user_", rng);
      u.n = static_cast<int>(users.size());
      u.created_ms = ms;
      // Every third user was invited by an earlier one.
      if (!users.empty() && u.n % 3 == 0) u.referrer = users[static_cast<std::size_t>(u.n / 2)].id;
      out.push_back({"user.created", u.id, envelope("user.created", user_object(u, ms), ms)});
      users.push_back(std::move(u));
      continue;
    }
    user_state& u = *live[std::uniform_int_distribution<std::size_t>(0, live.size() - 1)(rng)];
    if (roll < 55) {
      ++u.version;
      u.role = roles[static_cast<std::size_t>(u.version) % roles.size()];
      u.points += 10 * u.version;
      u.nfts = u.version % 4;
      out.push_back({"user.updated", u.id, envelope("user.updated", user_object(u, ms), ms)});
    } else if (roll < 80 || u.open_sessions.empty()) {
      const auto sid = id_like("sess_", rng);
      u.open_sessions.push_back(sid);
      out.push_back({"session.created", u.id, envelope("session.created", session_object(sid, u, "active", ms, ms), ms)});
    } else if (roll < 97) {
      const auto sid = u.open_sessions.back();
      u.open_sessions.pop_back();
      const std::string_view status = roll % 2 ? "ended" : "revoked";
      const std::string type = std::string("session.") + std::string(status);
      out.push_back({type, u.id, envelope(type, session_object(sid, u, status, ms - 500, ms), ms)});
    } else {
      u.deleted = true;
      const std::string data = R"({"object":"user","id":")" + u.id + R"(","deleted":true})";
      out.push_back({"user.deleted", u.id, envelope("user.deleted", data, ms)});
    }
  }
  return out;
}

std::string random_message_id() {
  thread_local std::mt19937_64 rng{std::random_device{}()};
  return id_like("msg_", rng);
}

}  // namespace clerk_sync::ops
