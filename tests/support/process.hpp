#pragma once
// Runs a built executable as a child process, the way an operator or systemd
// would: arguments, extra environment, stderr and stdout captured to files.
// For end-to-end and kill tests. Not thread-safe; one owner per process.

#include <sys/types.h>

#include <chrono>
#include <filesystem>
#include <map>
#include <optional>
#include <string>
#include <vector>

namespace clerk_sync::test {

class process {
 public:
  // Starts `exe` with `args`; `env` entries are added to (or override) the
  // current environment; an entry with an empty value removes that variable.
  process(const std::filesystem::path& exe, const std::vector<std::string>& args,
          const std::map<std::string, std::string>& env = {});
  ~process();  // SIGKILLs the child if it is still running
  process(const process&) = delete;
  process& operator=(const process&) = delete;

  [[nodiscard]] pid_t pid() const { return pid_; }
  void signal(int sig) const;
  // Exit status (0..255), or 128+signal when killed; nullopt on timeout.
  [[nodiscard]] std::optional<int> wait(std::chrono::milliseconds timeout);
  [[nodiscard]] bool running();
  // Whether the child has `file` open now (its /proc/PID/fd links).
  [[nodiscard]] bool has_open(const std::filesystem::path& file) const;

  // What the child wrote so far.
  [[nodiscard]] std::string stderr_text() const;
  [[nodiscard]] std::string stdout_text() const;
  // Waits until stderr (logs) contains `needle`; false on timeout or exit.
  bool wait_for_log(const std::string& needle, std::chrono::milliseconds timeout);

 private:
  pid_t pid_ = -1;
  std::optional<int> status_;
  std::filesystem::path dir_;
};

// A TCP port on 127.0.0.1 that was free a moment ago.
[[nodiscard]] int free_port();

// A port on 127.0.0.1 that this process listens on (SO_REUSEADDR, as the
// daemons bind) for the object's life: another process cannot take it.
class held_port {
 public:
  held_port();
  ~held_port();
  held_port(const held_port&) = delete;
  held_port& operator=(const held_port&) = delete;
  [[nodiscard]] int port() const { return port_; }
  [[nodiscard]] int fd() const { return fd_; }  // to accept on

 private:
  int fd_ = -1;
  int port_ = 0;
};

// Runs a command to completion (no shell); returns exit status and stdout.
struct run_result {
  int status = -1;
  std::string out;
  std::string err;
};
[[nodiscard]] run_result run(const std::filesystem::path& exe, const std::vector<std::string>& args,
                             const std::map<std::string, std::string>& env = {},
                             std::chrono::milliseconds timeout = std::chrono::seconds(60));

}  // namespace clerk_sync::test
