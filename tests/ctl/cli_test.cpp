// clerk-sync-ctl as an operator runs it, without the real broker: every
// subcommand's --help, bad usage -> exit 2, `sign` against a published Svix
// vector, the refusals that come before any network call, dead letters
// re-driven, and status against a mock cluster with one leader in trouble.
#include <doctest/doctest.h>

#include <SQLiteCpp/SQLiteCpp.h>
#include <poll.h>
#include <signal.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <fstream>
#include <future>
#include <optional>
#include <random>
#include <thread>

#include "kafka/mock_cluster.hpp"
#include "kafka/producer.hpp"
#include "store/database.hpp"
#include "store/file_lock.hpp"
#include "support/hang.hpp"
#include "support/process.hpp"
#include "support/support.hpp"

using namespace clerk_sync;
using namespace std::chrono_literals;

namespace {

std::filesystem::path ctl() { return test::binary_path("app/ctl/clerk-sync-ctl"); }

// No broker, secrets or log settings leak in from the developer's shell.
const std::map<std::string, std::string> clean_env = {{"CLERK_WEBHOOK_SECRET", ""},
                                                      {"CLERK_WEBHOOK_SECRET_FILE", ""},
                                                      {"CLERK_SYNC_DB", ""},
                                                      {"CLERK_SYNC_BODY_LIMIT", ""},
                                                      {"CLERK_SYNC_HEADER_LIMIT", ""},
                                                      {"CLERK_SYNC_TOPIC", ""},
                                                      {"KAFKA_BROKERS", "127.0.0.1:1"}};

std::map<std::string, std::string> env_with(std::map<std::string, std::string> extra) {
  auto env = clean_env;
  for (auto& [k, v] : extra) env[k] = v;
  return env;
}

// A finished replay of the users projection, its offset stored at 7.
void make_finished_users_replay(const std::string& db) {
  { store::database created(db); }
  test::store_offset(db, {.next_offset = 7});
  test::mark_finished_replay(db);
}

// A users dead letter at offset 7 whose payload (Clerk's example
// user.created) now maps, as after a fix of the mapping.
void add_mappable_dead_letter(const std::string& db, const std::string& svix_id) {
  SQLite::Database c(db, SQLite::OPEN_READWRITE);
  SQLite::Statement add(c,
                        "INSERT INTO dead_letters(projection, topic, partition, \"offset\", svix_id, type, reason, "
                        "payload, created_at) VALUES ('users', 'clerk.events', 0, 7, ?, 'user.created', "
                        "'fixed since', ?, 1)");
  add.bind(1, svix_id);
  add.bind(2, test::read_file(test::source_path("tests/fixtures/clerk/user.created.json")));
  add.exec();
}

}  // namespace

TEST_CASE("every subcommand has its own --help") {
  const std::vector<std::pair<std::vector<std::string>, std::string>> cases = {
      {{"--help"}, "Subcommands:"},
      {{"topic", "ensure", "--help"}, "--retention-ms"},
      {{"sign", "--help"}, "--timestamp"},
      {{"send", "--help"}, "--retry-schedule"},
      {{"replay", "--help"}, "--db"},
      {{"compare", "--help"}, "--projection"},
      {{"status", "--help"}, "--max-lag"},
      {{"swap-in", "--help"}, "--from"},
      {{"dead-letters", "list", "--help"}, "--db"},
      {{"dead-letters", "retry", "--help"}, "--all"},
      {{"dead-letters", "dismiss", "--help"}, "--reason"},
  };
  for (const auto& [args, needle] : cases) {
    const auto r = test::run(ctl(), args, clean_env);
    INFO(args[0] << " " << r.out << r.err);
    CHECK(r.status == 0);
    CHECK(r.out.find(needle) != std::string::npos);
  }
}

TEST_CASE("bad usage exits 2 with one line") {
  // Each line names what was wrong: a missing x.db also exits 2.
  const std::vector<std::pair<std::vector<std::string>, std::string>> cases = {
      {{}, "no subcommand"},
      {{"nope"}, "none it knows"},
      {{"replay", "--db", "x.db"}, "--projection"},
      {{"status", "--max-lag", "many", "--db", "x.db"}, "--max-lag"},
      {{"status", "--header-limit", "100", "--db", "x.db"}, "--header-limit"},
      {{"topic", "ensure", "--body-limit", "0"}, "--body-limit"},
      {{"replay", "--projection", "nonsense", "--db", "/nonexistent/x.db"}, "nonsense"}};
  for (const auto& [args, needle] : cases) {
    const auto r = test::run(ctl(), args, clean_env);
    INFO(r.err);
    CHECK(r.status == 2);
    CHECK(test::count_of(r.err, "msg=bad_setting") == 1);
    CHECK(r.err.find(needle) != std::string::npos);
  }
  // One topic setting given twice: one value would win without a word.
  for (const std::vector<std::string>& args :
       {std::vector<std::string>{"topic", "ensure", "--retention-ms", "-1", "--config", "retention.ms=5000"},
        {"topic", "ensure", "--config", "cleanup.policy=delete", "--config", "cleanup.policy=compact"}}) {
    const auto r = test::run(ctl(), args, clean_env);
    INFO(r.err);
    CHECK(r.status == 2);
    CHECK(r.err.find("given") != std::string::npos);
    CHECK(r.err.find("--config: ") != std::string::npos);
  }
  // A misspelt subcommand is not "no subcommand", at either level.
  for (const std::vector<std::string>& args :
       {std::vector<std::string>{"nosuch"}, {"dead-letters", "lst"}, {"topic", "ensur"}}) {
    const auto r = test::run(ctl(), args, clean_env);
    INFO(r.err);
    CHECK(r.status == 2);
    CHECK(r.err.find("no subcommand given, or none it knows") != std::string::npos);
  }
  // A monitor's threshold that would turn its check off, on a real database
  // (a missing file alone would exit 2).
  {
    test::temp_dir dir;
    const auto db = (dir / "clerk-sync.db").string();
    { store::database created(db); }
    for (const auto* flag : {"--max-lag", "--max-dead-letters"}) {
      const auto r = test::run(ctl(), {"status", flag, "-5", "--db", db, "--timeout-ms", "100"}, clean_env);
      INFO(r.err);
      CHECK(r.status == 2);
      CHECK(r.err.find(flag) != std::string::npos);
      CHECK(r.err.find("not in range 0 to 9223372036854775807") != std::string::npos);  // no 300-digit bound
    }
  }
  // A svix-timestamp of 0 or less, which once meant "now" in silence.
  for (const auto* ts : {"0", "-5"}) {
    const auto r = test::run(ctl(), {"sign", "/dev/null", "--timestamp", ts},
                             env_with({{"CLERK_WEBHOOK_SECRET", "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"}}));
    INFO(r.err);
    CHECK(r.status == 2);
    CHECK(r.err.find("--timestamp") != std::string::npos);
  }
  // A timeout Kafka would replace by its default in silence.
  for (const std::vector<std::string>& args :
       {std::vector<std::string>{"status", "--timeout-ms", "0", "--db", "x.db"},
        {"topic", "ensure", "--timeout-ms", "-5"},
        {"replay", "--projection", "users", "--db", "x.db", "--stall-timeout-ms", "0"}}) {
    const auto r = test::run(ctl(), args, clean_env);
    INFO(r.err);
    CHECK(r.status == 2);
    CHECK(r.err.find("timeout-ms: Value") != std::string::npos);  // the range, not another complaint
  }
  // sign without any secret in the environment.
  const auto r = test::run(ctl(), {"sign", "/dev/null"}, clean_env);
  CHECK(r.status == 2);
  CHECK(r.err.find("CLERK_WEBHOOK_SECRET") != std::string::npos);
}

TEST_CASE("sign prints the Svix headers of a published vector") {
  test::temp_dir dir;
  const auto body = dir / "body.json";
  std::ofstream(body, std::ios::binary) << R"({"test": 2432232314})";
  const std::string secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
  const auto r = test::run(ctl(), {"sign", body.string(), "--id", "msg_p5jXN8AQM9LWM0D4loKWxJek", "--timestamp",
                                   "1614265330"},
                           env_with({{"CLERK_WEBHOOK_SECRET", secret}}));
  INFO(r.err);
  CHECK(r.status == 0);
  CHECK(r.out ==
        "svix-id: msg_p5jXN8AQM9LWM0D4loKWxJek\nsvix-timestamp: 1614265330\n"
        "svix-signature: v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=\n");

  // The same from a secret file of several lines, in a rotation: the last
  // one, the new secret the README's steps add on a second line, signs.
  const auto file = dir / "secret";
  std::ofstream(file) << "whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD\n" << secret << "\n";
  const auto f = test::run(ctl(), {"sign", body.string(), "--id", "msg_p5jXN8AQM9LWM0D4loKWxJek", "--timestamp",
                                   "1614265330", "--format", "curl"},
                           env_with({{"CLERK_WEBHOOK_SECRET_FILE", file.string()}}));
  CHECK(f.status == 0);
  CHECK(f.out.find("-H 'svix-signature: v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE='") != std::string::npos);
  // The secret itself never shows.
  CHECK(f.out.find("MfKQ9r8") == std::string::npos);
  CHECK(f.err.find("MfKQ9r8") == std::string::npos);
}

TEST_CASE("a webhook secret that decodes to other than Clerk's 24 bytes is said at start, never shown") {
  // 32 'A's are 24 zero bytes; cut by one character, what is left still
  // decodes (the bits past the last byte are zero), to 23 bytes: a key that
  // would answer every webhook 401.
  test::temp_dir dir;
  const auto body = dir / "body.json";
  std::ofstream(body, std::ios::binary) << R"({"type":"user.created","data":{"id":"user_1"}})";
  const std::string whole = "whsec_" + std::string(32, 'A');
  const auto sign_with = [&](const std::string& secret) {
    return test::run(ctl(), {"sign", body.string(), "--id", "msg_1", "--timestamp", "1614265330"},
                     env_with({{"CLERK_WEBHOOK_SECRET", secret}}));
  };
  const auto cut = sign_with(whole.substr(0, whole.size() - 1));
  CHECK(cut.status == 0);
  CHECK_MESSAGE(cut.err.find("level=warn msg=webhook_secret_length secret=1 bytes=23 ") != std::string::npos, cut.err);
  CHECK(cut.err.find("AAAAAAAA") == std::string::npos);
  const auto ok = sign_with(whole);
  CHECK(ok.status == 0);
  CHECK_MESSAGE(ok.err.find("webhook_secret_length") == std::string::npos, ok.err);
  // Each of several is looked at: the second here.
  const auto second = sign_with(whole + " whsec_" + std::string(27, 'A') + "=");
  CHECK_MESSAGE(second.err.find("msg=webhook_secret_length secret=2 bytes=20 ") != std::string::npos, second.err);
}

TEST_CASE("sign and send refuse a directory named as a body file instead of using an empty body") {
  test::temp_dir dir;
  const auto env = env_with({{"CLERK_WEBHOOK_SECRET", "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"}});
  const auto sign = test::run(ctl(), {"sign", dir.path().string()}, env);
  CHECK(sign.status == 2);
  CHECK(sign.out.empty());
  CHECK(sign.err.find("is a directory") != std::string::npos);
  const auto send = test::run(ctl(), {"send", dir.path().string(), "--url", "http://127.0.0.1:1/webhooks/clerk",
                                      "--retry-schedule", ""},
                              env);
  CHECK(send.status == 2);
  CHECK(send.err.find("is a directory") != std::string::npos);
  CHECK(send.err.find("send attempt failed") == std::string::npos);  // nothing was sent
  // Nor is an empty file or stdin sent (the receiver would answer 400 to
  // each retry, for half a minute).
  const auto empty = dir / "empty.json";
  { std::ofstream touch(empty); }
  for (const std::string& file : {empty.string(), std::string("-")}) {
    const auto r = test::run(ctl(), {"send", file, "--url", "http://127.0.0.1:1/webhooks/clerk"}, env);
    INFO(r.err);
    CHECK(r.status == 2);
    CHECK(r.err.find("is empty: no event to send") != std::string::npos);
    CHECK(r.err.find("send attempt failed") == std::string::npos);
  }
}

TEST_CASE("send stops at a 2xx that is not the receiver's answer: a --url that reached another server") {
  // Any 2xx counted as delivered: a --url answered by a default site or a
  // proxy's catch-all exited 0 with nothing published.
  const test::held_port listener;
  std::atomic<int> requests{0};
  std::thread site([&] {
    for (;;) {
      pollfd p{listener.fd(), POLLIN, 0};
      if (::poll(&p, 1, 3000) != 1) break;  // no more requests
      const int c = ::accept(listener.fd(), nullptr, nullptr);
      if (c < 0) break;
      // The whole request (header, then Content-Length bytes), then a page.
      std::string got;
      std::array<char, 4096> buf{};
      for (;;) {
        const auto head_end = got.find("\r\n\r\n");
        if (head_end != std::string::npos) {
          const auto cl = got.find("Content-Length: ");
          const auto body = cl == std::string::npos ? 0 : std::stoul(got.substr(cl + 16));
          if (got.size() >= head_end + 4 + body) break;
        }
        const auto n = ::recv(c, buf.data(), buf.size(), 0);
        if (n <= 0) break;
        got.append(buf.data(), static_cast<std::size_t>(n));
      }
      ++requests;
      const std::string page = "HTTP/1.1 200 OK\r\nContent-Length: 20\r\nConnection: close\r\n\r\n<html>welcome</html>";
      (void)::send(c, page.data(), page.size(), MSG_NOSIGNAL);
      ::close(c);
    }
  });
  const auto r = test::run(ctl(), {"send", "--generate", "3", "--retry-schedule", "", "--url",
                                   "http://127.0.0.1:" + std::to_string(listener.port()) + "/"},
                           env_with({{"CLERK_WEBHOOK_SECRET", "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"}}));
  site.join();
  INFO(r.err);
  CHECK(r.status == 1);
  CHECK(r.err.find("level=error msg=\"send stopped\" sent=1 total=3 ok=0 failed=0 ignored=0 ") != std::string::npos);
  CHECK(r.err.find("is --url the receiver's?") != std::string::npos);
  CHECK(requests == 1);  // not the two after it
}

TEST_CASE("send refuses a --url with user-info, from the flag or the environment, without repeating it") {
  // Generated: no real secret in a test, and no fixed string a check could
  // meet by chance.
  std::random_device random;
  std::string password = "pw";
  for (int i = 0; i < 4; ++i) password += std::to_string(random());
  const auto secret = env_with({{"CLERK_WEBHOOK_SECRET", "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"}});
  const auto send_args = [](std::vector<std::string> extra) {
    std::vector<std::string> args = {"send", "--generate", "1", "--retry-schedule", "", "--timeout-ms", "100"};
    args.insert(args.end(), extra.begin(), extra.end());
    return args;
  };
  for (const std::string& url : {"http://ops:" + password + "@127.0.0.1:1/webhooks/clerk",
                                 "http://ops:" + password + "@127.0.0.1/webhooks/clerk",
                                 "https://ops:" + password + "@127.0.0.1/webhooks/clerk",
                                 "http://" + password + "@127.0.0.1:1/webhooks/clerk"}) {
    auto env = secret;
    env["CLERK_SYNC_SEND_URL"] = url;
    for (const auto& r : {test::run(ctl(), send_args({"--url", url}), secret), test::run(ctl(), send_args({}), env)}) {
      // What it said, the password masked here too should it be there.
      auto said = r.err;
      for (auto at = said.find(password); at != std::string::npos; at = said.find(password))
        said.replace(at, password.size(), "<PASSWORD>");
      INFO(said);
      CHECK(r.status == 2);
      CHECK(r.err.find(password) == std::string::npos);
      CHECK(r.out.find(password) == std::string::npos);
      CHECK(r.err.find("user-info") != std::string::npos);
      CHECK(r.err.find("://***@127.0.0.1") != std::string::npos);
      CHECK(r.err.find("send attempt failed") == std::string::npos);  // nothing was sent
    }
  }
}

TEST_CASE("replay refuses to write into a database that already holds data") {
  test::temp_dir dir;
  const auto db = dir / "live.db";
  std::ofstream(db) << "not empty";
  const auto r = test::run(ctl(), {"replay", "--projection", "users", "--db", db.string()}, clean_env, 30s);
  INFO(r.err);
  CHECK(r.status == 1);
  CHECK(r.err.find("refusing") != std::string::npos);
  CHECK(test::read_file(db) == "not empty");
}

TEST_CASE("replay refuses an empty --db, or one in no directory, with exit 2 before it asks Kafka") {
  // Accepted, they read the whole topic and failed only at the final
  // rename (exit 1; an empty --db left .partial.lock in the current
  // directory). Here Kafka is unreachable: asked first, it exits 1.
  test::temp_dir dir;
  const auto file = dir / "file";
  std::ofstream(file) << "not a directory";
  for (const std::string& db : {std::string(), (dir / "missing" / "x.db").string(), (file / "x.db").string()}) {
    CAPTURE(db);
    const auto r = test::run(ctl(), {"replay", "--projection", "users", "--db", db}, clean_env, 30s);
    CAPTURE(r.err);
    CHECK(r.status == 2);
    CHECK(r.err.find("msg=bad_setting") != std::string::npos);
    CHECK(r.err.find(db.empty() ? "--db is empty" : "no directory") != std::string::npos);
  }
  CHECK_FALSE(std::filesystem::exists(dir / "missing"));
}

TEST_CASE("compare exits 2 on a missing file, as a usage error, and 0 on two identical fresh files") {
  test::temp_dir dir;
  // Two empty, freshly migrated databases: what a replay of an empty topic leaves.
  for (const auto* name : {"a.db", "b.db"}) store::database created((dir / name).string());
  const auto listed = test::run(ctl(), {"dead-letters", "list", "--db", (dir / "a.db").string()}, clean_env);
  CHECK(listed.status == 0);
  CHECK(listed.err.find("msg=\"dead letters\" count=0") != std::string::npos);
  // A mistyped path is an error, never a new empty database.
  const auto typo = test::run(ctl(), {"dead-letters", "list", "--db", (dir / "typo.db").string()}, clean_env);
  CHECK(typo.status == 2);
  CHECK_FALSE(std::filesystem::exists(dir / "typo.db"));
  const auto same = test::run(ctl(), {"compare", "--projection", "all", (dir / "a.db").string(),
                                      (dir / "b.db").string()}, clean_env);
  CHECK(same.status == 0);
  CHECK(same.out.find("users: identical") != std::string::npos);
  const auto missing = test::run(ctl(), {"compare", "--projection", "users", (dir / "a.db").string(),
                                         (dir / "nope.db").string()}, clean_env);
  // Not 1, which says the two differ: `compare a b || alert` must not
  // take a mistyped path for a difference.
  CHECK(missing.status == 2);
  CHECK(missing.err.find("no database at " + (dir / "nope.db").string()) != std::string::npos);
  CHECK_FALSE(std::filesystem::exists(dir / "nope.db"));
}

TEST_CASE("compare prints a differing row's text escaped: a name cannot write lines or escape sequences") {
  // A first name is whatever the user typed into Clerk.
  test::temp_dir dir;
  const auto a = (dir / "a.db").string(), b = (dir / "b.db").string();
  for (const auto& path : {a, b}) store::database created(path);
  {
    SQLite::Database c(a, SQLite::OPEN_READWRITE);
    SQLite::Statement add(c, "INSERT INTO users(id, first_name, updated_at) VALUES ('user_1', ?, 1)");
    add.bind(1, std::string("Eve\nusers: identical (A 1 rows, B 1 rows, 0 differences)\x1b[2J"));
    add.exec();
  }
  {
    SQLite::Database c(b, SQLite::OPEN_READWRITE);
    c.exec("INSERT INTO users(id, first_name, updated_at) VALUES ('user_1', 'Eve', 1)");
  }
  const auto r = test::run(ctl(), {"compare", "--projection", "users", a, b}, clean_env);
  INFO(r.out);
  CHECK(r.status == 1);
  CHECK(r.out.find("users: DIFFERENT") != std::string::npos);
  CHECK(r.out.find("\nusers: identical") == std::string::npos);
  CHECK(r.out.find('\x1b') == std::string::npos);
  CHECK(r.out.find("first_name='Eve\\nusers: identical") != std::string::npos);
  CHECK(r.out.find("first_name='Eve' ") != std::string::npos);  // plain text as it was
}

TEST_CASE("dead-letters retry leaves the WAL files the consumers keep for the auth service") {
  test::temp_dir dir;
  const auto db = (dir / "live.db").string();
  { store::database consumer(db, {.keep_wal_files = true}); }  // as a consumer leaves it
  REQUIRE(std::filesystem::exists(db + "-wal"));
  REQUIRE(std::filesystem::exists(db + "-shm"));
  // Without ids or --all: a usage error, and the file untouched (it was
  // opened, so migrated, before the arguments were judged).
  const auto old = (dir / "old.db").string();
  {
    SQLite::Database raw(old, SQLite::OPEN_READWRITE | SQLite::OPEN_CREATE);
    for (const char* f : {"schemas/sql/001_initial.sql", "schemas/sql/002_bounded_state.sql"})
      raw.exec(test::read_file(test::source_path(f)));
    raw.exec("PRAGMA user_version = 2");
  }
  const auto none = test::run(ctl(), {"dead-letters", "retry", "--db", old}, clean_env);
  CHECK(none.status == 2);
  CHECK(none.err.find("give dead letter ids, or --all") != std::string::npos);
  CHECK(test::query_int(old, "PRAGMA user_version") == 2);
  CHECK(SQLite::Database(old).execAndGet("PRAGMA journal_mode").getString() == "delete");
  const auto r = test::run(ctl(), {"dead-letters", "retry", "--db", db, "--all"}, clean_env);
  CHECK(r.status == 0);  // nothing pending
  CHECK(std::filesystem::exists(db + "-wal"));
  CHECK(std::filesystem::exists(db + "-shm"));
  // A file without them: this process's own are not left behind.
  const auto other = (dir / "other.db").string();
  { store::database plain(other); }
  CHECK(test::run(ctl(), {"dead-letters", "retry", "--db", other, "--all"}, clean_env).status == 0);
  CHECK_FALSE(std::filesystem::exists(other + "-wal"));
}

TEST_CASE("a dead-letter re-drive SIGKILLed before it marks the letter resolved keeps nothing, and the next applies it "
          "once") {
  // A dead letter whose payload now maps (as after a fix of the mapping):
  // its re-drive writes the user and the ledger row, then marks the letter
  // resolved, in one transaction. A trigger hangs it at the mark.
  test::temp_dir dir;
  const auto db = (dir / "live.db").string();
  { store::database create(db, {.keep_wal_files = true}); }
  const auto count = [&](const std::string& sql) { return test::query_int(db, sql); };
  add_mappable_dead_letter(db, "msg_redrive");
  test::hang_writes(db, "dead_letters", "UPDATE OF resolved_at", "NEW.resolved_at IS NOT NULL");
  test::process redrive(ctl(), {"dead-letters", "retry", "--db", db, "--all"}, clean_env);
  REQUIRE_MESSAGE(test::wait_until_hung(redrive, db, 30s), redrive.stderr_text());
  redrive.signal(SIGKILL);
  CHECK(redrive.wait(10s) == 128 + SIGKILL);
  CHECK(count("SELECT count(*) FROM dead_letters WHERE resolved_at IS NULL") == 1);
  CHECK(count("SELECT count(*) FROM users") == 0);
  CHECK(count("SELECT count(*) FROM applied_events") == 0);

  test::unhang_writes(db);
  auto r = test::run(ctl(), {"dead-letters", "retry", "--db", db, "--all"}, clean_env);
  CHECK_MESSAGE(r.status == 0, r.err);
  CHECK(r.err.find("level=info msg=\"dead letter re-driven\" id=1 projection=users svix_id=msg_redrive ") !=
        std::string::npos);
  CHECK(test::line_with(r.err, "dead letter re-driven").find(" outcome=applied") != std::string::npos);
  CHECK(count("SELECT count(*) FROM dead_letters WHERE resolved_at IS NULL") == 0);
  CHECK(count("SELECT count(*) FROM users") == 1);
  CHECK(count("SELECT count(*) FROM applied_events WHERE projection = 'users' AND svix_id = 'msg_redrive'") == 1);
  // Two re-drives of one letter at once: the letter is read under the write
  // lock, so the second finds it resolved instead of applying it again.
  {
    SQLite::Database c(db, SQLite::OPEN_READWRITE);
    c.exec("UPDATE dead_letters SET resolved_at = NULL");
    c.exec("DELETE FROM applied_events; DELETE FROM users");
    c.exec("BEGIN IMMEDIATE");  // both wait for this (their busy timeout is 5 s)
    test::process one(ctl(), {"dead-letters", "retry", "--db", db, "1"}, clean_env);
    test::process two(ctl(), {"dead-letters", "retry", "--db", db, "1"}, clean_env);
    // Both started and waiting: each has had the database open (its busy
    // timeout, 5 s, is what they wait within). Had, not has: while the lock
    // is held, the open's set-up finds it busy, closes the file and opens it
    // again, so a second look a moment later may miss it (1 run in 20).
    const auto deadline = std::chrono::steady_clock::now() + 4s;
    bool reached = false;
    while (std::chrono::steady_clock::now() < deadline && !(reached = one.has_open(db) && two.has_open(db)))
      std::this_thread::sleep_for(10ms);
    REQUIRE_MESSAGE(reached,
                    "the re-drives did not reach the lock in time: " << one.stderr_text() << two.stderr_text());
    // From the open to the BEGIN IMMEDIATE that waits; should one not be
    // there yet, it finds the letter resolved all the same, and the checks
    // below hold either way.
    std::this_thread::sleep_for(200ms);
    c.exec("ROLLBACK");
    const auto a = one.wait(20s), b = two.wait(20s);
    const std::string both = one.stderr_text() + two.stderr_text();
    INFO(both);
    CHECK(((a == 0 && b == 1) || (a == 1 && b == 0)));
    CHECK(both.find("outcome=applied") != std::string::npos);
    CHECK(both.find("no pending dead letter") != std::string::npos);
    CHECK(both.find("outcome=duplicate") == std::string::npos);
  }
  CHECK(count("SELECT count(*) FROM applied_events") == 1);

  // Resolved now: naming it again is an error, and changes nothing.
  r = test::run(ctl(), {"dead-letters", "retry", "--db", db, "1"}, clean_env);
  CHECK(r.status == 1);
  CHECK(r.err.find("no pending dead letter") != std::string::npos);
  CHECK(count("SELECT count(*) FROM applied_events") == 1);
}

TEST_CASE("dead-letters dismiss resolves a letter no fix will map, without its rows, with the reason kept and said") {
  test::temp_dir dir;
  const auto db = (dir / "live.db").string();
  { store::database create(db, {.keep_wal_files = true}); }
  {
    // A record another tool wrote: no svix-id, a body no mapping reads.
    SQLite::Database c(db, SQLite::OPEN_READWRITE);
    c.exec("INSERT INTO dead_letters(projection, topic, partition, \"offset\", svix_id, type, reason, payload, "
           "created_at) VALUES ('users', 'clerk.events', 0, 4, NULL, NULL, 'not a Clerk event', 'not json', 1)");
  }
  const auto retried = test::run(ctl(), {"dead-letters", "retry", "--db", db, "--all"}, clean_env);
  CHECK(retried.status == 1);  // for ever, until dismissed
  const auto no_reason = test::run(ctl(), {"dead-letters", "dismiss", "--db", db, "1"}, clean_env);
  CHECK(no_reason.status == 2);
  const auto blank = test::run(ctl(), {"dead-letters", "dismiss", "--db", db, "1", "--reason", " "}, clean_env);
  CHECK(blank.status == 2);
  CHECK(test::query_int(db, "SELECT count(*) FROM dead_letters WHERE resolved_at IS NULL") == 1);
  const auto dismissed =
      test::run(ctl(), {"dead-letters", "dismiss", "--db", db, "1", "1", "9", "--reason", "written by a load test"}, clean_env);
  INFO(dismissed.err);
  CHECK(dismissed.status == 1);  // 9 is no pending letter
  CHECK(dismissed.err.find("level=warn msg=\"dead letter dismissed\" id=1 projection=users svix_id=\"\" type=\"\" "
                           "reason=\"written by a load test\"") != std::string::npos);
  CHECK(dismissed.err.find("msg=\"no pending dead letter\" id=9") != std::string::npos);
  CHECK(dismissed.err.find("msg=\"no pending dead letter\" id=1") == std::string::npos);  // named twice, once
  CHECK(test::query_int(db, "SELECT count(*) FROM dead_letters WHERE resolved_at IS NULL") == 0);
  CHECK(test::query_int(db, "SELECT count(*) FROM users") == 0);
  const auto after = test::run(ctl(), {"dead-letters", "retry", "--db", db, "--all"}, clean_env);
  CHECK(after.status == 0);
  const auto listed = test::run(ctl(), {"dead-letters", "list", "--db", db, "--all"}, clean_env);
  CHECK_MESSAGE(listed.out.find(" dismissed reason=\"not a Clerk event (dismissed: written by a load test)\"") !=
                    std::string::npos,
                listed.out);
  const auto again = test::run(ctl(), {"dead-letters", "dismiss", "--db", db, "1", "--reason", "again"}, clean_env);
  CHECK(again.status == 1);
}

TEST_CASE("dead-letters retry re-drives an id named twice, or named and selected by --all, once and exits 0") {
  test::temp_dir dir;
  const auto db = (dir / "live.db").string();
  { store::database create(db, {.keep_wal_files = true}); }
  {
    SQLite::Database c(db, SQLite::OPEN_READWRITE);
    SQLite::Statement add(c,
                          "INSERT INTO dead_letters(projection, topic, partition, \"offset\", svix_id, type, reason, "
                          "payload, created_at) VALUES ('users', 'clerk.events', 0, ?, ?, 'user.created', "
                          "'fixed since', ?, 1)");
    for (const auto& [offset, id] : {std::pair{7, "msg_twice_a"}, std::pair{8, "msg_twice_b"}}) {
      add.reset();
      add.bind(1, offset);
      add.bind(2, id);
      add.bind(3, test::read_file(test::source_path("tests/fixtures/clerk/user.created.json")));
      add.exec();
    }
  }
  const auto named_twice = test::run(ctl(), {"dead-letters", "retry", "--db", db, "1", "1"}, clean_env);
  INFO(named_twice.err);
  CHECK(named_twice.status == 0);
  CHECK(named_twice.err.find("no pending dead letter") == std::string::npos);
  const auto with_all = test::run(ctl(), {"dead-letters", "retry", "--db", db, "--all", "2"}, clean_env);
  INFO(with_all.err);
  CHECK(with_all.status == 0);
  CHECK(with_all.err.find("no pending dead letter") == std::string::npos);
  CHECK(test::query_int(db, "SELECT count(*) FROM dead_letters WHERE resolved_at IS NULL") == 0);
}

namespace {

// What a file is, as a check that a refused command left it alone: its
// tables, journal mode and schema version.
std::string shape_of(const std::string& path) {
  SQLite::Database c(path, SQLite::OPEN_READONLY);
  std::string out = c.execAndGet("PRAGMA journal_mode").getString() + " v" +
                    std::to_string(c.execAndGet("PRAGMA user_version").getInt()) + ":";
  SQLite::Statement q(c, "SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name");
  while (q.executeStep()) out += " " + q.getColumn(0).getString();
  return out;
}

}  // namespace

TEST_CASE("writing commands refuse another application's SQLite file that sets a schema version, and leave it as "
          "it was") {
  // PRAGMA user_version is not clerk-sync's alone: a file that sets it but
  // lacks clerk-sync's tables was switched to WAL (a change to its header),
  // given -wal, -shm and lock files, and refused with "no such table".
  test::temp_dir dir;
  const auto rebuilt = (dir / "rebuilt.db").string();
  { store::database created(rebuilt); }
  const int newest = store::embedded_migrations().back().version;
  for (const int version : {1, newest}) {
    CAPTURE(version);
    const auto foreign = (dir / ("foreign-v" + std::to_string(version) + ".db")).string();
    {
      SQLite::Database c(foreign, SQLite::OPEN_READWRITE | SQLite::OPEN_CREATE);
      c.exec("CREATE TABLE x(a)");
      c.exec("PRAGMA user_version = " + std::to_string(version));
    }
    const auto foreign_shape = shape_of(foreign);
    const auto retry = test::run(ctl(), {"dead-letters", "retry", "--all", "--db", foreign}, clean_env);
    CAPTURE(retry.err);
    CHECK(retry.status == 1);
    CHECK(retry.err.find("holds no clerk-sync schema") != std::string::npos);
    const auto swap =
        test::run(ctl(), {"swap-in", "--skip-log-check", "--projection", "users", "--from", rebuilt, "--db", foreign}, clean_env);
    CAPTURE(swap.err);
    CHECK(swap.status == 1);
    CHECK(swap.err.find("holds no clerk-sync schema") != std::string::npos);
    const auto from =
        test::run(ctl(), {"swap-in", "--skip-log-check", "--projection", "users", "--from", foreign, "--db", rebuilt}, clean_env);
    CAPTURE(from.err);
    CHECK(from.status == 1);
    CHECK(from.err.find("holds no clerk-sync schema") != std::string::npos);
    CHECK(shape_of(foreign) == foreign_shape);
    CHECK_FALSE(std::filesystem::exists(foreign + "-wal"));
    CHECK_FALSE(std::filesystem::exists(foreign + "-shm"));
    CHECK_FALSE(std::filesystem::exists(store::projection_lock_path(foreign, "users")));
  }
}

TEST_CASE("a secret given as --kafka-property is refused without being repeated") {
  const auto r = test::run(ctl(), {"status", "--db", "x.db", "--kafka-property", "sasl.password=hunter2-not-real"},
                           clean_env);
  CHECK(r.status == 2);
  CHECK(r.err.find("sasl.password") != std::string::npos);
  CHECK(r.err.find("hunter2") == std::string::npos);
  CHECK(r.out.find("hunter2") == std::string::npos);
}

TEST_CASE("writing commands refuse a --db that is not a clerk-sync database, or not at this schema, and leave it as "
          "it was") {
  test::temp_dir dir;
  const auto foreign = (dir / "foreign.db").string();
  {
    SQLite::Database c(foreign, SQLite::OPEN_READWRITE | SQLite::OPEN_CREATE);
    c.exec("CREATE TABLE x(a)");
  }
  const auto rebuilt = (dir / "rebuilt.db").string();
  { store::database created(rebuilt); }
  test::mark_finished_replay(rebuilt);
  const auto foreign_shape = shape_of(foreign);
  REQUIRE(foreign_shape == "delete v0: x");

  // A mistyped --db naming some other SQLite file.
  const auto retry = test::run(ctl(), {"dead-letters", "retry", "--all", "--db", foreign}, clean_env);
  CHECK(retry.status == 1);
  CHECK(retry.err.find("holds no clerk-sync schema") != std::string::npos);
  const auto swap = test::run(ctl(), {"swap-in", "--skip-log-check", "--projection", "users", "--from", rebuilt, "--db", foreign}, clean_env);
  CHECK(swap.status == 1);
  CHECK(swap.err.find("holds no clerk-sync schema") != std::string::npos);
  CHECK(shape_of(foreign) == foreign_shape);
  // Nor is anything made beside it: a lock file there would later refuse
  // that file as a --from ("a file consumers ran on").
  CHECK_FALSE(std::filesystem::exists(store::projection_lock_path(foreign, "users")));
  const auto text = (dir / "notes.txt").string();
  std::ofstream(text) << "not a database\n";
  const auto not_db = test::run(ctl(), {"swap-in", "--skip-log-check", "--projection", "all", "--from", rebuilt, "--db", text}, clean_env);
  CHECK(not_db.status == 1);
  CHECK(test::read_file(text) == "not a database\n");
  for (const auto* p : {"users", "referrals", "balances", "sessions"})
    CHECK_FALSE(std::filesystem::exists(store::projection_lock_path(text, p)));

  // The same file twice.
  const auto same = test::run(ctl(), {"swap-in", "--skip-log-check", "--projection", "users", "--from", rebuilt, "--db", rebuilt}, clean_env);
  CHECK(same.status == 1);
  CHECK(same.err.find("same file") != std::string::npos);

  // A --from that consumers ran on (their lock file beside it, here of
  // another projection than the one swapped) is a live file: --from and
  // --db swapped by mistake.
  const auto ran = (dir / "ran.db").string();
  { store::database consumed(ran); }
  { std::ofstream(store::projection_lock_path(ran, "balances")); }
  const auto rebuilt_shape = shape_of(rebuilt);
  const auto reversed = test::run(ctl(), {"swap-in", "--skip-log-check", "--projection", "users", "--from", ran, "--db", rebuilt}, clean_env);
  CHECK(reversed.status == 1);
  CHECK(reversed.err.find("are --from and --db swapped?") != std::string::npos);
  CHECK(shape_of(rebuilt) == rebuilt_shape);

  // A rebuilt file at an older schema is refused before the live file is
  // migrated or written.
  const int newest = store::embedded_migrations().back().version;
  REQUIRE(newest >= 2);
  const auto older = (dir / "older.db").string();
  test::file_at_schema(older, newest - 1);
  test::mark_finished_replay(older);
  const auto live = (dir / "live.db").string();
  test::file_at_schema(live, newest - 1);
  const auto live_shape = shape_of(live);
  const auto old_rebuilt = test::run(ctl(), {"swap-in", "--skip-log-check", "--projection", "users", "--from", older, "--db", live}, clean_env);
  CHECK(old_rebuilt.status == 1);
  CHECK(old_rebuilt.err.find("schema version") != std::string::npos);
  CHECK(shape_of(live) == live_shape);
  // A rebuilt file without the projection's offsets is refused before the
  // live file is migrated too (it was migrated, then refused).
  const auto no_offsets =
      test::run(ctl(), {"swap-in", "--skip-log-check", "--projection", "referrals", "--from", rebuilt, "--db", live}, clean_env);
  CHECK(no_offsets.status == 1);
  CHECK(no_offsets.err.find("holds no stored offsets") != std::string::npos);
  CHECK(shape_of(live) == live_shape);
  // ... while a live file at an older schema (its consumers stopped across
  // an upgrade) is migrated, as they would on their next start, and swapped.
  test::store_offset(rebuilt, {.next_offset = 7});
  const auto upgraded = test::run(ctl(), {"swap-in", "--skip-log-check", "--projection", "users", "--from", rebuilt, "--db", live}, clean_env);
  CAPTURE(upgraded.err);
  CHECK(upgraded.status == 0);
  CHECK(test::query_int(live, "PRAGMA user_version") == newest);
  CHECK(test::query_int(live, "SELECT next_offset FROM kafka_offsets WHERE projection = 'users'") == 7);
  // A file without a finished replay's mark (a replay killed, its
  // .partial renamed by hand) is refused, the live file as it was.
  const auto unmarked = (dir / "unmarked.db").string();
  std::filesystem::copy_file(rebuilt, unmarked);
  {
    SQLite::Database c(unmarked, SQLite::OPEN_READWRITE);
    c.exec("PRAGMA application_id = 0");
    c.exec("UPDATE kafka_offsets SET next_offset = 99");
  }
  const auto refused = test::run(ctl(), {"swap-in", "--skip-log-check", "--projection", "users", "--from", unmarked, "--db", live}, clean_env);
  CHECK(refused.status == 1);
  CHECK(refused.err.find("is not a finished replay's file") != std::string::npos);
  CHECK(test::query_int(live, "SELECT next_offset FROM kafka_offsets WHERE projection = 'users'") == 7);

  // A directory is not a database file: exit 2, said so.
  for (const std::vector<std::string>& args : {std::vector<std::string>{"status", "--db", dir.path().string()},
                                               {"dead-letters", "list", "--db", dir.path().string()},
                                               {"replay", "--projection", "users", "--db", dir.path().string()}}) {
    const auto r = test::run(ctl(), args, clean_env);
    CAPTURE(r.err);
    CHECK(r.status == 2);
    CHECK(r.err.find("is a directory") != std::string::npos);
  }

  // An unknown projection is refused even where ids are given.
  CHECK(test::run(ctl(), {"dead-letters", "retry", "--projection", "nope", "--db", rebuilt, "3"}, clean_env).status == 2);
  CHECK(test::run(ctl(), {"dead-letters", "retry", "--projection", "users", "--db", rebuilt, "3"}, clean_env).status == 2);
}

TEST_CASE("swap-in and dead-letters retry say that they wait for another process's migration of the live file") {
  // A consumer started after an upgrade migrates a large file for minutes;
  // a ctl command opening it meanwhile waits, and must say why.
  test::temp_dir dir;
  const int newest = store::embedded_migrations().back().version;
  REQUIRE(newest >= 2);
  const auto rebuilt = (dir / "rebuilt.db").string();
  make_finished_users_replay(rebuilt);
  const std::vector<std::pair<std::string, std::vector<std::string>>> commands = {
      {"swap.db", {"swap-in", "--skip-log-check", "--projection", "users", "--from", rebuilt, "--db"}},
      {"retry.db", {"dead-letters", "retry", "--all", "--db"}}};
  for (auto [name, args] : commands) {
    CAPTURE(args[0]);
    const auto live = (dir / name).string();
    test::file_at_schema(live, newest - 1);
    args.push_back(live);
    std::optional<store::file_lock> migrating =
        store::file_lock::lock(store::migration_lock_path(live), store::file_lock::mode::exclusive);
    test::process p(ctl(), args, clean_env);
    CHECK_MESSAGE(p.wait_for_log("level=info msg=migration_wait db=" + live +
                                     " lock=" + store::migration_lock_path(live),
                                 10s),
                  p.stderr_text());
    CHECK(p.running());  // waiting, not failed
    migrating.reset();   // the other process's migration ends
    CHECK_MESSAGE(p.wait(20s) == 0, p.stderr_text());
    CHECK(test::query_int(live, "PRAGMA user_version") == newest);
  }
}

TEST_CASE("swap-in that waits past its busy timeout for another writer names the file and says nothing changed") {
  // A consumer of another projection writing a long batch, or a re-drive:
  // the swap said only error="database is locked".
  test::temp_dir dir;
  const auto rebuilt = (dir / "rebuilt.db").string();
  make_finished_users_replay(rebuilt);
  const auto live = (dir / "live.db").string();
  { store::database created(live, {.keep_wal_files = true}); }
  SQLite::Database writer(live, SQLite::OPEN_READWRITE);
  writer.exec("BEGIN IMMEDIATE");
  const auto r = test::run(ctl(), {"swap-in", "--skip-log-check", "--projection", "users", "--from", rebuilt, "--db", live}, clean_env);
  writer.exec("ROLLBACK");
  INFO(r.err);
  CHECK(r.status == 1);
  CHECK(r.err.find("msg=failed") != std::string::npos);
  CHECK(r.err.find("could not swap into " + live + ": another process held its write lock") != std::string::npos);
  CHECK(r.err.find("the live file is unchanged: retry swap-in") != std::string::npos);
  CHECK(test::query_int(live, "SELECT count(*) FROM kafka_offsets") == 0);
  // Retried once the lock is free, as the line says.
  const auto retried =
      test::run(ctl(), {"swap-in", "--skip-log-check", "--projection", "users", "--from", rebuilt, "--db", live}, clean_env);
  CHECK_MESSAGE(retried.status == 0, retried.err);
  CHECK(test::query_int(live, "SELECT next_offset FROM kafka_offsets WHERE projection = 'users'") == 7);
}

TEST_CASE("swap-in takes a replay of a topic the live projection reads, an old topic's offsets beside it or not") {
  test::temp_dir dir;
  const auto rebuilt = (dir / "rebuilt.db").string();
  make_finished_users_replay(rebuilt);  // of clerk.events
  const auto live = (dir / "live.db").string();
  { store::database created(live); }
  test::mark_finished_replay(live);  // an earlier replay moved into place whole
  const auto offsets_of = [&](const std::string& topic, int next) {
    test::store_offset(live, {.topic = topic, .next_offset = next});
  };
  // The live projection reads another topic only: refused, both named.
  offsets_of("a.old.events", 40);
  const auto other = test::run(ctl(), {"swap-in", "--skip-log-check", "--projection", "users", "--from", rebuilt, "--db", live}, clean_env);
  CHECK(other.status == 1);
  CHECK_MESSAGE(other.err.find(rebuilt + " was replayed from clerk.events, " + live +
                               "'s users stores offsets of a.old.events only") != std::string::npos,
                other.err);
  CHECK(test::query_int(live, "SELECT count(*) FROM kafka_offsets") == 1);
  // After a move to clerk.events, the old topic's offsets stay beside the
  // new one's: the replay of clerk.events is swapped in.
  offsets_of("clerk.events", 3);
  // The live dead letters whose event the replay met (applied, or a letter
  // of its own: by svix-id, or by place for one without) or its consumer
  // will meet (at or past the rebuilt offset, 7) give way to the rebuilt
  // file's; the others may be their event's last copy and are kept as they
  // are, with their ids, a re-driven one said (its event is not in the
  // rebuilt rows). A dismissed letter stays dismissed, in place of the
  // rebuilt file's pending one of its event, unless the replay applied it.
  for (const auto* id : {"msg_met_applied", "msg_met_letter", "msg_unmet_pending", "msg_unmet_resolved", "msg_after",
                         "msg_dismissed_met", "msg_dismissed_applied", "msg_dismissed_unmet"})
    add_mappable_dead_letter(live, id);
  for (const auto* id : {"msg_met_no_id", "msg_dismissed_no_id"}) add_mappable_dead_letter(live, id);
  for (const auto* id : {"msg_met_letter", "msg_met_no_id", "msg_dismissed_met", "msg_dismissed_no_id"})
    add_mappable_dead_letter(rebuilt, id);
  for (const auto& db : {live, rebuilt}) {
    SQLite::Database c(db, SQLite::OPEN_READWRITE);
    c.exec("UPDATE dead_letters SET \"offset\" = rowid % 6 WHERE svix_id <> 'msg_after'");  // before 7
    c.exec("UPDATE dead_letters SET svix_id = NULL, \"offset\" = 6 WHERE svix_id = 'msg_met_no_id'");
    c.exec("UPDATE dead_letters SET svix_id = NULL, \"offset\" = 5 WHERE svix_id = 'msg_dismissed_no_id'");
    c.exec("UPDATE dead_letters SET svix_id = NULL WHERE svix_id = 'msg_after'");  // at 7, no svix-id
    c.exec("UPDATE dead_letters SET resolved_at = 5 WHERE svix_id IN ('msg_unmet_resolved', 'msg_met_applied')");
  }
  {
    SQLite::Database c(rebuilt, SQLite::OPEN_READWRITE);
    for (const auto* id : {"msg_met_applied", "msg_dismissed_applied"}) {
      SQLite::Statement st(c, "INSERT INTO applied_events(projection, svix_id, type, user_id, outcome, topic, "
                              "partition, \"offset\", applied_at) VALUES ('users', ?, 'user.created', 'user_29', "
                              "'applied', 'clerk.events', 0, 3, 1)");
      st.bind(1, id);
      st.exec();
    }
  }
  const auto id_of = [&](const std::string& svix_id) {
    return test::query_int(live, "SELECT id FROM dead_letters WHERE svix_id = '" + svix_id + "'");
  };
  const auto dismissed_no_id = test::query_int(live, "SELECT id FROM dead_letters WHERE svix_id IS NULL AND \"offset\" = 5");
  const auto dismissed = test::run(ctl(), {"dead-letters", "dismiss", "--db", live, std::to_string(id_of("msg_dismissed_met")),
                                           std::to_string(id_of("msg_dismissed_applied")),
                                           std::to_string(id_of("msg_dismissed_unmet")), std::to_string(dismissed_no_id),
                                           "--reason", "a load test"},
                                   clean_env);
  REQUIRE_MESSAGE(dismissed.status == 0, dismissed.err);
  const std::string kept_ones = "SELECT sum(id) FROM dead_letters WHERE svix_id LIKE 'msg_unmet_%' OR svix_id IN "
                                "('msg_dismissed_met', 'msg_dismissed_unmet') OR (svix_id IS NULL AND \"offset\" = 5)";
  const auto kept_ids = test::query_int(live, kept_ones);
  const auto moved = test::run(ctl(), {"swap-in", "--skip-log-check", "--projection", "users", "--from", rebuilt, "--db", live}, clean_env);
  CHECK_MESSAGE(moved.status == 0, moved.err);
  CHECK_MESSAGE(moved.err.find(" dead_letters=2 kept_dead_letters=5 ") != std::string::npos, moved.err);
  CHECK(moved.err.find("level=warn msg=\"resolved dead letters not replayed\" projection=users letters=1 ") !=
        std::string::npos);
  CHECK(moved.err.find("level=warn msg=\"dismissed events applied by the replay\" projection=users letters=1 ") !=
        std::string::npos);
  CHECK(test::query_int(live, "SELECT count(*) FROM dead_letters") == 7);
  CHECK(test::query_int(live, "SELECT count(*) FROM dead_letters WHERE svix_id IN ('msg_met_applied', "
                              "'msg_dismissed_applied')") == 0);
  // The rebuilt one at 6, the live dismissed one at 5.
  CHECK(test::query_int(live, "SELECT count(*) FROM dead_letters WHERE svix_id IS NULL") == 2);
  CHECK(test::query_int(live, kept_ones) == kept_ids);
  CHECK(test::query_int(live, "SELECT count(*) FROM dead_letters WHERE resolved_at IS NULL") == 3);
  CHECK(test::query_int(live, "SELECT count(*) FROM dead_letters WHERE dismissed_at IS NOT NULL") == 3);
  // A retry after the swap has nothing of the dismissed event to re-drive.
  const auto listed = test::run(ctl(), {"dead-letters", "list", "--db", live}, clean_env);
  CHECK_MESSAGE(listed.out.find("msg_dismissed_met") == std::string::npos, listed.out);
  CHECK(test::query_int(live, "SELECT next_offset FROM kafka_offsets WHERE projection = 'users' AND topic = "
                              "'clerk.events'") == 7);
  // The live file keeps no finished replay's mark: a copy of it would pass
  // swap-in's check.
  CHECK(test::query_int(live, "PRAGMA application_id") == 0);
}

TEST_CASE("librdkafka's debug property asked for below --log-level debug is said, not dropped in silence") {
  const std::vector<std::string> args = {"topic", "ensure", "--brokers", "127.0.0.1:1", "--timeout-ms", "200",
                                         "--kafka-property", "debug=broker"};
  const auto hidden = test::run(ctl(), args, clean_env);
  // Once, though topic ensure makes a client anew every half second.
  CHECK_MESSAGE(test::count_of(hidden.err, "level=warn msg=kafka_debug_hidden ") == 1, hidden.err);
  auto shown_args = args;
  shown_args.insert(shown_args.end(), {"--log-level", "debug"});
  const auto shown = test::run(ctl(), shown_args, clean_env);
  CHECK(shown.err.find("kafka_debug_hidden") == std::string::npos);
  CHECK(shown.err.find("level=debug msg=kafka_log") != std::string::npos);  // librdkafka's own, now written
}

TEST_CASE("every program refuses a --topic Kafka would refuse, at start-up with exit 2") {
  // One over 512 bytes made librdkafka return no topic handle, which was
  // passed on: the receiver and `status` crashed (SIGSEGV) without a line.
  // Any other illegal name was refused by the broker on every request.
  const std::string long_name(600, 'a');
  const auto receiver = test::binary_path("app/receiver/clerk-sync-receiver");
  const auto consumer = test::binary_path("app/consumer/clerk-sync-consumer");
  for (const auto& topic : {long_name, std::string("clerk/events"), std::string(".."), std::string(250, 'a')}) {
    CAPTURE(topic.size());
    for (const auto& [exe, args] : std::vector<std::pair<std::string, std::vector<std::string>>>{
             {receiver, {"--topic", topic}},
             {consumer, {"--projection", "users", "--topic", topic}},
             {ctl(), {"status", "--db", "x.db", "--topic", topic}},
             {ctl(), {"replay", "--projection", "users", "--db", "x.db", "--topic", topic}},
             {ctl(), {"swap-in", "--from", "a.db", "--db", "x.db", "--topic", topic}},
             {ctl(), {"topic", "ensure", "--topic", topic}}}) {
      const auto r = test::run(exe, args, clean_env);
      CAPTURE(exe);
      CHECK(r.status == 2);
      CHECK_MESSAGE(r.err.find("is not a Kafka topic name") != std::string::npos, r.err);
    }
  }
}

TEST_CASE("every command refuses an empty --projection, which an unset variable in a script gives, with exit 2") {
  // dead-letters read '' as "all": `retry --all --projection "$PROJ"` with
  // $PROJ unset re-drove every projection's letters.
  test::temp_dir dir;
  const auto db = (dir / "live.db").string();
  const auto other = (dir / "other.db").string();
  { store::database created(db); }
  { store::database created(other); }
  add_mappable_dead_letter(db, "msg_empty_projection");
  const auto fresh = (dir / "fresh.db").string();
  for (const auto* empty : {"", ","}) {
    INFO("--projection '" << empty << "'");
    for (const std::vector<std::string>& args :
         {std::vector<std::string>{"dead-letters", "retry", "--all", "--db", db, "--projection", empty},
          {"dead-letters", "list", "--db", db, "--projection", empty},
          {"status", "--db", db, "--timeout-ms", "100", "--projection", empty},
          {"replay", "--db", fresh, "--projection", empty},
          {"compare", "--projection", empty, db, other},
          {"swap-in", "--from", other, "--db", db, "--projection", empty}}) {
      const auto r = test::run(ctl(), args, clean_env);
      CAPTURE(args[0]);
      CAPTURE(r.err);
      CHECK(r.status == 2);
      CHECK(r.out.empty());
      CHECK(std::count(r.err.begin(), r.err.end(), '\n') == 1);
      CHECK(r.err.find("--projection") != std::string::npos);
    }
  }
  CHECK(test::query_int(db, "SELECT count(*) FROM dead_letters WHERE resolved_at IS NULL") == 1);
  CHECK(test::query_int(db, "SELECT count(*) FROM users") == 0);
  CHECK_FALSE(std::filesystem::exists(fresh));
  // Left out, --projection still means every projection where it is optional.
  const auto listed = test::run(ctl(), {"dead-letters", "list", "--db", db}, clean_env);
  CHECK(listed.status == 0);
  CHECK(listed.out.find("msg_empty_projection") != std::string::npos);
}

TEST_CASE("status shows a partition whose watermarks cannot be read as unknown, the others as usual, and exits 1") {
  kafka::mock_cluster mock(2);
  const auto made = test::make_two_leader_topic(mock, "events");
  const auto& ids = made.first_svix_id;
  const auto& ends = made.end;
  test::temp_dir dir;
  const auto db = (dir / "status.db").string();
  { const store::database create(db); }
  {
    SQLite::Database c(db, SQLite::OPEN_READWRITE);
    for (const auto& [p, id] : ids)
      c.exec("INSERT INTO kafka_offsets(projection, topic, partition, next_offset, updated_at, last_svix_id) "
             "VALUES ('users', 'events', " + std::to_string(p) + ", 1, 0, '" + id + "')");
  }
  std::string reason;
  SUBCASE("its leader down") {
    mock.set_broker_down(2);
    reason = "watermarks of events/1: ";
  }
  SUBCASE("its leader refusing ListOffsets") {
    mock.fail_next_requests_to(2, 2 /* ListOffsets */, 4, 29 /* TOPIC_AUTHORIZATION_FAILED */);
    reason = "watermarks of events/1: Broker: Topic authorization failed";
  }
  const auto start = std::chrono::steady_clock::now();
  const auto r = test::run(ctl(),
                           {"status", "--db", db, "--projection", "users,balances", "--topic", "events", "--timeout-ms", "2000"},
                           env_with({{"KAFKA_BROKERS", mock.bootstrap_servers()}}), 60s);
  const auto took = std::chrono::steady_clock::now() - start;
  INFO("stdout:\n" << r.out << "stderr:\n" << r.err);
  CHECK(r.status == 1);  // a partial answer never passes a monitor
  // Partition 0 as usual, its record before the offset read and compared.
  const auto lag = std::to_string(ends.at(0) - 1);
  CHECK(r.out.find("  partition 0: stored 1, watermarks [0, " + std::to_string(ends.at(0)) + "), lag " + lag + "\n") !=
        std::string::npos);
  CHECK(r.err.find("resume_unchecked") == std::string::npos);
  CHECK(r.out.find("  partition 1: stored 1, watermarks UNKNOWN, lag unknown: " + reason) != std::string::npos);
  CHECK(r.out.find("  partition 1: stored none, watermarks UNKNOWN, lag unknown: " + reason) != std::string::npos);
  // The projection's lag is a floor: partition 1's is unknown.
  CHECK(r.out.find("\nusers      " + std::string(9 - lag.size(), ' ') + lag + "+ ") != std::string::npos);
  CHECK(r.err.find("level=error msg=watermarks_unknown topic=events partition=1 reason=\"" + reason.substr(0, 10)) !=
        std::string::npos);
  // One fact of the topic: one line, whatever the projections shown.
  CHECK(test::count_of(r.err, "msg=watermarks_unknown") == 1);
  CHECK(took < 15s);
}
