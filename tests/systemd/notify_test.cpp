// Each long-running binary tells systemd it is ready (READY=1) and pings the
// watchdog when one is set, through NOTIFY_SOCKET: here a datagram socket of
// the test's own, as systemd would provide; and a SIGHUP stops none of them.
// Needs the test broker.
#include <doctest/doctest.h>
#include <openssl/evp.h>
#include <openssl/rand.h>
#include <signal.h>
#include <sys/file.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <fcntl.h>

#include <array>
#include <chrono>
#include <cstring>
#include <fstream>
#include <memory>
#include <optional>
#include <string>

#include "store/database.hpp"
#include "store/file_lock.hpp"
#include "support/process.hpp"
#include "support/support.hpp"
#include "token/signer.hpp"

namespace fs = std::filesystem;
using namespace clerk_sync;
using namespace std::chrono_literals;

namespace {

// A bound AF_UNIX datagram socket that collects the notify messages.
class notify_socket {
 public:
  explicit notify_socket(const fs::path& path) : path_(path) {
    fd_ = ::socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    REQUIRE(fd_ >= 0);
    sockaddr_un addr{};
    addr.sun_family = AF_UNIX;
    REQUIRE(path.string().size() < sizeof(addr.sun_path));
    std::memcpy(addr.sun_path, path.c_str(), path.string().size());
    REQUIRE(::bind(fd_, reinterpret_cast<const sockaddr*>(&addr), sizeof(addr)) == 0);
    const timeval tv{0, 100'000};
    REQUIRE(::setsockopt(fd_, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv)) == 0);
  }
  ~notify_socket() { ::close(fd_); }
  notify_socket(const notify_socket&) = delete;
  notify_socket& operator=(const notify_socket&) = delete;

  // Waits until a datagram carries the line `want` (e.g. "READY=1"); keeps
  // everything received in seen().
  bool wait_for(const std::string& want, std::chrono::milliseconds timeout, test::process& proc) {
    const auto deadline = std::chrono::steady_clock::now() + timeout;
    std::array<char, 4096> buf{};
    while (std::chrono::steady_clock::now() < deadline) {
      const auto n = ::recv(fd_, buf.data(), buf.size(), 0);
      if (n > 0) {
        const std::string msg(buf.data(), static_cast<std::size_t>(n));
        seen_ += msg + "|";
        if (("\n" + msg + "\n").find("\n" + want + "\n") != std::string::npos) return true;
      } else if (!proc.running()) {
        return false;
      }
    }
    return false;
  }
  [[nodiscard]] const std::string& seen() const { return seen_; }
  [[nodiscard]] const fs::path& path() const { return path_; }

 private:
  fs::path path_;
  int fd_ = -1;
  std::string seen_;
};

// whsec_ + base64 of 24 random bytes, made fresh for each run.
std::string random_secret() {
  std::array<unsigned char, 24> key{};
  REQUIRE(RAND_bytes(key.data(), static_cast<int>(key.size())) == 1);
  std::array<unsigned char, 64> out{};
  const int n = EVP_EncodeBlock(out.data(), key.data(), static_cast<int>(key.size()));
  return "whsec_" + std::string(reinterpret_cast<const char*>(out.data()), static_cast<std::size_t>(n));
}

// Starts `exe` with the notify socket and a 400 ms watchdog, expects READY=1,
// watchdog pings, a SIGHUP that is one warning line and stops nothing, then
// STOPPING=1 and a clean exit on SIGTERM. With `extends_start`, also an
// EXTEND_TIMEOUT_USEC before READY=1.
void check_notify(const fs::path& exe, const std::vector<std::string>& args, std::map<std::string, std::string> env,
                  bool extends_start = false) {
  const test::temp_dir dir;
  notify_socket sock(dir / "notify");
  env["NOTIFY_SOCKET"] = sock.path().string();
  env["WATCHDOG_USEC"] = "400000";
  env["WATCHDOG_PID"] = "";  // unset: the watchdog is meant for whoever reads it
  test::process proc(exe, args, env);
  const bool ready = sock.wait_for("READY=1", 20s, proc);
  INFO("stderr: " << proc.stderr_text());
  INFO("notify messages: " << sock.seen());
  CHECK(ready);
  if (ready && extends_start) {
    // systemd arms no watchdog before READY=1: only the start timeout bounds
    // what comes first, and the consumer's migrations may take longer.
    const auto extend = sock.seen().find("EXTEND_TIMEOUT_USEC=");
    CHECK(extend != std::string::npos);
    CHECK(extend < sock.seen().find("READY=1"));
  }
  if (ready) {
    CHECK(sock.wait_for("WATCHDOG=1", 5s, proc));
    CHECK(sock.wait_for("WATCHDOG=1", 5s, proc));  // a second ping: a timer, not a one-off
    // "Reload" to many an operator; by default it would end the process
    // without a line, an end systemd counts as clean and does not restart.
    proc.signal(SIGHUP);
    CHECK(proc.wait_for_log("level=warn msg=signal_ignored signal=SIGHUP", 5s));
    CHECK(sock.wait_for("WATCHDOG=1", 5s, proc));  // still turning
    CHECK(proc.running());
  }
  proc.signal(SIGTERM);
  CHECK(sock.wait_for("STOPPING=1", 10s, proc));
  CHECK(proc.wait(20s) == 0);
}

// A consumer of the users projection on `db`, its notifications to `sock`.
std::unique_ptr<test::process> start_users_consumer(const std::string& topic, const std::string& db,
                                                    const notify_socket& sock) {
  return std::make_unique<test::process>(test::binary_path("app/consumer/clerk-sync-consumer"),
                                         std::vector<std::string>{"--projection", "users"},
                                         std::map<std::string, std::string>{{"KAFKA_BROKERS", test::broker().brokers},
                                                                            {"CLERK_SYNC_TOPIC", topic},
                                                                            {"CLERK_SYNC_DB", db},
                                                                            {"NOTIFY_SOCKET", sock.path().string()}});
}

}  // namespace

TEST_CASE("clerk-sync-receiver sends READY=1 and watchdog pings through NOTIFY_SOCKET, and goes on after a SIGHUP") {
  const auto topic = test::fresh_topic("notify-receiver", 1);
  check_notify(test::binary_path("app/receiver/clerk-sync-receiver"), {},
               {{"KAFKA_BROKERS", test::broker().brokers},
                {"CLERK_SYNC_TOPIC", topic},
                {"CLERK_SYNC_LISTEN", "127.0.0.1:" + std::to_string(test::free_port())},
                {"CLERK_WEBHOOK_SECRET", random_secret()},
                {"CLERK_WEBHOOK_SECRET_FILE", ""}});
}

TEST_CASE("clerk-sync-auth sends READY=1 and watchdog pings through NOTIFY_SOCKET, and goes on after a SIGHUP") {
  const test::temp_dir dir;
  const test::rsa_signer signer;
  std::ofstream(dir / "key.pem") << signer.public_pem();
  const auto db = (dir / "clerk-sync.db").string();
  { const clerk_sync::store::database made(db); }  // as the consumers leave it
  check_notify(test::binary_path("app/auth/clerk-sync-auth"), {},
               {{"CLERK_JWT_KEY_FILE", (dir / "key.pem").string()},
                {"CLERK_JWKS_FILE", ""},
                {"CLERK_AUTHORIZED_PARTIES", ""},
                {"CLERK_SYNC_DB", db},
                {"CLERK_SYNC_AUTH_LISTEN", "127.0.0.1:" + std::to_string(test::free_port())}});
}

TEST_CASE("clerk-sync-consumer extends its start while it migrates, then sends READY=1 and watchdog pings, and goes on after a SIGHUP") {
  const auto topic = test::fresh_topic("notify-consumer", 1);
  const test::temp_dir db_dir;
  check_notify(test::binary_path("app/consumer/clerk-sync-consumer"), {"--projection", "users"},
               {{"KAFKA_BROKERS", test::broker().brokers},
                {"CLERK_SYNC_TOPIC", topic},
                {"CLERK_SYNC_DB", (db_dir / "clerk-sync.db").string()}},
               true);
}

TEST_CASE("clerk-sync-consumer extends its start while it waits for a swap-in's lock, then sends READY=1") {
  // ctl swap-in holds the projection's lock while it replaces a large file's
  // rows: a consumer started meanwhile waits before it subscribes, so before
  // READY=1, where only systemd's start timeout (90 s) would bound it.
  const auto topic = test::fresh_topic("notify-swap-wait", 1);
  const test::temp_dir dir;
  const auto db = (dir / "clerk-sync.db").string();
  const int lock = ::open((db + ".users.lock").c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0600);
  REQUIRE(lock >= 0);
  REQUIRE(::flock(lock, LOCK_EX) == 0);  // as swap-in takes it
  notify_socket sock(dir / "notify");
  const auto started = start_users_consumer(topic, db, sock);
  auto& proc = *started;
  REQUIRE(proc.wait_for_log("msg=swap_wait", 20s));
  // One extension while the database opened, then one for the wait (at
  // once, and every 10 s while it lasts); READY=1 only after the lock.
  const auto deadline = std::chrono::steady_clock::now() + 5s;
  while (test::count_of(sock.seen(), "EXTEND_TIMEOUT_USEC=") < 2 && std::chrono::steady_clock::now() < deadline)
    (void)sock.wait_for("EXTEND_TIMEOUT_USEC=30000000", 1s, proc);
  INFO("notify messages: " << sock.seen());
  CHECK(test::count_of(sock.seen(), "EXTEND_TIMEOUT_USEC=") >= 2);
  CHECK_FALSE(sock.wait_for("READY=1", 500ms, proc));  // not among what came meanwhile either
  ::close(lock);
  CHECK(sock.wait_for("READY=1", 20s, proc));
  proc.signal(SIGTERM);
  CHECK(proc.wait(20s) == 0);
}

TEST_CASE("clerk-sync-consumer waits for another process's migration, its start extended, and a SIGHUP meanwhile does not end it") {
  // After an upgrade every instance starts at once and one migrates: the
  // others wait for it however long it takes (migration_wait). That open
  // comes before the signal loop; a SIGHUP there (its default action ends
  // the process, which systemd counts as clean and does not restart) must
  // be held for the loop, which ignores it.
  const auto topic = test::fresh_topic("notify-migration-wait", 1);
  const test::temp_dir dir;
  const auto db = (dir / "clerk-sync.db").string();
  test::file_at_schema(db, clerk_sync::store::embedded_migrations().back().version - 1);
  std::optional<clerk_sync::store::file_lock> migrating =
      clerk_sync::store::file_lock::lock(clerk_sync::store::migration_lock_path(db),
                                         clerk_sync::store::file_lock::mode::exclusive);  // as the first instance
  notify_socket sock(dir / "notify");
  const auto started = start_users_consumer(topic, db, sock);
  auto& proc = *started;
  REQUIRE(proc.wait_for_log("msg=migration_wait", 20s));
  CHECK(sock.wait_for("EXTEND_TIMEOUT_USEC=30000000", 5s, proc));
  proc.signal(SIGHUP);
  CHECK_FALSE(sock.wait_for("READY=1", 500ms, proc));
  CHECK(proc.running());
  migrating.reset();
  CHECK(sock.wait_for("READY=1", 20s, proc));
  CHECK(proc.wait_for_log("msg=signal_ignored", 5s));
  CHECK(test::query_int(db, "PRAGMA user_version") == clerk_sync::store::embedded_migrations().back().version);
  proc.signal(SIGTERM);
  CHECK(proc.wait(20s) == 0);
}
