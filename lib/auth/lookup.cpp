#include "auth/lookup.hpp"

#include <SQLiteCpp/SQLiteCpp.h>

#include "store/database.hpp"

namespace clerk_sync::auth {

struct lookup::impl {
  explicit impl(const std::string& path) : db(path, store::open_options{std::chrono::milliseconds(1000), true}) {
    try {
      user_stmt = std::make_unique<SQLite::Statement>(
          db.native(), "SELECT role, banned, deleted_at IS NOT NULL FROM users WHERE id = ?");
      session_stmt = std::make_unique<SQLite::Statement>(db.native(), "SELECT status FROM sessions WHERE id = ?");
    } catch (const SQLite::Exception& e) {
      throw store::open_error(path + ": not a clerk-sync database (" + e.what() + ")");
    }
  }
  store::database db;
  std::unique_ptr<SQLite::Statement> user_stmt;
  std::unique_ptr<SQLite::Statement> session_stmt;
};

lookup::lookup(const std::string& db_path) : path_(db_path), impl_(std::make_unique<impl>(db_path)) {}

void lookup::reopen() {
  try {
    impl_ = std::make_unique<impl>(path_);
  } catch (const store::open_error& e) {
    throw store::db_error(e.what());
  }
}
lookup::~lookup() = default;

std::optional<user_row> lookup::user(const std::string& id) {
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

std::optional<session_row> lookup::session(const std::string& id) {
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
