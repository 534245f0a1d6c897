#include "auth/lookup.hpp"

#include <SQLiteCpp/SQLiteCpp.h>
#include <sys/stat.h>

#include "store/database.hpp"

namespace clerk_sync::auth {
namespace {

// The file `path` names (device, inode); nullopt when it names none.
std::optional<std::pair<dev_t, ino_t>> file_at(const std::string& path) {
  struct stat st {};
  if (::stat(path.c_str(), &st) != 0) return std::nullopt;
  return std::pair{st.st_dev, st.st_ino};
}

}  // namespace

struct lookup::impl {
  // The file is identified before the open: a file moved there in between
  // is then seen as a replacement at the next check, never kept unnoticed.
  explicit impl(const std::string& path)
      : file(file_at(path)), db(path, store::open_options{std::chrono::milliseconds(1000), true}) {
    try {
      user_stmt = std::make_unique<SQLite::Statement>(
          db.native(), "SELECT role, banned, deleted_at IS NOT NULL FROM users WHERE id = ?");
      session_stmt = std::make_unique<SQLite::Statement>(db.native(), "SELECT status FROM sessions WHERE id = ?");
    } catch (const SQLite::Exception& e) {
      throw store::open_error(path + ": not a clerk-sync database (" + e.what() + ")");
    }
  }
  std::optional<std::pair<dev_t, ino_t>> file;
  store::database db;
  std::unique_ptr<SQLite::Statement> user_stmt;
  std::unique_ptr<SQLite::Statement> session_stmt;
};

lookup::lookup(const std::string& db_path, std::chrono::milliseconds recheck)
    : path_(db_path), recheck_(recheck), impl_(std::make_unique<impl>(db_path)) {}

void lookup::follow_path() {
  if (replaced_) throw store::db_error(replaced_error());
  const auto now = std::chrono::steady_clock::now();
  // While the path names no file, every lookup asks again: none is
  // answered from a file the path no longer names.
  if (!missing_ && now < next_check_) return;
  next_check_ = now + recheck_;
  require_same_file();
}

void lookup::require_same_file() {
  if (!replaced_) {
    const auto now = file_at(path_);
    missing_ = !now;
    if (now && now == impl_->file) return;
    // Moved away for a moment, or a passing error: nothing to latch on.
    if (!now) throw store::db_error("the database file at " + path_ + " is missing (moved or deleted?)");
  }
  replaced_ = true;
  throw store::db_error(replaced_error());
}

std::optional<std::string> lookup::file_problem() {
  try {
    require_same_file();
    return std::nullopt;
  } catch (const store::db_error& e) {
    return std::string(e.what());
  }
}

std::string lookup::replaced_error() const {
  return "the database file at " + path_ +
         " was replaced while this service ran: it answers 503 until it is restarted after the swap "
         "(README \"Backfill a projection and swap it in\"; the old file's -wal would be read into the new one)";
}

void lookup::reopen() {
  // The same file only: a connection opened on a file moved there would
  // pair it with the -wal and -shm of the one it replaced.
  require_same_file();
  try {
    impl_ = std::make_unique<impl>(path_);
  } catch (const store::open_error& e) {
    throw store::db_error(e.what());
  }
}
lookup::~lookup() = default;

std::optional<user_row> lookup::user(const std::string& id) {
  follow_path();
  auto& s = *impl_->user_stmt;
  try {
    s.reset();
    s.bind(1, id);
    std::optional<user_row> out;
    if (s.executeStep())
      out = user_row{s.getColumn(0).getString(), s.getColumn(1).getInt() != 0, s.getColumn(2).getInt() != 0};
    s.reset();
    return out;
  } catch (const SQLite::Exception& e) {
    (void)s.tryReset();
    throw store::db_error(std::string("users lookup: ") + e.what());
  }
}

positions lookup::projection_positions() {
  follow_path();
  try {
    SQLite::Statement s(impl_->db.native(), "SELECT projection, topic, partition, next_offset FROM kafka_offsets");
    positions out;
    while (s.executeStep())
      out[s.getColumn(0).getString()][{s.getColumn(1).getString(), s.getColumn(2).getInt()}] =
          s.getColumn(3).getInt64();
    return out;
  } catch (const SQLite::Exception& e) {
    throw store::db_error(std::string("kafka_offsets: ") + e.what());
  }
}

std::optional<session_row> lookup::session(const std::string& id) {
  follow_path();
  auto& s = *impl_->session_stmt;
  try {
    s.reset();
    s.bind(1, id);
    std::optional<session_row> out;
    if (s.executeStep()) out = session_row{s.getColumn(0).getString()};
    s.reset();
    return out;
  } catch (const SQLite::Exception& e) {
    (void)s.tryReset();
    throw store::db_error(std::string("sessions lookup: ") + e.what());
  }
}

}  // namespace clerk_sync::auth
