#pragma once
// One line per request or event, `key=value` (logfmt) by default, JSON lines
// on request, written to stderr. When stderr is journald's stream (a systemd
// unit's), each line starts with its syslog priority ("<3>" for error, as
// sd-daemon.h's SD_ERR), which journald strips and stores as the entry's
// PRIORITY, so that `journalctl -p warning` finds warnings and errors.
// Thread-safe after init(); format_line(), escape() and cut() are pure and
// used by the tests and the fuzzer. Never pass a secret or a signature as a
// field. Values of request-derived keys (svix_id, type, user) are cut to
// request_field_limit bytes, any other string to field_limit; control bytes
// are escaped (\n; else \xNN in logfmt, \u00NN in JSON) and a byte of
// invalid UTF-8 reads \xNN in both formats.

#include <chrono>
#include <concepts>
#include <cstdint>
#include <initializer_list>
#include <mutex>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <unordered_map>
#include <variant>
#include <vector>

namespace clerk_sync::log {

enum class format { logfmt, json };
enum class level { debug, info, warn, error };

struct field {
  using value_type = std::variant<std::string_view, std::int64_t, double, bool>;

  field(std::string_view k, std::string_view v) : key(k), value(v) {}
  field(std::string_view k, const char* v) : key(k), value(std::string_view(v)) {}
  field(std::string_view k, const std::string& v) : key(k), value(std::string_view(v)) {}
  // A field holds a view: one of a temporary string would dangle once the
  // expression that made it ends (a vector of fields built up for later).
  field(std::string_view k, std::string&& v) = delete;
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

// Whether `fd` is the stream journald gave this process: $JOURNAL_STREAM
// ("device:inode", set by systemd for a unit whose output goes to the
// journal) names the file open on `fd`. Read once, at the first line.
[[nodiscard]] bool is_journal_stream(int fd, const char* journal_stream);

// Sets the process-wide output format and threshold. Call once from main().
void init(format f, level threshold = level::info);
// Whether a line at `lv` is written (the threshold init() set).
[[nodiscard]] bool enabled(level lv);

inline constexpr std::size_t request_field_limit = 200;
inline constexpr std::size_t field_limit = 2048;

// `v` if it fits in `limit` bytes; otherwise its first bytes (never ending
// inside a UTF-8 sequence) and a marker "...[cut N bytes]" naming how many
// were dropped.
[[nodiscard]] std::string cut(std::string_view v, std::size_t limit);

// A string value as it appears in a line of format `f`: logfmt bare or
// quoted, JSON quoted. Control bytes, quotes and backslashes are escaped;
// a byte that is not part of valid UTF-8 becomes the four characters \xNN,
// and a valid character a terminal acts on (a C1 control such as U+009B,
// CSI; a bidi control) the six characters \uNNNN.
// The result is always valid UTF-8 (and valid JSON for format::json).
[[nodiscard]] std::string escape(format f, std::string_view v);

// Renders one line (without newline): ts, level, msg, then the fields in order.
[[nodiscard]] std::string format_line(format f, level lv, std::string_view ts, std::string_view msg,
                                      std::span<const field> fields);
[[nodiscard]] inline std::string format_line(format f, level lv, std::string_view ts, std::string_view msg,
                                             std::initializer_list<field> fields) {
  return format_line(f, lv, ts, msg, std::span<const field>(fields.begin(), fields.size()));
}

void write(level lv, std::string_view msg, std::span<const field> fields);
inline void write(level lv, std::string_view msg, std::initializer_list<field> fields = {}) {
  write(lv, msg, std::span<const field>(fields.begin(), fields.size()));
}

inline void debug(std::string_view msg, std::initializer_list<field> f = {}) { write(level::debug, msg, f); }
inline void info(std::string_view msg, std::initializer_list<field> f = {}) { write(level::info, msg, f); }
inline void warn(std::string_view msg, std::initializer_list<field> f = {}) { write(level::warn, msg, f); }
inline void error(std::string_view msg, std::initializer_list<field> f = {}) { write(level::error, msg, f); }

// Writes the first line of each key, then at most one a `period`, for
// sources that can repeat a line without bound (librdkafka, hostile
// requests). Every line written carries `repeated`: how many other lines of
// its key were not written since the one written before it. A line held back
// is not lost: once a period has passed since its key last wrote a line,
// flush() writes the latest one held (at the highest level among those held,
// with `seen_at`, when it happened), so the lines written plus their
// `repeated` counts are all the lines there were. After init(), the log's
// flusher thread calls flush_all() every 100 ms; drain_all() writes every
// held line at once (the programs call it before their `stopped` line), and
// a limiter writes what it holds when it goes. Thread-safe; remembers at
// most max_keys keys (then writes what it holds and starts over).
class rate_limiter {
 public:
  explicit rate_limiter(std::chrono::steady_clock::duration period = std::chrono::minutes(1),
                        std::size_t max_keys = 1024);
  ~rate_limiter();
  rate_limiter(const rate_limiter&) = delete;
  rate_limiter& operator=(const rate_limiter&) = delete;

  // `fields` must not hold `repeated`: it is added. A span for fields that
  // depend on what is known (as log::write takes).
  void write(std::string_view key, level lv, std::string_view msg, std::span<const field> fields,
             std::chrono::steady_clock::time_point now);
  void write(std::string_view key, level lv, std::string_view msg, std::span<const field> fields) {
    write(key, lv, msg, fields, std::chrono::steady_clock::now());
  }
  void write(std::string_view key, level lv, std::string_view msg, std::initializer_list<field> fields,
             std::chrono::steady_clock::time_point now) {
    write(key, lv, msg, std::span<const field>(fields.begin(), fields.size()), now);
  }
  void write(std::string_view key, level lv, std::string_view msg, std::initializer_list<field> fields) {
    write(key, lv, msg, fields, std::chrono::steady_clock::now());
  }
  // Writes the held lines of the keys quiet for a period.
  void flush(std::chrono::steady_clock::time_point now);
  void flush() { flush(std::chrono::steady_clock::now()); }
  // flush() on every live limiter of the process (the flusher thread's call).
  static void flush_all();
  // Every held line of every live limiter, whatever the period.
  static void drain_all();

 private:
  // A line held back, its values owned.
  struct held_line {
    level lv = level::info;
    std::string msg;
    std::vector<std::pair<std::string, std::variant<std::string, std::int64_t, double, bool>>> fields;
    std::string seen_at;  // when it was held back, as `ts` reads
  };
  struct entry {
    std::chrono::steady_clock::time_point last;  // when the key last wrote a line
    std::uint64_t held = 0;                      // lines held back since then
    held_line line;                              // the latest of them
  };
  using held_lines = std::vector<std::pair<held_line, std::uint64_t>>;
  // Takes the lines due (or all) with their `repeated`; mutex_ held.
  held_lines take_held(std::chrono::steady_clock::time_point now, bool all);
  static void write_held(const held_lines& lines);
  static void flush_registry(bool all);

  std::chrono::steady_clock::duration period_;
  std::size_t max_keys_;
  std::mutex mutex_;
  std::unordered_map<std::string, entry> seen_;
};

// For a state that must be said at error once it has lasted `deadline`
// (no partitions, no Kafka), then every `every` while it lasts: start() when
// it begins, due() on each turn. Not thread-safe.
class overdue {
 public:
  using clock = std::chrono::steady_clock;
  explicit overdue(clock::duration deadline, clock::duration every = std::chrono::minutes(10))
      : deadline_(deadline), every_(every) {}
  void start(clock::time_point t) {
    since_ = t;
    next_ = t + deadline_;
  }
  // How long the state has lasted, when a line is due at `t`.
  [[nodiscard]] std::optional<std::chrono::seconds> due(clock::time_point t) {
    if (t < next_) return std::nullopt;
    next_ = t + every_;
    return std::chrono::duration_cast<std::chrono::seconds>(t - since_);
  }

 private:
  clock::duration deadline_;
  clock::duration every_;
  clock::time_point since_{};
  clock::time_point next_{};
};

}  // namespace clerk_sync::log
