#pragma once
// One line per request or event, `key=value` (logfmt) by default, JSON lines
// on request, written to stderr (journald adds nothing we need).
// Thread-safe after init(); format_line() is pure and used by the tests.
// Never pass a secret or a signature as a field.

#include <concepts>
#include <cstdint>
#include <initializer_list>
#include <optional>
#include <string>
#include <string_view>
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

// Renders one line (without newline): ts, level, msg, then the fields in order.
[[nodiscard]] std::string format_line(format f, level lv, std::string_view ts, std::string_view msg,
                                      std::initializer_list<field> fields);

void write(level lv, std::string_view msg, std::initializer_list<field> fields = {});

inline void debug(std::string_view msg, std::initializer_list<field> f = {}) { write(level::debug, msg, f); }
inline void info(std::string_view msg, std::initializer_list<field> f = {}) { write(level::info, msg, f); }
inline void warn(std::string_view msg, std::initializer_list<field> f = {}) { write(level::warn, msg, f); }
inline void error(std::string_view msg, std::initializer_list<field> f = {}) { write(level::error, msg, f); }

}  // namespace clerk_sync::log
