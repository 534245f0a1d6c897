#pragma once
// A JSON oracle for the fuzz targets that is not the code under test.

#include <rapidjson/document.h>

#include <optional>
#include <string>

#include "fuzz_input.hpp"

namespace clerk_sync::fuzz {

// The type of `body`'s root when it is JSON, whatever the size of its
// numbers (nullopt when it is not), asked of
// RapidJSON itself and not of decode's rewrite: RapidJSON stops at a number
// too large for a double and says where it starts (it reads numbers only
// where a value belongs); that number, over the extent of JSON's number
// grammar, becomes "0e0…0" of the same length, and the body is read again,
// RapidJSON checking all around it as before. (An exponent in the stand-in,
// so that no '.', 'e' or sign after the number could join it.)
inline std::optional<rapidjson::Type> json_root(std::string body) {
  // Never JSON, and RapidJSON takes the first as the end of its input.
  if (body.find('\0') != std::string::npos) return std::nullopt;
  constexpr unsigned flags = rapidjson::kParseNumbersAsStringsFlag | rapidjson::kParseIterativeFlag;
  const auto digit = [&](std::size_t i) { return i < body.size() && body[i] >= '0' && body[i] <= '9'; };
  const auto digits = [&](std::size_t i) {
    while (digit(i)) ++i;
    return i;
  };
  for (;;) {
    rapidjson::Document doc;
    // As a NUL-terminated string: RapidJSON's length-bounded read skips
    // any of a BOM's three bytes at the start, which no JSON holds.
    doc.Parse<flags>(body.c_str());
    if (doc.HasParseError() && doc.GetParseError() != rapidjson::kParseErrorNumberTooBig) return std::nullopt;
    if (!doc.HasParseError()) return doc.GetType();
    const std::size_t start = doc.GetErrorOffset();
    std::size_t end = start;
    if (end < body.size() && body[end] == '-') ++end;
    end = digits(end);  // past a double's range: never a lone 0
    if (end < body.size() && body[end] == '.' && digit(end + 1)) end = digits(end + 1);
    if (end < body.size() && (body[end] == 'e' || body[end] == 'E')) {
      std::size_t k = end + 1;
      if (k < body.size() && (body[k] == '+' || body[k] == '-')) ++k;
      if (digit(k)) end = digits(k);
    }
    FUZZ_CHECK(end - start >= 3);  // a number past a double's range is longer
    body.replace(start, end - start, "0e" + std::string(end - start - 2, '0'));
  }
}

}  // namespace clerk_sync::fuzz
