#include "log/log.hpp"

#include <algorithm>
#include <array>
#include <charconv>
#include <cmath>

#include <fmt/format.h>
#include <spdlog/sinks/base_sink.h>
#include <spdlog/spdlog.h>

#include <pthread.h>
#include <signal.h>
#include <sys/stat.h>
#include <systemd/sd-daemon.h>

#include <atomic>
#include <condition_variable>
#include <mutex>
#include <stop_token>
#include <thread>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>

namespace clerk_sync::log {
namespace {

std::atomic<format> g_format{format::logfmt};
std::atomic<level> g_threshold{level::info};

// A line is rendered on the stack: a typical one (200-350 bytes) never
// touches the heap.
using line_buffer = fmt::basic_memory_buffer<char, 512>;

void put(line_buffer& out, std::string_view s) { out.append(s.data(), s.data() + s.size()); }
void put(line_buffer& out, char c) { out.push_back(c); }

// Per byte: whether both formats copy it as it is (printable ASCII but the
// quote and the backslash), and whether a logfmt value may hold it bare
// (those, but the space and '=').
constexpr unsigned char copied = 1, bare = 2;
constexpr std::array<unsigned char, 256> byte_class = [] {
  std::array<unsigned char, 256> t{};
  for (int c = 0x20; c < 0x7f; ++c) {
    if (c == '"' || c == '\\') continue;
    t[static_cast<std::size_t>(c)] = c == ' ' || c == '=' ? copied : copied | bare;
  }
  return t;
}();
bool is(unsigned char cls, char c) { return (byte_class[static_cast<unsigned char>(c)] & cls) != 0; }

std::string_view level_name(level lv) {
  switch (lv) {
    case level::debug: return "debug";
    case level::info: return "info";
    case level::warn: return "warn";
    case level::error: return "error";
  }
  return "info";
}

// Length of the valid UTF-8 sequence at the start of `v`, 0 if it is not
// one (overlong forms, surrogates and code points past U+10FFFF included).
std::size_t utf8_length(std::string_view v) {
  const auto b = [&](std::size_t i) { return static_cast<unsigned char>(v[i]); };
  const auto cont = [&](std::size_t i) { return i < v.size() && (b(i) & 0xc0) == 0x80; };
  const unsigned char c = b(0);
  if (c < 0x80) return 1;
  if (c >= 0xc2 && c <= 0xdf) return cont(1) ? 2 : 0;
  if (c >= 0xe0 && c <= 0xef) {
    if (!cont(1) || !cont(2)) return 0;
    if (c == 0xe0 && b(1) < 0xa0) return 0;   // overlong
    if (c == 0xed && b(1) >= 0xa0) return 0;  // surrogate
    return 3;
  }
  if (c >= 0xf0 && c <= 0xf4) {
    if (!cont(1) || !cont(2) || !cont(3)) return 0;
    if (c == 0xf0 && b(1) < 0x90) return 0;   // overlong
    if (c == 0xf4 && b(1) >= 0x90) return 0;  // past U+10FFFF
    return 4;
  }
  return 0;
}

void append_hex_escape(line_buffer& out, unsigned char c, bool json) {
  constexpr std::string_view digits = "0123456789abcdef";
  // JSON has no \x escape: there the backslash itself is escaped, so the
  // decoded string reads \xNN just as the logfmt line does.
  put(out, json ? "\\\\x" : "\\x");
  put(out, digits[static_cast<std::size_t>(c >> 4)]);
  put(out, digits[static_cast<std::size_t>(c & 0x0f)]);
}

// A valid UTF-8 sequence that a terminal or a log viewer acts on rather
// than shows: a C1 control (U+0080-U+009F; U+009B is a CSI, as ESC [ is),
// a bidi control that reorders what follows on the line (U+061C among
// them), or the line and paragraph separators U+2028 and U+2029, at which
// JavaScript-based viewers and some editors start a new line, so that a
// value could show as a line of its own. Its code point, else 0.
std::uint32_t acted_on(std::string_view seq) {
  std::uint32_t cp = 0;
  if (seq.size() == 2)
    cp = (static_cast<std::uint32_t>(static_cast<unsigned char>(seq[0]) & 0x1f) << 6) |
         (static_cast<unsigned char>(seq[1]) & 0x3f);
  else if (seq.size() == 3)
    cp = (static_cast<std::uint32_t>(static_cast<unsigned char>(seq[0]) & 0x0f) << 12) |
         (static_cast<std::uint32_t>(static_cast<unsigned char>(seq[1]) & 0x3f) << 6) |
         (static_cast<unsigned char>(seq[2]) & 0x3f);
  const bool c1 = cp >= 0x80 && cp <= 0x9f;
  const bool bidi = cp == 0x061c || cp == 0x200e || cp == 0x200f || (cp >= 0x202a && cp <= 0x202e) ||
                    (cp >= 0x2066 && cp <= 0x2069);
  const bool breaks_line = cp == 0x2028 || cp == 0x2029;
  return c1 || bidi || breaks_line ? cp : 0;
}

// Escapes `v` into `out` for either format (the quotes are the caller's).
void append_escaped(line_buffer& out, std::string_view v, bool json) {
  for (std::size_t i = 0; i < v.size();) {
    // Most values are plain ASCII: copy each run of such bytes at once.
    std::size_t run = i;
    while (run < v.size() && is(copied, v[run])) ++run;
    put(out, v.substr(i, run - i));
    i = run;
    if (i == v.size()) break;
    const auto c = static_cast<unsigned char>(v[i]);
    if (c >= 0x80) {
      if (const auto n = utf8_length(v.substr(i))) {
        if (const auto cp = acted_on(v.substr(i, n))) {
          char buf[8];
          std::snprintf(buf, sizeof buf, "\\u%04x", static_cast<unsigned>(cp));
          put(out, buf);
        } else {
          put(out, v.substr(i, n));
        }
        i += n;
      } else {
        append_hex_escape(out, c, json);
        ++i;
      }
      continue;
    }
    switch (c) {
      case '"': put(out, "\\\""); break;
      case '\\': put(out, "\\\\"); break;
      case '\n': put(out, "\\n"); break;
      case '\r': put(out, json ? "\\r" : "\\x0d"); break;
      case '\t': put(out, json ? "\\t" : "\\x09"); break;
      default:  // a control byte: the others were copied above
        if (json) {
          char buf[8];
          std::snprintf(buf, sizeof buf, "\\u%04x", c);
          put(out, buf);
        } else {
          append_hex_escape(out, c, false);
        }
    }
    ++i;
  }
}

// logfmt: bare when the value has no space, quote, '=', backslash, control
// byte or byte outside ASCII.
void append_logfmt_string(line_buffer& out, std::string_view v) {
  if (!v.empty() && std::all_of(v.begin(), v.end(), [](char c) { return is(bare, c); })) {
    put(out, v);
    return;
  }
  put(out, '"');
  append_escaped(out, v, false);
  put(out, '"');
}

void append_json_string(line_buffer& out, std::string_view v) {
  put(out, '"');
  append_escaped(out, v, true);
  put(out, '"');
}

bool request_derived(std::string_view key) { return key == "svix_id" || key == "type" || key == "user"; }

void append_value(line_buffer& out, format f, const field::value_type& v) {
  if (const auto* s = std::get_if<std::string_view>(&v)) {
    f == format::json ? append_json_string(out, *s) : append_logfmt_string(out, *s);
  } else if (const auto* i = std::get_if<std::int64_t>(&v)) {
    char buf[24];
    const auto r = std::to_chars(buf, buf + sizeof buf, *i);
    out.append(buf, r.ptr);
  } else if (const auto* d = std::get_if<double>(&v)) {
    // A number in both formats: NaN and infinity have none (null), and a
    // huge value keeps all its digits (%.3f of 1e300 needs over 300 bytes).
    // to_chars with a precision writes what printf's %.3f and %.17g would,
    // in a quarter of the instructions.
    if (!std::isfinite(*d)) {
      put(out, "null");
    } else {
      char buf[400];
      const auto r = std::fabs(*d) < 1e15 ? std::to_chars(buf, buf + sizeof buf, *d, std::chars_format::fixed, 3)
                                          : std::to_chars(buf, buf + sizeof buf, *d, std::chars_format::general, 17);
      out.append(buf, r.ptr);
    }
  } else {
    put(out, std::get<bool>(v) ? "true" : "false");
  }
}

void append_field(line_buffer& out, format f, bool first, std::string_view key, const field::value_type& v) {
  if (f == format::json) {
    if (!first) put(out, ',');
    append_json_string(out, key);
    put(out, ':');
  } else {
    if (!first) put(out, ' ');
    put(out, key);
    put(out, '=');
  }
  if (const auto* sv = std::get_if<std::string_view>(&v)) {
    const std::size_t limit = request_derived(key) ? request_field_limit : field_limit;
    if (sv->size() > limit) {
      append_value(out, f, std::string_view(cut(*sv, limit)));
      return;
    }
  }
  append_value(out, f, v);
}

void append_line(line_buffer& out, format f, level lv, std::string_view ts, std::string_view msg,
                 std::span<const field> fields) {
  if (f == format::json) put(out, '{');
  append_field(out, f, true, "ts", ts);
  append_field(out, f, false, "level", level_name(lv));
  append_field(out, f, false, "msg", msg);
  for (const auto& fl : fields) append_field(out, f, false, fl.key, fl.value);
  if (f == format::json) put(out, '}');
}

// Room for 2026-01-02T03:04:05.678Z and for any year snprintf can write.
using timestamp_buffer = std::array<char, 96>;

// `t` as `ts` reads, UTC with milliseconds, written into `out`.
std::string_view timestamp(std::chrono::system_clock::time_point t, timestamp_buffer& out) {
  using namespace std::chrono;
  const auto ms_total = duration_cast<milliseconds>(t.time_since_epoch()).count();
  const std::time_t s = static_cast<std::time_t>(ms_total / 1000);
  // The date and time change once a second; lines come by the thousand.
  thread_local std::time_t cached_second = -1;
  thread_local char prefix[80];
  if (s != cached_second) {
    std::tm tm{};
    gmtime_r(&s, &tm);
    std::snprintf(prefix, sizeof prefix, "%04d-%02d-%02dT%02d:%02d:%02d", tm.tm_year + 1900, tm.tm_mon + 1,
                  tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec);
    cached_second = s;
  }
  const std::size_t n = std::strlen(prefix);
  std::memcpy(out.data(), prefix, n);
  const auto ms = static_cast<int>(ms_total % 1000);
  out[n] = '.';
  out[n + 1] = static_cast<char>('0' + ms / 100);
  out[n + 2] = static_cast<char>('0' + ms / 10 % 10);
  out[n + 3] = static_cast<char>('0' + ms % 10);
  out[n + 4] = 'Z';
  return {out.data(), n + 5};
}

std::string now_utc() {
  timestamp_buffer buf;
  return std::string(timestamp(std::chrono::system_clock::now(), buf));
}

spdlog::level::level_enum to_spdlog(level lv) {
  switch (lv) {
    case level::debug: return spdlog::level::debug;
    case level::info: return spdlog::level::info;
    case level::warn: return spdlog::level::warn;
    case level::error: return spdlog::level::err;
  }
  return spdlog::level::info;
}

// stderr through stdio's buffer. spdlog's own stderr sink fflush()es after
// every line, which made the buffering set up in init() a write() per line
// anyway (seen with strace: one write per webhook). The payload is the whole
// line, its newline included, rendered by write(): it goes out as it is, in
// one fwrite (atomic under stdio's lock, so that no other writer to stderr
// lands between a line and its newline), with no pattern formatter's copy in
// between; a pattern or formatter set on this logger would change nothing.
class buffered_stderr_sink final : public spdlog::sinks::base_sink<std::mutex> {
 protected:
  void sink_it_(const spdlog::details::log_msg& m) override {
    std::fwrite(m.payload.data(), 1, m.payload.size(), stderr);
  }
  void flush_() override { std::fflush(stderr); }
};

spdlog::logger& sink() {
  // A stderr sink that writes each line as it is: we render it ourselves.
  static const std::shared_ptr<spdlog::logger> logger = [] {
    auto l = std::make_shared<spdlog::logger>("clerk-sync", std::make_shared<buffered_stderr_sink>());
    l->set_level(spdlog::level::trace);
    // Warnings and errors reach the journal at once; routine lines are
    // flushed in blocks (see init), which halves the cost of a line.
    l->flush_on(spdlog::level::warn);
    return l;
  }();
  return *logger;
}

}  // namespace

std::string cut(std::string_view v, std::size_t limit) {
  if (v.size() <= limit) return std::string(v);
  std::size_t keep = limit;
  // Back off to the start of a UTF-8 sequence (at most three bytes).
  for (int i = 0; i < 3 && keep > 0 && (static_cast<unsigned char>(v[keep]) & 0xc0) == 0x80; ++i) --keep;
  std::string out(v.substr(0, keep));
  out += "...[cut ";
  out += std::to_string(v.size() - keep);
  out += " bytes]";
  return out;
}

std::string escape(format f, std::string_view v) {
  line_buffer out;
  f == format::json ? append_json_string(out, v) : append_logfmt_string(out, v);
  return fmt::to_string(out);
}

namespace {

// Every live limiter, for the flusher thread.
struct limiter_registry {
  std::mutex mutex;
  std::vector<rate_limiter*> live;
};

limiter_registry& registry() {
  static limiter_registry r;
  return r;
}

}  // namespace

rate_limiter::rate_limiter(std::chrono::steady_clock::duration period, std::size_t max_keys)
    : period_(period), max_keys_(max_keys) {
  // The sink first, so that it outlives a static limiter that writes what it
  // holds at exit (init() builds it too, but a test may never call init()).
  (void)sink();
  auto& r = registry();
  const std::lock_guard lock(r.mutex);
  r.live.push_back(this);
}

rate_limiter::~rate_limiter() {
  {
    // Waits for a flush of this limiter under way on the flusher thread.
    auto& r = registry();
    const std::lock_guard lock(r.mutex);
    std::erase(r.live, this);
  }
  held_lines out;
  {
    const std::lock_guard lock(mutex_);
    out = take_held({}, true);
  }
  write_held(out);
}

void rate_limiter::write(std::string_view key, level lv, std::string_view msg, std::span<const field> fields,
                         std::chrono::steady_clock::time_point now) {
  std::uint64_t repeated = 0;
  held_lines out;
  {
    const std::lock_guard lock(mutex_);
    auto it = seen_.find(std::string(key));
    if (it == seen_.end()) {
      if (seen_.size() >= max_keys_) {
        out = take_held(now, true);
        seen_.clear();
      }
      seen_.emplace(std::string(key), entry{now, 0, {}});
    } else if (now - it->second.last < period_) {
      auto& e = it->second;
      ++e.held;
      // The latest line, at the most severe level held since the last write.
      e.line.lv = e.held == 1 ? lv : std::max(e.line.lv, lv);
      e.line.msg.assign(msg);
      e.line.fields.clear();
      for (const auto& f : fields)
        std::visit(
            [&](const auto& v) {
              if constexpr (std::is_same_v<std::decay_t<decltype(v)>, std::string_view>)
                e.line.fields.emplace_back(std::string(f.key), std::string(v));
              else
                e.line.fields.emplace_back(std::string(f.key), v);
            },
            f.value);
      e.line.seen_at = now_utc();
      return;
    } else {
      repeated = it->second.held;
      it->second = entry{now, 0, {}};
    }
  }
  write_held(out);
  std::vector<field> all(fields.begin(), fields.end());
  all.emplace_back("repeated", repeated);
  log::write(lv, msg, all);
}

void rate_limiter::flush(std::chrono::steady_clock::time_point now) {
  held_lines out;
  {
    const std::lock_guard lock(mutex_);
    out = take_held(now, false);
  }
  write_held(out);
}

void rate_limiter::flush_all() { flush_registry(false); }

void rate_limiter::drain_all() { flush_registry(true); }

void rate_limiter::flush_registry(bool all) {
  held_lines out;
  {
    auto& r = registry();
    const std::lock_guard lock(r.mutex);
    const auto now = std::chrono::steady_clock::now();
    for (auto* l : r.live) {
      const std::lock_guard held(l->mutex_);
      for (auto& line : l->take_held(now, all)) out.push_back(std::move(line));
    }
  }
  // Written after the registry is released: a blocked stderr must not block
  // every limiter's construction and destruction.
  write_held(out);
}

rate_limiter::held_lines rate_limiter::take_held(std::chrono::steady_clock::time_point now, bool all) {
  held_lines out;
  for (auto& [key, e] : seen_) {
    if (e.held == 0 || (!all && now - e.last < period_)) continue;
    // The line written is one of those held: `repeated` counts the others.
    out.emplace_back(std::move(e.line), e.held - 1);
    e = entry{now, 0, {}};
  }
  return out;
}

void rate_limiter::write_held(const held_lines& lines) {
  for (const auto& [line, repeated] : lines) {
    std::vector<field> fields;
    fields.reserve(line.fields.size() + 2);
    for (const auto& f : line.fields)
      std::visit([&](const auto& v) { fields.emplace_back(f.first, v); }, f.second);
    fields.emplace_back("repeated", repeated);
    fields.emplace_back("seen_at", line.seen_at);
    log::write(line.lv, line.msg, fields);
  }
}

std::optional<format> parse_format(std::string_view name) {
  if (name == "logfmt") return format::logfmt;
  if (name == "json") return format::json;
  return std::nullopt;
}

std::optional<level> parse_level(std::string_view name) {
  if (name == "debug") return level::debug;
  if (name == "info") return level::info;
  if (name == "warn") return level::warn;
  if (name == "error") return level::error;
  return std::nullopt;
}

bool enabled(level lv) { return lv >= g_threshold.load(std::memory_order_relaxed); }

void init(format f, level threshold) {
  g_format = f;
  g_threshold = threshold;
  // One write() per line costs as much as the work it reports at thousands
  // of events a second. Buffer stderr and flush every 100 ms, on warn/error,
  // and at exit; a SIGKILL can lose at most the last 100 ms of info lines.
  static char buffer[1 << 16];
  std::setvbuf(stderr, buffer, _IOFBF, sizeof buffer);
  (void)sink();
  // Built before the flusher thread, so destroyed after it at exit.
  (void)registry();
  // spdlog 1.10's flush_every() counts whole seconds: too slow for a tail -f.
  static std::jthread flusher([](std::stop_token stop) {
    // Never the thread a process-directed signal lands on: the programs
    // take SIGTERM on a thread of their choosing (sigtimedwait, signal_set).
    sigset_t all;
    sigfillset(&all);
    pthread_sigmask(SIG_BLOCK, &all, nullptr);
    std::mutex m;
    std::condition_variable_any cv;
    std::unique_lock lock(m);
    while (!stop.stop_requested()) {
      cv.wait_for(lock, stop, std::chrono::milliseconds(100), [] { return false; });
      rate_limiter::flush_all();
      sink().flush();
    }
  });
}

std::string format_line(format f, level lv, std::string_view ts, std::string_view msg,
                        std::span<const field> fields) {
  line_buffer out;
  append_line(out, f, lv, ts, msg, fields);
  return fmt::to_string(out);
}

bool is_journal_stream(int fd, const char* journal_stream) {
  if (journal_stream == nullptr) return false;
  unsigned long long dev = 0, ino = 0;
  char end = 0;
  if (std::sscanf(journal_stream, "%llu:%llu%c", &dev, &ino, &end) != 2) return false;
  struct stat st {};
  return ::fstat(fd, &st) == 0 && st.st_dev == dev && st.st_ino == ino;
}

namespace {

// The syslog priority a line starts with when stderr is the journal.
std::string_view priority_prefix(level lv) {
  static const bool journal = is_journal_stream(2, std::getenv("JOURNAL_STREAM"));
  if (!journal) return {};
  switch (lv) {
    case level::debug: return SD_DEBUG;
    case level::info: return SD_INFO;
    case level::warn: return SD_WARNING;
    case level::error: return SD_ERR;
  }
  return {};
}

}  // namespace

void write(level lv, std::string_view msg, std::span<const field> fields) {
  if (lv < g_threshold.load(std::memory_order_relaxed)) return;
  // One clock read: the line's `ts` is the time spdlog is given.
  const auto now = std::chrono::system_clock::now();
  timestamp_buffer ts;
  line_buffer line;
  put(line, priority_prefix(lv));
  append_line(line, g_format.load(std::memory_order_relaxed), lv, timestamp(now, ts), msg, fields);
  put(line, '\n');
  sink().log(now, spdlog::source_loc{}, to_spdlog(lv), spdlog::string_view_t(line.data(), line.size()));
}

}  // namespace clerk_sync::log
