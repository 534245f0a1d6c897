#include "consumer/generator.hpp"

#include <algorithm>
#include <functional>
#include <random>

namespace clerk_sync::test {
namespace {

const char* const roles[] = {"spacer", "vip", "pro-curator", "partner", "admin", "overlord"};

std::string user_id(int u) { return "user_gen" + std::to_string(100000 + u); }

struct user_state {
  int id = 0;
  std::int64_t updated_at = 0;
  int updates = 0;
  int sessions = 0;
  bool deleted = false;
  std::string referrer;
};

std::string user_json(const user_state& s, std::mt19937_64& rng) {
  const std::string id = user_id(s.id);
  std::uniform_int_distribution<int> pick(0, 99);
  const int r = pick(rng);
  // Amounts: as JSON numbers or strings, some beyond a double's precision.
  const std::string points = std::to_string(s.updates * 10 + s.id);
  const std::string g2a = std::to_string(s.id + 1) + "123456789012345678." + std::to_string(s.updates) + "00";
  const bool points_as_string = r % 2 == 0;
  const bool g2a_as_number = r % 3 == 0;
  std::string pub = "{\"role\":\"" + std::string(roles[(s.id + s.updates) % 6]) + "\"";
  pub += ",\"referral_code\":\"REF" + std::to_string(s.id) + "\"";
  if (!s.referrer.empty()) pub += ",\"referrer_id\":\"" + s.referrer + "\"";
  pub += ",\"points_balance\":" + (points_as_string ? "\"" + points + "\"" : points);
  pub += ",\"g2a_balance\":" + (g2a_as_number ? g2a : "\"" + g2a + "\"");
  pub += "}";
  const std::string priv = "{\"nft_count\":" + std::to_string(s.updates % 7) + "}";
  // unsafe_metadata claims admin: it must never be believed.
  return "{\"object\":\"user\",\"id\":\"" + id + "\",\"primary_email_address_id\":\"idn_" + id +
         "\",\"email_addresses\":[{\"id\":\"idn_other\",\"email_address\":\"old-" + std::to_string(s.id) +
         "@example.com\"},{\"id\":\"idn_" + id + "\",\"email_address\":\"u" + std::to_string(s.id) + "-" +
         std::to_string(s.updates) + "@example.com\"}],\"first_name\":\"First" + std::to_string(s.id) +
         "\",\"last_name\":\"Last" + std::to_string(s.updates) + "\",\"username\":null,\"image_url\":\"https://img.example/" +
         std::to_string(s.id) + "\",\"banned\":" + (s.updates % 11 == 10 ? "true" : "false") +
         ",\"public_metadata\":" + pub + ",\"private_metadata\":" + priv +
         ",\"unsafe_metadata\":{\"role\":\"admin\",\"points_balance\":999999},\"created_at\":1716883200000"
         ",\"updated_at\":" + std::to_string(s.updated_at) + ",\"last_sign_in_at\":" + std::to_string(s.updated_at) + "}";
}

std::string envelope(const std::string& type, const std::string& data, std::int64_t ts) {
  return "{\"data\":" + data + ",\"object\":\"event\",\"timestamp\":" + std::to_string(ts) + ",\"type\":\"" + type +
         "\",\"instance_id\":\"ins_gen\"}";
}

}  // namespace

void generate_events(const generator_options& opts, const std::function<void(const generated_event&)>& sink) {
  std::mt19937_64 rng(opts.seed);
  std::vector<user_state> users(static_cast<std::size_t>(opts.users));
  for (int i = 0; i < opts.users; ++i) {
    users[static_cast<std::size_t>(i)].id = i;
    users[static_cast<std::size_t>(i)].updated_at = 1716883200000 + i;
  }
  // Emitted so far; the last one is kept for a duplicate delivery.
  long count = 0;
  generated_event last;
  std::uniform_int_distribution<int> pick_user(0, opts.users - 1);
  std::uniform_int_distribution<int> pct(0, 99);
  std::vector<bool> created(static_cast<std::size_t>(opts.users), false);
  long seq = 0;
  auto emit = [&](const std::string& key, const std::string& type, std::string body) {
    last = {key, "msg_gen" + std::to_string(opts.seed) + "_" + std::to_string(seq++), type, std::move(body)};
    sink(last);
    ++count;
  };
  while (count < opts.events) {
    const int u = pick_user(rng);
    auto& s = users[static_cast<std::size_t>(u)];
    const std::string id = user_id(u);
    const int r = pct(rng);
    if (!created[static_cast<std::size_t>(u)]) {
      created[static_cast<std::size_t>(u)] = true;
      if (u % 3 == 0 && u > 0) s.referrer = user_id(u - 1);
      if (u % 17 == 0) s.referrer = id;  // self-referral: refused
      emit(id, "user.created", envelope("user.created", user_json(s, rng), s.updated_at));
      continue;
    }
    if (s.deleted) {
      // A late, older update after the deletion: must not undo the tombstone.
      auto late = s;
      late.updated_at -= 500;
      emit(id, "user.updated", envelope("user.updated", user_json(late, rng), late.updated_at));
      continue;
    }
    s.updated_at += 1000 + pct(rng);
    if (r < 45) {
      ++s.updates;
      if (s.updates == 3 && u % 5 == 0) s.referrer = user_id((u + 7) % opts.users);  // a conflict: set once
      emit(id, "user.updated", envelope("user.updated", user_json(s, rng), s.updated_at));
      if (pct(rng) < 8) {  // Svix delivered it twice
        sink(last);
        ++count;
      }
    } else if (r < 52) {
      // Out of order: an older snapshot arrives after a newer one.
      auto older = s;
      older.updated_at -= 700;
      ++s.updates;
      emit(id, "user.updated", envelope("user.updated", user_json(s, rng), s.updated_at));
      emit(id, "user.updated", envelope("user.updated", user_json(older, rng), older.updated_at));
    } else if (r < 98) {
      const std::string sid = "sess_" + id + "_" + std::to_string(s.sessions);
      const bool end = pct(rng) < 40;
      const char* status = end ? (pct(rng) < 50 ? "ended" : "revoked") : "active";
      const std::string type = end ? (std::string("session.") + status) : "session.created";
      const std::string data = "{\"object\":\"session\",\"id\":\"" + sid + "\",\"user_id\":\"" + id +
                               "\",\"status\":\"" + status + "\",\"user\":" + user_json(s, rng) +
                               ",\"last_active_at\":" + std::to_string(s.updated_at) +
                               ",\"expire_at\":" + std::to_string(s.updated_at + 86400000) +
                               ",\"created_at\":1716883200000,\"updated_at\":" + std::to_string(s.updated_at) + "}";
      emit(id, type, envelope(type, data, s.updated_at));
      if (end) {
        ++s.sessions;
        // A late session.created for the ended session: never revives it.
        if (pct(rng) < 30) {
          std::string late = data;
          late.replace(late.find(std::string("\"status\":\"") + status), 10 + std::string(status).size(),
                       "\"status\":\"active");
          emit(id, "session.created", envelope("session.created", late, s.updated_at - 100));
        }
      }
    } else {
      s.deleted = true;
      // Real deliveries carry ms; some of ours use seconds like Clerk's examples.
      const std::int64_t ts = u % 2 == 0 ? s.updated_at : s.updated_at / 1000 + 1;
      emit(id, "user.deleted",
           envelope("user.deleted", "{\"object\":\"user\",\"id\":\"" + id + "\",\"deleted\":true}", ts));
    }
  }
}

std::vector<generated_event> generate_events(const generator_options& opts) {
  std::vector<generated_event> out;
  out.reserve(static_cast<std::size_t>(opts.events) + 16);
  generate_events(opts, [&](const generated_event& e) { out.push_back(e); });
  return out;
}

}  // namespace clerk_sync::test
