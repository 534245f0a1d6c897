#pragma once
// One line per request or event, `key=value` (logfmt) by default, JSON lines
// on request, written to stderr (journald adds nothing we need).
// Thread-safe after init(); format_line(), escape() and cut() are pure and
// used by the tests and the fuzzer. Never pass a secret or a signature as a
// field. Values of request-derived keys (svix_id, type, user) are cut to
// request_field_limit bytes, any other string to field_limit; control bytes
// and invalid UTF-8 are escaped as \xNN in both formats.

#include <chrono>
#include <concepts>
#include <cstdint>
#include <initializer_list>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <variant>

namespace clerk_sync::log {

enum class format { logfmt, json };
enum class level { debug, info, warn, error };

struct field {
  using value_type = std::variant<std::string_view, std::int64_t, double, bool>;

  field(std::string_view k, std::string_view v) : key(k), value(v) {}
  field(std::string_view k, const char* v) : key(k), value(std::string_view(v)) {}
  field(std::string_view k, const std::string& v) : key(k), value(std::string_view(v)) {}
  field(std::string_view k, bool v) : key(k), value(v) {}
  field(std::string_view k, double v) : key(k), value(v) {}
  template <std::integral I>
    requires(!std::same_as<I, bool>)
  field(std::string_view k, I v) : key(k), value(static_cast<std::int64_t>(v)) {}

  std::string_view key;
  value_type value;
};

// "logfmt" or "json"; nullopt for anything else.
[[nodiscard]] std::optional<format> parse_format(std::string_view name);
[[nodiscard]] std::optional<level> parse_level(std::string_view name);

// Sets the process-wide output format and threshold. Call once from main().
void init(format f, level threshold = level::info);

inline constexpr std::size_t request_field_limit = 200;
inline constexpr std::size_t field_limit = 2048;

// `v` if it fits in `limit` bytes; otherwise its first bytes (never ending
// inside a UTF-8 sequence) and a marker "...[cut N bytes]" naming how many
// were dropped.
[[nodiscard]] std::string cut(std::string_view v, std::size_t limit);

// A string value as it appears in a line of format `f`: logfmt bare or
// quoted, JSON quoted. Control bytes, quotes and backslashes are escaped;
// a byte that is not part of valid UTF-8 becomes the four characters \xNN.
// The result is always valid UTF-8 (and valid JSON for format::json).
[[nodiscard]] std::string escape(format f, std::string_view v);

// Renders one line (without newline): ts, level, msg, then the fields in order.
[[nodiscard]] std::string format_line(format f, level lv, std::string_view ts, std::string_view msg,
                                      std::initializer_list<field> fields);

void write(level lv, std::string_view msg, std::initializer_list<field> fields = {});

inline void debug(std::string_view msg, std::initializer_list<field> f = {}) { write(level::debug, msg, f); }
inline void info(std::string_view msg, std::initializer_list<field> f = {}) { write(level::info, msg, f); }
inline void warn(std::string_view msg, std::initializer_list<field> f = {}) { write(level::warn, msg, f); }
inline void error(std::string_view msg, std::initializer_list<field> f = {}) { write(level::error, msg, f); }

// Lets through the first line of each key, then at most one a `period`,
// which carries the number held back since the last one let through. For
// sources that can repeat a line without bound (librdkafka, hostile
// requests). Thread-safe; remembers at most max_keys keys (then starts over).
class rate_limiter {
 public:
  explicit rate_limiter(std::chrono::steady_clock::duration period = std::chrono::minutes(1),
                        std::size_t max_keys = 1024)
      : period_(period), max_keys_(max_keys) {}

  // nullopt: drop this line. Otherwise: write it, with the returned count of
  // lines dropped before it (0 the first time).
  [[nodiscard]] std::optional<std::uint64_t> admit(std::string_view key, std::chrono::steady_clock::time_point now);
  [[nodiscard]] std::optional<std::uint64_t> admit(std::string_view key) {
    return admit(key, std::chrono::steady_clock::now());
  }

 private:
  struct entry {
    std::chrono::steady_clock::time_point last;
    std::uint64_t dropped = 0;
  };
  std::chrono::steady_clock::duration period_;
  std::size_t max_keys_;
  std::mutex mutex_;
  std::unordered_map<std::string, entry> seen_;
};

}  // namespace clerk_sync::log
