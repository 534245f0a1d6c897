// clerk-sync-auth's HTTP server itself (lib/auth/server.cpp and the check
// behind it), driven over a loopback connection as the `server` target
// drives the receiver's: the input's bytes are what one client sends, a few
// at a time, before it half-closes. The words TOKEN_A … TOKEN_E in the input
// are replaced by valid session tokens, signed with a key of the target's
// own (generated at start), for five users of a real SQLite file:
//
//   A  user_a / sess_a   admin, session active       let in
//   B  user_b / sess_b   banned                      403
//   C  user_c / sess_c   session revoked             401
//   D  user_d / sess_d   deleted                     403
//   E  user_e / sess_e   no rows yet (not synced)    let in, as spacer
//
// so that the fuzzer varies what surrounds a valid token (where it is, how
// the header or cookie around it is written, what else the request says).
// Byte 0 sets the size of the client's writes (1 to 7,651 bytes; the seeds,
// plain text, start with a letter).
//
// Properties, for every input:
// - an answer that names a user (X-Clerk-User-Id) is a 200 for user A or E,
//   with that user's own session and role, whose token the input held:
//   nobody banned, deleted or signed out is let in, and no header is made
//   up from the request;
// - every 401 says Bearer in WWW-Authenticate;
// - no 503: the file is fine, so no request may make a lookup fail;
// - what the server sends parses as HTTP/1.1 answers, of the statuses the
//   design names, and nothing follows an answer that says it closes;
// - the server has closed within 5 s of the connection, and keeps no
//   connection open.
//
// One server and its token cache serve every input; HEAD's answers parse
// because they say Content-Length: 0.

#include <boost/asio/io_context.hpp>

#include <algorithm>
#include <array>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <filesystem>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "auth/lookup.hpp"
#include "auth/server.hpp"
#include "auth/service.hpp"
#include "fuzz_input.hpp"
#include "log/log.hpp"
#include "loopback.hpp"
#include "store/database.hpp"
#include "token/signer.hpp"

namespace cs = clerk_sync;
using namespace std::chrono_literals;

namespace {

struct user {
  char letter;
  std::string id, session, role;  // role empty: never let in
  std::string token;
};

// The database's folder, removed when the process ends normally (the rest
// of the environment is never destroyed: nothing runs on its io_context
// then).
struct scratch_dir {
  std::filesystem::path path;
  scratch_dir() {
    std::string tmpl = (std::filesystem::temp_directory_path() / "clerk-sync-fuzz-auth-XXXXXX").string();
    FUZZ_CHECK(::mkdtemp(tmpl.data()) != nullptr);
    path = tmpl;
  }
  ~scratch_dir() {
    std::error_code ignored;
    std::filesystem::remove_all(path, ignored);
  }
};

const std::filesystem::path& folder() {
  static const scratch_dir dir;
  return dir.path;
}

struct environment {
  std::string db_path = (folder() / "clerk-sync.db").string();
  // The five tokens are signed once, so the least size key_set accepts costs nothing per input.
  cs::test::rsa_signer signer{2048};
  std::vector<user> users{{'A', "user_a", "sess_a", "admin", {}},
                          {'B', "user_b", "sess_b", "", {}},
                          {'C', "user_c", "sess_c", "", {}},
                          {'D', "user_d", "sess_d", "", {}},
                          {'E', "user_e", "sess_e", "spacer", {}}};
  boost::asio::io_context ioc;
  std::unique_ptr<cs::auth::lookup> db;
  std::unique_ptr<cs::auth::service> svc;
  std::unique_ptr<cs::auth::server> server;

  environment() {
    cs::log::init(cs::log::format::logfmt, cs::log::level::error);
    {
      cs::store::database live(db_path);
      cs::store::exec(live,
                      "INSERT INTO users(id, role, banned, updated_at) VALUES ('user_a','admin',0,1);"
                      "INSERT INTO users(id, role, banned, updated_at) VALUES ('user_b','vip',1,1);"
                      "INSERT INTO users(id, role, banned, updated_at) VALUES ('user_c','vip',0,1);"
                      "INSERT INTO users(id, role, banned, updated_at, deleted_at) VALUES ('user_d','vip',0,1,1);"
                      "INSERT INTO sessions(id, user_id, status, updated_at) VALUES ('sess_a','user_a','active',1);"
                      "INSERT INTO sessions(id, user_id, status, updated_at) VALUES ('sess_b','user_b','active',1);"
                      "INSERT INTO sessions(id, user_id, status, updated_at) VALUES ('sess_c','user_c','revoked',1);"
                      "INSERT INTO sessions(id, user_id, status, updated_at) VALUES ('sess_d','user_d','active',1);");
    }
    // Valid for ten years from now: the server checks with the real clock.
    const auto now_s =
        std::chrono::duration_cast<std::chrono::seconds>(std::chrono::system_clock::now().time_since_epoch()).count();
    for (auto& u : users)
      u.token = signer.sign(R"({"alg":"RS256","typ":"JWT"})",
                            R"({"azp":"https://app.example","exp":)" + std::to_string(now_s + 315'360'000) +
                                R"(,"iat":)" + std::to_string(now_s - 10) + R"(,"sid":")" + u.session +
                                R"(","sub":")" + u.id + R"("})");
    db = std::make_unique<cs::auth::lookup>(db_path);
    cs::token::options opts;
    opts.authorized_parties = {"https://app.example"};
    svc = std::make_unique<cs::auth::service>(cs::token::key_set::from_pem(signer.public_pem()), opts, 100, *db);
    cs::auth::server_limits limits;
    limits.read_timeout = 2s;
    server = std::make_unique<cs::auth::server>(ioc, cs::config::listen_address{"127.0.0.1", 0}, "/auth", *svc,
                                                limits);
    server->start();
  }
};

environment& env() {
  static auto* e = new environment();  // lives as long as the process
  return *e;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  if (size < 1) return 0;
  auto& e = env();
  const auto piece = cs::fuzz::write_size(data[0]);
  const auto input = cs::fuzz::text(data + 1, size - 1);
  std::string sent(input);
  std::vector<char> held;
  for (const auto& u : e.users) {
    const std::string word = std::string("TOKEN_") + u.letter;
    for (auto at = sent.find(word); at != std::string::npos; at = sent.find(word, at + u.token.size())) {
      sent.replace(at, word.size(), u.token);
      held.push_back(u.letter);
    }
  }

  const auto received =
      cs::fuzz::exchange(e.ioc, e.server->port(), sent, piece, [&] { return e.server->connections(); }).received;

  static constexpr std::array<unsigned, 7> known{200, 400, 401, 403, 404, 405, 431};  // never 503
  for (const auto& a : cs::fuzz::answers_of(received, known)) {
    const auto status = a.result_int();
    if (status == 401) FUZZ_CHECK(a[boost::beast::http::field::www_authenticate].starts_with("Bearer"));
    const auto named = a.find("X-Clerk-User-Id");
    if (named != a.end()) {
      FUZZ_CHECK(status == 200);
      const auto who = std::find_if(e.users.begin(), e.users.end(), [&](const user& u) { return u.id == named->value(); });
      FUZZ_CHECK(who != e.users.end());
      FUZZ_CHECK(!who->role.empty());
      FUZZ_CHECK(a["X-Clerk-Session-Id"] == who->session);
      FUZZ_CHECK(a["X-Clerk-Role"] == who->role);
      FUZZ_CHECK(std::find(held.begin(), held.end(), who->letter) != held.end());
    }
  }
  return 0;
}
