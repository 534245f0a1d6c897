#include "support/process.hpp"

#include <doctest/doctest.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdlib>
#include <thread>

#include "support/support.hpp"

extern char** environ;

namespace clerk_sync::test {
namespace {

std::filesystem::path make_dir() {
  std::string tmpl = (std::filesystem::temp_directory_path() / "clerk-sync-proc-XXXXXX").string();
  REQUIRE(::mkdtemp(tmpl.data()) != nullptr);
  return tmpl;
}

int decode(int status) {
  if (WIFEXITED(status)) return WEXITSTATUS(status);
  if (WIFSIGNALED(status)) return 128 + WTERMSIG(status);
  return -1;
}

}  // namespace

process::process(const std::filesystem::path& exe, const std::vector<std::string>& args,
                 const std::map<std::string, std::string>& env)
    : dir_(make_dir()) {
  REQUIRE_MESSAGE(std::filesystem::exists(exe), "not built: " << exe.string());
  // Build argv and envp before fork: only async-signal-safe calls after it.
  std::vector<std::string> arg_store{exe.string()};
  arg_store.insert(arg_store.end(), args.begin(), args.end());
  std::map<std::string, std::string> merged;
  for (char** e = environ; *e; ++e) {
    const std::string kv(*e);
    const auto eq = kv.find('=');
    if (eq != std::string::npos) merged[kv.substr(0, eq)] = kv.substr(eq + 1);
  }
  for (const auto& [k, v] : env) {
    if (v.empty()) merged.erase(k);
    else merged[k] = v;
  }
  std::vector<std::string> env_store;
  for (const auto& [k, v] : merged) env_store.push_back(k + "=" + v);
  std::vector<char*> argv, envp;
  for (auto& a : arg_store) argv.push_back(a.data());
  argv.push_back(nullptr);
  for (auto& e : env_store) envp.push_back(e.data());
  envp.push_back(nullptr);
  const std::string out_path = (dir_ / "stdout").string(), err_path = (dir_ / "stderr").string();

  // Opened here, not in the child, so that the files exist once we return.
  const int in = ::open("/dev/null", O_RDONLY | O_CLOEXEC);
  const int out = ::open(out_path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
  const int err = ::open(err_path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
  REQUIRE((in >= 0 && out >= 0 && err >= 0));
  pid_ = ::fork();
  REQUIRE(pid_ >= 0);
  if (pid_ == 0) {
    ::dup2(in, 0);
    ::dup2(out, 1);
    ::dup2(err, 2);
    ::execve(argv[0], argv.data(), envp.data());
    ::_exit(127);
  }
  ::close(in);
  ::close(out);
  ::close(err);
}

process::~process() {
  if (running()) {
    ::kill(pid_, SIGKILL);
    (void)wait(std::chrono::seconds(10));
  }
  std::error_code ec;
  std::filesystem::remove_all(dir_, ec);
}

void process::signal(int sig) const { ::kill(pid_, sig); }

std::optional<int> process::wait(std::chrono::milliseconds timeout) {
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  while (!status_) {
    int st = 0;
    const pid_t r = ::waitpid(pid_, &st, WNOHANG);
    if (r == pid_) {
      status_ = decode(st);
      break;
    }
    if (std::chrono::steady_clock::now() >= deadline) return std::nullopt;
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  return status_;
}

bool process::running() { return !wait(std::chrono::milliseconds(0)).has_value(); }

bool process::has_open(const std::filesystem::path& file) const {
  std::error_code ec;
  const auto want = std::filesystem::weakly_canonical(file, ec);
  for (const auto& fd : std::filesystem::directory_iterator("/proc/" + std::to_string(pid_) + "/fd", ec))
    if (std::filesystem::read_symlink(fd.path(), ec) == want) return true;
  return false;
}

std::string process::stderr_text() const { return read_file(dir_ / "stderr"); }
std::string process::stdout_text() const { return read_file(dir_ / "stdout"); }

bool process::wait_for_log(const std::string& needle, std::chrono::milliseconds timeout) {
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  while (std::chrono::steady_clock::now() < deadline) {
    if (stderr_text().find(needle) != std::string::npos) return true;
    if (!running()) return stderr_text().find(needle) != std::string::npos;
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  return false;
}

int free_port() {
  const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  REQUIRE(fd >= 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  addr.sin_port = 0;
  REQUIRE(::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0);
  socklen_t len = sizeof addr;
  REQUIRE(::getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len) == 0);
  ::close(fd);
  return ntohs(addr.sin_port);
}

held_port::held_port() : fd_(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0)) {
  REQUIRE(fd_ >= 0);
  const int on = 1;
  REQUIRE(::setsockopt(fd_, SOL_SOCKET, SO_REUSEADDR, &on, sizeof on) == 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  REQUIRE(::bind(fd_, reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0);
  REQUIRE(::listen(fd_, 1) == 0);
  socklen_t len = sizeof addr;
  REQUIRE(::getsockname(fd_, reinterpret_cast<sockaddr*>(&addr), &len) == 0);
  port_ = ntohs(addr.sin_port);
}

held_port::~held_port() { ::close(fd_); }

run_result run(const std::filesystem::path& exe, const std::vector<std::string>& args,
               const std::map<std::string, std::string>& env, std::chrono::milliseconds timeout) {
  process p(exe, args, env);
  const auto st = p.wait(timeout);
  REQUIRE_MESSAGE(st.has_value(), exe.filename().string() << " did not finish in time");
  return {*st, p.stdout_text(), p.stderr_text()};
}

}  // namespace clerk_sync::test
