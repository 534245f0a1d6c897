#include "store/file_lock.hpp"

#include <fcntl.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <filesystem>
#include <system_error>
#include <utility>

namespace clerk_sync::store {
namespace {

int open_lock_file(const std::string& path) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_CREAT | O_CLOEXEC, 0644);
  if (fd < 0) throw std::system_error(errno, std::generic_category(), "cannot create " + path);
  // 0644 whatever the umask: one made by root under umask 077 (ctl swap-in
  // on a hardened host) would be closed to the consumers' own user. Another
  // user's file stays as it is (EPERM).
  (void)::fchmod(fd, 0644);
  return fd;
}

// One file however its path is spelled (relative, "./", a symlink):
// otherwise a consumer and swap-in could each hold a lock of their own.
std::string lock_path_beside(const std::string& db, std::string_view name) {
  std::error_code ec;
  auto path = std::filesystem::weakly_canonical(db, ec);
  if (ec) throw std::system_error(ec, "cannot resolve " + db);
  return path.string() + "." + std::string(name) + ".lock";
}

}  // namespace

std::optional<file_lock> file_lock::try_lock(const std::string& path, mode m) {
  file_lock l(open_lock_file(path));
  if (::flock(l.fd_, (m == mode::shared ? LOCK_SH : LOCK_EX) | LOCK_NB) == 0) return l;
  if (errno == EWOULDBLOCK) return std::nullopt;
  throw std::system_error(errno, std::generic_category(), "cannot lock " + path);
}

file_lock file_lock::lock(const std::string& path, mode m) {
  file_lock l(open_lock_file(path));
  while (::flock(l.fd_, m == mode::shared ? LOCK_SH : LOCK_EX) != 0)
    if (errno != EINTR) throw std::system_error(errno, std::generic_category(), "cannot lock " + path);
  return l;
}

file_lock::~file_lock() {
  if (fd_ >= 0) ::close(fd_);
}

file_lock::file_lock(file_lock&& o) noexcept : fd_(std::exchange(o.fd_, -1)) {}

file_lock& file_lock::operator=(file_lock&& o) noexcept {
  std::swap(fd_, o.fd_);
  return *this;
}

std::string projection_lock_path(const std::string& db, std::string_view projection) {
  return lock_path_beside(db, projection);
}

std::string migration_lock_path(const std::string& db) { return lock_path_beside(db, "migrate"); }

}  // namespace clerk_sync::store
