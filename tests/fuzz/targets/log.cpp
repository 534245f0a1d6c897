// Log field escaping (log::format_line), in both formats, with request-like
// fields from the input (parts: svix_id, type, user, an integer, a number).
// Properties: a line never holds a raw control byte; a JSON line parses as
// one JSON object with every field, and gives back each short valid-UTF-8
// value exactly; a logfmt line reads back as the same keys and values.

#include <rapidjson/document.h>
#include <rapidjson/error/en.h>

#include <charconv>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "fuzz_input.hpp"
#include "log/log.hpp"

namespace lg = clerk_sync::log;

namespace {

// Values longer than this may be cut (fields from a request are bounded).
constexpr std::size_t exact_up_to = 128;

bool valid_utf8(std::string_view s) {
  std::size_t i = 0;
  while (i < s.size()) {
    const auto c = static_cast<unsigned char>(s[i]);
    std::size_t n = 0;
    std::uint32_t cp = 0;
    if (c < 0x80) {
      ++i;
      continue;
    } else if (c >= 0xc2 && c <= 0xdf) {
      n = 1, cp = c & 0x1fu;
    } else if (c >= 0xe0 && c <= 0xef) {
      n = 2, cp = c & 0x0fu;
    } else if (c >= 0xf0 && c <= 0xf4) {
      n = 3, cp = c & 0x07u;
    } else {
      return false;
    }
    for (std::size_t k = 1; k <= n; ++k) {
      if (i + k >= s.size()) return false;
      const auto cc = static_cast<unsigned char>(s[i + k]);
      if ((cc & 0xc0u) != 0x80u) return false;
      cp = (cp << 6) | (cc & 0x3fu);
    }
    if ((n == 2 && cp < 0x800) || (n == 3 && (cp < 0x10000 || cp > 0x10ffff)) || (cp >= 0xd800 && cp <= 0xdfff))
      return false;
    i += n + 1;
  }
  return true;
}

// JSON allows a raw DEL (0x7f); logfmt lines escape it too.
bool no_control_bytes(std::string_view line, bool del_allowed) {
  for (const char ch : line) {
    const auto c = static_cast<unsigned char>(ch);
    if (c < 0x20 || (c == 0x7f && !del_allowed)) return false;
  }
  return true;
}

// No character a terminal or viewer acts on is left raw: a C1 control, a
// bidi control, a line or paragraph separator (as UTF-8; a line holds only
// valid UTF-8 or escapes, where these bytes start nothing else).
bool no_acted_on(std::string_view line) {
  const auto b = [&](std::size_t i) { return static_cast<unsigned char>(line[i]); };
  for (std::size_t i = 0; i + 1 < line.size(); ++i) {
    if (b(i) == 0xc2 && b(i + 1) >= 0x80 && b(i + 1) <= 0x9f) return false;  // C1
    if (b(i) == 0xd8 && b(i + 1) == 0x9c) return false;                       // U+061C
    if (i + 2 < line.size() && b(i) == 0xe2) {
      const unsigned cp = 0x2000u | ((b(i + 1) & 0x3fu) << 6) | (b(i + 2) & 0x3fu);
      if (b(i + 1) < 0x80 || b(i + 1) > 0x81) continue;
      if (cp == 0x200e || cp == 0x200f || (cp >= 0x2028 && cp <= 0x202e) || (cp >= 0x2066 && cp <= 0x2069))
        return false;
    }
  }
  return true;
}

int hex(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

// key=value pairs of a logfmt line; a value is bare or quoted with \" \\ \n
// \t \r \xHH \uHHHH escapes. nullopt when the line does not read.
std::optional<std::vector<std::pair<std::string, std::string>>> read_logfmt(std::string_view line) {
  std::vector<std::pair<std::string, std::string>> out;
  std::size_t i = 0;
  while (i < line.size()) {
    const auto eq = line.find('=', i);
    if (eq == std::string_view::npos) return std::nullopt;
    std::string key(line.substr(i, eq - i));
    if (key.empty() || key.find_first_of(" \"") != std::string::npos) return std::nullopt;
    i = eq + 1;
    std::string value;
    if (i < line.size() && line[i] == '"') {
      ++i;
      while (true) {
        if (i >= line.size()) return std::nullopt;
        const char c = line[i++];
        if (c == '"') break;
        if (c != '\\') {
          value += c;
          continue;
        }
        if (i >= line.size()) return std::nullopt;
        const char e = line[i++];
        if (e == 'n') value += '\n';
        else if (e == 't') value += '\t';
        else if (e == 'r') value += '\r';
        else if (e == '"' || e == '\\') value += e;
        else if (e == 'x' && i + 1 < line.size() && hex(line[i]) >= 0 && hex(line[i + 1]) >= 0) {
          value += static_cast<char>(hex(line[i]) * 16 + hex(line[i + 1]));
          i += 2;
        } else if (e == 'u' && i + 3 < line.size() && hex(line[i]) >= 0 && hex(line[i + 1]) >= 0 &&
                   hex(line[i + 2]) >= 0 && hex(line[i + 3]) >= 0) {
          // A character a terminal acts on, as UTF-8 again (two or three bytes).
          const unsigned cp = static_cast<unsigned>((hex(line[i]) << 12) | (hex(line[i + 1]) << 8) |
                                                    (hex(line[i + 2]) << 4) | hex(line[i + 3]));
          if (cp < 0x80) return std::nullopt;
          if (cp < 0x800) {
            value += static_cast<char>(0xc0 | (cp >> 6));
          } else {
            value += static_cast<char>(0xe0 | (cp >> 12));
            value += static_cast<char>(0x80 | ((cp >> 6) & 0x3f));
          }
          value += static_cast<char>(0x80 | (cp & 0x3f));
          i += 4;
        } else {
          return std::nullopt;
        }
      }
      if (i < line.size() && line[i] != ' ') return std::nullopt;
    } else {
      const auto sp = line.find(' ', i);
      value = std::string(line.substr(i, sp == std::string_view::npos ? std::string_view::npos : sp - i));
      if (value.empty() || value.find_first_of("\"=\\") != std::string::npos) return std::nullopt;
      i += value.size();
    }
    out.emplace_back(std::move(key), std::move(value));
    if (i < line.size()) ++i;  // the space
  }
  return out;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const auto p = clerk_sync::fuzz::split(clerk_sync::fuzz::text(data, size), 5);
  std::int64_t number = 0;
  (void)std::from_chars(p[3].data(), p[3].data() + p[3].size(), number);
  // Any double: NaN and infinity are logged as null, huge values whole.
  double ms = std::strtod(std::string(p[4]).c_str(), nullptr);
  const std::string_view strings[] = {p[0], p[1], p[2]};
  constexpr std::string_view keys[] = {"svix_id", "type", "user"};

  for (const auto f : {lg::format::json, lg::format::logfmt}) {
    const std::string line = lg::format_line(f, lg::level::info, "2026-01-02T03:04:05.678Z", "accepted",
                                             {{keys[0], p[0]}, {keys[1], p[1]}, {keys[2], p[2]},
                                              {"offset", number}, {"ms", ms}, {"ready", true}});
    FUZZ_CHECK(no_control_bytes(line, f == lg::format::json));
    FUZZ_CHECK(no_acted_on(line));
    if (f == lg::format::json) {
      rapidjson::Document doc;
      doc.Parse(line.data(), line.size());
      if (doc.HasParseError()) std::fprintf(stderr, "%s\n", rapidjson::GetParseError_En(doc.GetParseError()));
      FUZZ_CHECK(!doc.HasParseError() && doc.IsObject());
      FUZZ_CHECK(doc.MemberCount() == 9);
      for (std::size_t k = 0; k < 3; ++k) {
        const auto it = doc.FindMember(rapidjson::Value(rapidjson::StringRef(keys[k].data(), keys[k].size())));
        FUZZ_CHECK(it != doc.MemberEnd() && it->value.IsString());
        if (strings[k].size() <= exact_up_to && valid_utf8(strings[k]))
          FUZZ_CHECK(std::string_view(it->value.GetString(), it->value.GetStringLength()) == strings[k]);
      }
      FUZZ_CHECK(doc["offset"].IsInt64() && doc["offset"].GetInt64() == number);
      FUZZ_CHECK(std::isfinite(ms) ? doc["ms"].IsNumber() : doc["ms"].IsNull());
      // Invalid UTF-8 in a field is escaped: every line is valid UTF-8.
      FUZZ_CHECK(valid_utf8(line));
    } else {
      const auto pairs = read_logfmt(line);
      FUZZ_CHECK(pairs.has_value() && pairs->size() == 9);
      for (std::size_t k = 0; k < 3; ++k) {
        FUZZ_CHECK((*pairs)[3 + k].first == keys[k]);
        if (strings[k].size() <= exact_up_to && valid_utf8(strings[k])) FUZZ_CHECK((*pairs)[3 + k].second == strings[k]);
      }
      FUZZ_CHECK((*pairs)[6].second == std::to_string(number));
      // The double as printf writes it: %.3f below 1e15, %.17g from there.
      char ref[400];
      if (std::isfinite(ms))
        std::snprintf(ref, sizeof ref, std::fabs(ms) < 1e15 ? "%.3f" : "%.17g", ms);
      else
        std::snprintf(ref, sizeof ref, "null");
      FUZZ_CHECK((*pairs)[7].first == "ms" && (*pairs)[7].second == ref);
    }
  }
  return 0;
}
