#pragma once
// `ctl compare`: a projection's table in two database files, row for row, in
// primary-key order. Both files are opened read-only (one may be the live
// database). Throws compare_error when a file or table cannot be read.

#include <cstdint>
#include <stdexcept>
#include <string>
#include <vector>

#include "projection/mapping.hpp"

namespace clerk_sync::ops {

struct compare_error : std::runtime_error {
  using std::runtime_error::runtime_error;
};

struct compare_result {
  std::string table;
  std::int64_t rows_a = 0;
  std::int64_t rows_b = 0;
  std::int64_t differences = 0;     // rows missing on one side or not equal
  std::vector<std::string> first;   // the first differing rows, printable
  [[nodiscard]] bool equal() const { return differences == 0; }
};

[[nodiscard]] compare_result compare_projection(const std::string& db_a, const std::string& db_b,
                                                projection::kind projection, std::size_t max_shown = 5);

}  // namespace clerk_sync::ops
