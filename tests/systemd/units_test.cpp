// `cmake --install` into a temporary prefix, then the installed units as
// systemd would read them: `systemd-analyze verify` (which also checks that
// ExecStart points at an executable) and `systemd-analyze security --offline`.
#include <doctest/doctest.h>

#include <filesystem>
#include <regex>
#include <string>

#include "support/process.hpp"
#include "support/support.hpp"

namespace fs = std::filesystem;
using namespace clerk_sync;
using namespace std::chrono_literals;

namespace {

const fs::path systemd_analyze = "/usr/bin/systemd-analyze";

// Installs the build tree into a fresh prefix; every test starts from its own.
struct installed {
  test::temp_dir dir;
  fs::path prefix = dir / "prefix";
  installed() {
    const auto r = test::run(CLERK_SYNC_CMAKE_COMMAND,
                             {"--install", test::binary_path("").string(), "--prefix", prefix.string()},
                             {{"DESTDIR", ""}}, 120s);
    INFO(r.out << r.err);
    REQUIRE(r.status == 0);
  }
  [[nodiscard]] fs::path unitdir() const { return prefix / "lib/systemd/system"; }
};

// Runs systemd-analyze with the installed units first on the unit path.
test::run_result analyze(const installed& inst, std::vector<std::string> args) {
  REQUIRE_MESSAGE(fs::exists(systemd_analyze), "systemd-analyze is missing: apt-get install systemd");
  // A trailing ':' keeps the built-in search path after ours.
  return test::run(systemd_analyze, args, {{"SYSTEMD_UNIT_PATH", inst.unitdir().string() + ":"}}, 60s);
}

double exposure(const std::string& output, const std::string& unit) {
  const std::regex re("Overall exposure level for " + std::regex_replace(unit, std::regex("[.@]"), "\\$&") +
                      ": ([0-9]+\\.[0-9])");
  std::smatch m;
  REQUIRE_MESSAGE(std::regex_search(output, m, re), output);
  return std::stod(m[1].str());
}

}  // namespace

TEST_CASE("cmake --install places binaries, units, schemas and the example environment") {
  const installed inst;
  for (const auto* exe : {"clerk-sync-receiver", "clerk-sync-consumer", "clerk-sync-ctl", "clerk-sync-auth"}) {
    const auto p = inst.prefix / "bin" / exe;
    INFO(p.string());
    CHECK(fs::exists(p));
    CHECK((fs::status(p).permissions() & fs::perms::owner_exec) != fs::perms::none);
  }
  CHECK(fs::exists(inst.unitdir() / "clerk-sync-receiver.service"));
  CHECK(fs::exists(inst.unitdir() / "clerk-sync-consumer@.service"));
  // The example beside the schemas, not in the docs (which an install may
  // leave out): the package's postinst makes /etc/clerk-sync/clerk-sync.env
  // from it.
  CHECK(fs::exists(inst.prefix / "share/clerk-sync/clerk-sync.env.example"));
  CHECK(!fs::exists(inst.prefix / "share/doc/clerk-sync/clerk-sync.env.example"));
  CHECK(fs::exists(inst.prefix / "share/doc/clerk-sync/README.md"));
  CHECK(fs::exists(inst.prefix / "share/clerk-sync/schemas/sql"));
  // Every migration in the source tree is installed.
  int migrations = 0;
  for (const auto& e : fs::directory_iterator(test::source_path("schemas/sql"))) {
    ++migrations;
    CHECK(fs::exists(inst.prefix / "share/clerk-sync/schemas/sql" / e.path().filename()));
  }
  CHECK(migrations > 0);
  // ExecStart follows the prefix, not the /usr/bin of the source units.
  const auto unit = test::read_file(inst.unitdir() / "clerk-sync-receiver.service");
  CHECK(unit.find("ExecStart=" + (inst.prefix / "bin/clerk-sync-receiver").string()) != std::string::npos);
}

TEST_CASE("systemd-analyze verify accepts the installed units") {
  const installed inst;
  // Unknown keys or bad values are only warnings (exit 0): any output fails.
  // users\x2csessions: a comma list of projections in one instance, escaped
  // by systemd as `systemd-escape --template` writes it.
  for (const std::string unit :
       {"clerk-sync-receiver.service", "clerk-sync-consumer@users.service", "clerk-sync-consumer@sessions.service",
        "clerk-sync-consumer@users\\x2csessions.service", "clerk-sync-auth.service"}) {
    const auto r = analyze(inst, {"verify", unit});
    INFO(unit << ": " << r.out << r.err);
    CHECK(r.status == 0);
    CHECK(r.out.empty());
    CHECK(r.err.empty());
  }
}

TEST_CASE("the source units say what the issue asks for") {
  const auto receiver = test::read_file(test::source_path("systemd/clerk-sync-receiver.service"));
  const auto consumer = test::read_file(test::source_path("systemd/clerk-sync-consumer@.service"));
  for (const auto* line :
       {"Type=notify", "WatchdogSec=", "Restart=on-failure", "DynamicUser=yes", "ProtectSystem=strict",
        "ProtectHome=yes", "NoNewPrivileges=yes", "PrivateTmp=yes", "RestrictAddressFamilies=AF_INET AF_INET6 AF_UNIX",
        "\nCapabilityBoundingSet=\n", "SystemCallFilter=@system-service", "EnvironmentFile=/etc/clerk-sync/clerk-sync.env"}) {
    INFO(line);
    CHECK(receiver.find(line) != std::string::npos);
    CHECK(consumer.find(line) != std::string::npos);
  }
  CHECK(receiver.find("LoadCredential=webhook-secret:/etc/clerk-sync/webhook-secret") != std::string::npos);
  CHECK(receiver.find("\nExecStart=/usr/bin/clerk-sync-receiver --secret-file %d/webhook-secret\n") != std::string::npos);
  CHECK(receiver.find("CLERK_WEBHOOK_SECRET=") == std::string::npos);
  // Exit 2 (a bad setting) is not retried, nor systemd's 243 (a credential
  // file missing), nor the consumer's 5 (its offset is outside the log: an
  // operator decides) or 6 (its database file replaced under it); every
  // other failure is.
  const auto auth = test::read_file(test::source_path("systemd/clerk-sync-auth.service"));
  CHECK(receiver.find("\nRestartPreventExitStatus=2 243\n") != std::string::npos);
  CHECK(consumer.find("\nRestartPreventExitStatus=2 243\n") != std::string::npos);
  CHECK(consumer.find("\nRestartPreventExitStatus=5 6\n") != std::string::npos);
  CHECK(auth.find("\nRestartPreventExitStatus=2 243\n") != std::string::npos);
  for (const auto* unit : {&receiver, &consumer, &auth}) {
    CHECK(unit->find("\nRestart=on-failure\n") != std::string::npos);
    // A missing environment file fails the start once (an assertion, in
    // [Unit]) rather than EnvironmentFile= failing each restart up to the
    // start limit.
    const auto unit_section = unit->substr(0, unit->find("\n[Service]\n"));
    CHECK(unit_section.find("\nAssertPathExists=/etc/clerk-sync/clerk-sync.env\n") != std::string::npos);
    CHECK(unit->find("\nEnvironmentFile=/etc/clerk-sync/clerk-sync.env\n") != std::string::npos);
    // journald's rate limit lifted for the unit (each line is one request or
    // event, or rate-limited by the process): with a 0 interval systemd 252
    // keeps journald's default, so the burst is raised instead.
    CHECK(unit->find("\nLogRateLimitBurst=100000\n") != std::string::npos);
    CHECK(unit->find("\nLogRateLimitIntervalSec=0") == std::string::npos);
  }
  // The receiver's connection cap (default 4096) stays below its file limit.
  CHECK(receiver.find("\nLimitNOFILE=8192\n") != std::string::npos);
  // The receiver's dynamic user is its own; the consumers share theirs, so
  // every projection can write the one database.
  CHECK(receiver.find("\nUser=clerk-sync-receiver\n") != std::string::npos);
  CHECK(receiver.find("\nUser=clerk-sync\n") == std::string::npos);
  CHECK(consumer.find("\nUser=clerk-sync\n") != std::string::npos);
  // The unescaped instance: %i would hand the consumer "users\x2csessions"
  // for the comma list users,sessions, which it refuses as a bad setting.
  CHECK(consumer.find("\nExecStart=/usr/bin/clerk-sync-consumer --projection %I\n") != std::string::npos);
  CHECK(consumer.find("StateDirectory=clerk-sync") != std::string::npos);
  // Auth starts after every consumer instance started with it, a comma list
  // too: the order is the template's, since auth's After= can only name
  // instances (the boot test starts auth with a comma-list instance).
  const auto consumer_unit_section = consumer.substr(0, consumer.find("\n[Service]\n"));
  CHECK(consumer_unit_section.find("\nBefore=clerk-sync-auth.service\n") != std::string::npos);
  const auto auth_unit_section = auth.substr(0, auth.find("\n[Service]\n"));
  for (const auto& line : test::lines_of(auth_unit_section))
    if (line.starts_with("After=")) CHECK(line.find("clerk-sync-consumer@") == std::string::npos);
  CHECK(consumer.find("CLERK_SYNC_DB=/var/lib/clerk-sync/clerk-sync.db") != std::string::npos);
}

TEST_CASE("the postinst restarts every unit on an upgrade, the consumers first") {
  // It names the units (the consumers must be ready before the receiver and
  // auth restart): a new unit in systemd/ needs its place there, or an
  // upgrade leaves it running the old binary.
  const auto postinst = test::read_file(test::source_path("systemd/debian/postinst"));
  const auto consumers = postinst.find("\n        systemctl_said try-restart 'clerk-sync-consumer@*.service'");
  const auto others = postinst.find("\n        systemctl_said try-restart clerk-sync-receiver.service $auth");
  REQUIRE(consumers != std::string::npos);
  REQUIRE(others != std::string::npos);
  CHECK(consumers < others);
  const auto line_at = [&](std::size_t at) { return postinst.substr(at, postinst.find('\n', at + 1) - at) + " "; };
  int units = 0;
  for (const auto& e : fs::directory_iterator(test::source_path("systemd"))) {
    const auto name = e.path().filename().string();
    if (e.path().extension() != ".service" || name == "clerk-sync-consumer@.service") continue;
    ++units;
    // On the others' try-restart line, or (auth) in the variable that line
    // takes while the consumers are back.
    CAPTURE(name);
    CHECK((line_at(others).find(" " + name + " ") != std::string::npos ||
           (name == "clerk-sync-auth.service" && postinst.find("\n    auth=" + name + "\n", consumers) < others)));
  }
  CHECK(units > 0);
}

TEST_CASE("systemd-analyze security rates every unit's exposure 2.0 or better") {
  const installed inst;
  for (const std::string unit :
       {"clerk-sync-receiver.service", "clerk-sync-consumer@users.service", "clerk-sync-auth.service"}) {
    const auto r = analyze(inst, {"security", "--offline=true", "--no-pager", unit});
    INFO(unit << ": " << r.out << r.err);
    REQUIRE(r.status == 0);
    const double level = exposure(r.out, unit);
    MESSAGE(unit << " exposure " << level);
    CHECK(level <= 2.0);  // as the systemd-boot test asks of the installed units
  }
}

TEST_CASE("a packaging install (DESTDIR, prefix /usr) keeps the units pointing at /usr/bin") {
  const test::temp_dir dir;
  const auto r = test::run(CLERK_SYNC_CMAKE_COMMAND, {"--install", test::binary_path("").string(), "--prefix", "/usr"},
                           {{"DESTDIR", dir.path().string()}}, 120s);
  INFO(r.out << r.err);
  REQUIRE(r.status == 0);
  CHECK(fs::exists(dir / "usr/bin/clerk-sync-receiver"));
  const auto unit = test::read_file(dir / "usr/lib/systemd/system/clerk-sync-receiver.service");
  CHECK(unit.find("\nExecStart=/usr/bin/clerk-sync-receiver --secret-file %d/webhook-secret\n") != std::string::npos);
  const auto consumer = test::read_file(dir / "usr/lib/systemd/system/clerk-sync-consumer@.service");
  CHECK(consumer.find("\nExecStart=/usr/bin/clerk-sync-consumer --projection %I\n") != std::string::npos);
}
