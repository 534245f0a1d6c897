#include "ops/compare.hpp"

#include <SQLiteCpp/SQLiteCpp.h>

#include <algorithm>
#include <memory>
#include <optional>

#include "log/log.hpp"

namespace clerk_sync::ops {
namespace {

// Read-only on purpose, and not through store::database: that would run
// migrations and could write into the file being inspected.
std::unique_ptr<SQLite::Database> open_ro(const std::string& path) {
  try {
    return std::make_unique<SQLite::Database>(path, SQLite::OPEN_READONLY);
  } catch (const SQLite::Exception& e) {
    throw compare_error("cannot open " + path + ": " + e.what());
  }
}

struct table_shape {
  std::vector<std::string> columns;
  std::vector<std::string> key;  // primary-key columns, in key order
};

table_shape shape_of(SQLite::Database& db, const std::string& table) {
  table_shape s;
  std::vector<std::pair<int, std::string>> key;
  SQLite::Statement q(db, "SELECT name, pk FROM pragma_table_info(?) ORDER BY cid");
  q.bind(1, table);
  while (q.executeStep()) {
    s.columns.push_back(q.getColumn(0).getString());
    if (const int pk = q.getColumn(1).getInt(); pk > 0) key.emplace_back(pk, s.columns.back());
  }
  std::sort(key.begin(), key.end());
  for (auto& [n, name] : key) s.key.push_back(name);
  if (s.key.empty()) s.key = {"rowid"};
  return s;
}

std::string quoted(const std::string& ident) { return "\"" + ident + "\""; }

// One value with its storage class, so that 1 and '1' differ.
std::string render(const SQLite::Column& c) {
  if (c.isNull()) return "NULL";
  if (c.isInteger()) return std::to_string(c.getInt64());
  if (c.isFloat()) return c.getString();
  if (c.isText()) return "'" + c.getString() + "'";
  return "blob(" + c.getString() + ")";
}

// The same value as printed for the operator. Text comes from Clerk's
// events (a name is whatever the user typed): control bytes, invalid UTF-8
// and the characters a terminal acts on are escaped, as in log fields, so
// that a row cannot write lines or escape sequences of its choosing.
std::string shown(const SQLite::Column& c) {
  if (!c.isText() && !c.isBlob()) return render(c);
  const auto quoted = log::escape(log::format::json, c.getString());
  const auto inner = quoted.substr(1, quoted.size() - 2);
  return c.isText() ? "'" + inner + "'" : "blob(" + inner + ")";
}

class cursor {
 public:
  cursor(SQLite::Database& db, const std::string& table, const table_shape& s)
      : key_count_(s.key.size()), stmt_(db, select(table, s)) {
    advance();
  }
  [[nodiscard]] bool valid() const { return row_.has_value(); }
  // Every column, rendered with its storage class.
  [[nodiscard]] const std::vector<std::string>& row() const { return *row_; }
  // The raw key values: bytewise order, as SQLite's BINARY collation sorts TEXT.
  [[nodiscard]] const std::vector<std::string>& key() const { return key_; }
  void advance() {
    if (!stmt_.executeStep()) {
      row_.reset();
      return;
    }
    const auto n = static_cast<int>(key_count_);
    key_.clear();
    for (int i = 0; i < n; ++i) key_.push_back(stmt_.getColumn(i).getString());
    std::vector<std::string> r;
    shown_.clear();
    for (int i = n; i < stmt_.getColumnCount(); ++i) {
      r.push_back(render(stmt_.getColumn(i)));
      shown_.push_back(shown(stmt_.getColumn(i)));
    }
    row_ = std::move(r);
    ++count_;
  }
  [[nodiscard]] std::int64_t count() const { return count_; }
  // The row without the leading key copy, as "col=value ...", printable.
  [[nodiscard]] std::string text(const table_shape& s) const {
    std::string out;
    for (std::size_t i = 0; i < s.columns.size(); ++i)
      out += (i ? " " : "") + s.columns[i] + "=" + shown_[i];
    return out;
  }

 private:
  static std::string select(const std::string& table, const table_shape& s) {
    std::string keys, order;
    for (const auto& k : s.key) {
      keys += quoted(k) + ", ";
      order += (order.empty() ? "" : ", ") + quoted(k);
    }
    return "SELECT " + keys + "* FROM " + quoted(table) + " ORDER BY " + order;
  }
  std::size_t key_count_;
  SQLite::Statement stmt_;
  std::optional<std::vector<std::string>> row_;
  std::vector<std::string> shown_;  // row_ as printed
  std::vector<std::string> key_;
  std::int64_t count_ = 0;
};

}  // namespace

compare_result compare_projection(const std::string& db_a, const std::string& db_b, projection::kind projection,
                                  std::size_t max_shown) {
  compare_result out;
  out.table = std::string(projection::name(projection));  // table name = projection name (DESIGN §2)
  auto a = open_ro(db_a);
  auto b = open_ro(db_b);
  try {
    const auto sa = shape_of(*a, out.table);
    const auto sb = shape_of(*b, out.table);
    if (sa.columns.empty()) throw compare_error(db_a + " has no table " + out.table);
    if (sb.columns.empty()) throw compare_error(db_b + " has no table " + out.table);
    if (sa.columns != sb.columns || sa.key != sb.key)
      throw compare_error("table " + out.table + " has different columns in the two files (schema versions?)");
    cursor ca(*a, out.table, sa), cb(*b, out.table, sb);
    auto note = [&](const std::string& line) {
      ++out.differences;
      if (out.first.size() < max_shown) out.first.push_back(line);
    };
    // Merge walk in key order (every table here has a TEXT key).
    while (ca.valid() || cb.valid()) {
      if (ca.valid() && cb.valid() && ca.key() == cb.key()) {
        if (ca.row() != cb.row()) note("differs:\n  A: " + ca.text(sa) + "\n  B: " + cb.text(sb));
        ca.advance();
        cb.advance();
      } else if (!cb.valid() || (ca.valid() && ca.key() < cb.key())) {
        note("only in A: " + ca.text(sa));
        ca.advance();
      } else {
        note("only in B: " + cb.text(sb));
        cb.advance();
      }
    }
    out.rows_a = ca.count();
    out.rows_b = cb.count();
  } catch (const SQLite::Exception& e) {
    throw compare_error(std::string("reading ") + out.table + ": " + e.what());
  }
  return out;
}

}  // namespace clerk_sync::ops
