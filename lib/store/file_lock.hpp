#pragma once
// An flock(2) on a lock file, held for the object's life. The file is
// created if missing (0644) and left in place: removing a lock file races
// with its next user. It is opened read-only, which suffices for flock, so
// one that root left stays usable by the services' own user.

#include <optional>
#include <string>
#include <string_view>

namespace clerk_sync::store {

class file_lock {
 public:
  enum class mode { shared, exclusive };
  // The lock, or nullopt while another process holds it in a conflicting
  // mode. Throws std::system_error when the file cannot be made or locked.
  [[nodiscard]] static std::optional<file_lock> try_lock(const std::string& path, mode m);
  // The lock, once any conflicting holder has let go.
  [[nodiscard]] static file_lock lock(const std::string& path, mode m);
  ~file_lock();
  file_lock(file_lock&& o) noexcept;
  file_lock& operator=(file_lock&& o) noexcept;
  file_lock(const file_lock&) = delete;
  file_lock& operator=(const file_lock&) = delete;

 private:
  explicit file_lock(int fd) : fd_(fd) {}
  int fd_ = -1;
};

// What a projection's consumers hold shared while they run on the database
// at `db`, and ctl swap-in exclusive while it replaces that projection:
// "<db>.<projection>.lock" beside the file `db` resolves to (symlinks and
// relative paths followed). Throws std::system_error when it cannot be
// resolved.
[[nodiscard]] std::string projection_lock_path(const std::string& db, std::string_view projection);

// What a process holds exclusive while it migrates the database at `db`
// ("<db>.migrate.lock", resolved as above), so that others opening the file
// meanwhile wait for the migration, however long, instead of failing on
// its write lock after their busy timeout.
[[nodiscard]] std::string migration_lock_path(const std::string& db);

}  // namespace clerk_sync::store
