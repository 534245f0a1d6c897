#pragma once
// Internal to lib/event: the one way this project parses JSON from outside.
// RapidJSON's iterative parser (no recursion the input controls) behind a
// handler that refuses nesting deeper than `max_depth`, so that a hostile or
// broken body is an error value, never a stack overflow. The document
// (MemoryPoolAllocator: nothing freed value by value) is also torn down
// without recursion.

#include <rapidjson/document.h>
#include <rapidjson/reader.h>

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <variant>
#include <vector>

#include "event/envelope.hpp"

namespace clerk_sync::event::detail {

// Forwards every SAX event to the document under construction, counting depth.
template <typename Next>
class depth_limited {
 public:
  using Ch = char;
  explicit depth_limited(Next& next) : next_(next) {}

  bool Null() { return next_.Null(); }
  bool Bool(bool b) { return next_.Bool(b); }
  bool Int(int i) { return next_.Int(i); }
  bool Uint(unsigned u) { return next_.Uint(u); }
  bool Int64(std::int64_t i) { return next_.Int64(i); }
  bool Uint64(std::uint64_t u) { return next_.Uint64(u); }
  bool Double(double d) { return next_.Double(d); }
  bool RawNumber(const Ch* s, rapidjson::SizeType n, bool copy) { return next_.RawNumber(s, n, copy); }
  bool String(const Ch* s, rapidjson::SizeType n, bool copy) { return next_.String(s, n, copy); }
  bool Key(const Ch* s, rapidjson::SizeType n, bool copy) { return next_.Key(s, n, copy); }
  bool StartObject() { return enter() && next_.StartObject(); }
  bool EndObject(rapidjson::SizeType n) { --depth_; return next_.EndObject(n); }
  bool StartArray() { return enter() && next_.StartArray(); }
  bool EndArray(rapidjson::SizeType n) { --depth_; return next_.EndArray(n); }

  [[nodiscard]] bool too_deep() const { return too_deep_; }

 private:
  bool enter() {
    if (++depth_ > max_depth) too_deep_ = true;
    return !too_deep_;
  }
  Next& next_;
  std::size_t depth_ = 0;
  bool too_deep_ = false;
};

enum class parse_outcome { ok, not_json, too_deep };

inline bool is_json_digit(char c) { return c >= '0' && c <= '9'; }

// The end of the JSON number token starting at `i`, or `i` when none starts there.
inline std::size_t json_number_end(std::string_view s, std::size_t i) {
  auto digits = [&](std::size_t j) {
    while (j < s.size() && is_json_digit(s[j])) ++j;
    return j;
  };
  std::size_t j = i;
  if (j < s.size() && s[j] == '-') ++j;
  if (j < s.size() && s[j] == '0')
    ++j;
  else if (j < s.size() && s[j] >= '1' && s[j] <= '9')
    j = digits(j);
  else
    return i;
  if (j < s.size() && s[j] == '.') {
    if (j + 1 == s.size() || !is_json_digit(s[j + 1])) return i;
    j = digits(j + 1);
  }
  if (j < s.size() && (s[j] == 'e' || s[j] == 'E')) {
    std::size_t k = j + 1;
    if (k < s.size() && (s[k] == '+' || s[k] == '-')) ++k;
    if (k == s.size() || !is_json_digit(s[k])) return i;
    j = digits(k);
  }
  return j;
}

// RapidJSON refuses the whole document over one number too large for a
// double (1e400, a 400-digit integer), even when numbers are read as text,
// and such a number may stand in a field the end user writes
// (unsafe_metadata): it must not stop that user's events. `body` again, each
// number value outside strings turned into a string of its exact text
// (`as_strings`: what kParseNumbersAsStringsFlag makes of it) or into 0 (for
// a reader of strings only). A number is a whole run of the characters a
// number is made of (so `1e400.5` is no number and stays as it is) in a
// value's place (a run where an object's key belongs stays too): what was
// not JSON stays not JSON, and the body is read once, in linear time.
inline std::string numbers_rewritten(std::string_view body, bool as_strings) {
  const auto number_char = [](char c) {
    return is_json_digit(c) || c == '-' || c == '+' || c == '.' || c == 'e' || c == 'E';
  };
  std::string out;
  out.reserve(body.size() + body.size() / 8);
  std::vector<bool> in_object;  // the open containers, innermost last
  bool key_next = false;        // an object's key belongs here
  std::size_t i = 0;
  while (i < body.size()) {
    const char c = body[i];
    if (c == '"') {
      std::size_t j = i + 1;
      while (j < body.size() && body[j] != '"') j += body[j] == '\\' ? std::size_t{2} : std::size_t{1};
      j = j < body.size() ? j + 1 : body.size();
      out.append(body.substr(i, j - i));
      i = j;
      continue;
    }
    if (c == '-' || is_json_digit(c)) {
      std::size_t run = i;
      while (run < body.size() && number_char(body[run])) ++run;
      if (!key_next && json_number_end(body, i) == run) {
        if (as_strings) {
          out += '"';
          out.append(body.substr(i, run - i));
          out += '"';
        } else {
          out += '0';
        }
      } else {
        out.append(body.substr(i, run - i));
      }
      i = run;
      continue;
    }
    if (c == '{' || c == '[') {
      in_object.push_back(c == '{');
      key_next = c == '{';
    } else if (c == '}' || c == ']') {
      if (!in_object.empty()) in_object.pop_back();
      key_next = false;
    } else if (c == ',') {
      key_next = !in_object.empty() && in_object.back();
    } else if (c == ':') {
      key_next = false;
    }
    out += c;
    ++i;
  }
  return out;
}

// Parses `body` into `doc`, in place in `buffer` (which the document's
// strings then point into). `Flags` adds to kParseIterativeFlag |
// kParseInsituFlag (e.g. numbers as strings). A body with a number too
// large for a double is read again with every number value as its text
// (kParseNumbersAsStringsFlag) or, without that flag, as 0: a caller that
// reads numbers without it must not use the document then. `error` is the
// first parse's when the rewritten body fails too.
template <unsigned Flags>
parse_outcome parse_bounded(rapidjson::Document& doc, std::string_view body, std::string& buffer,
                            rapidjson::ParseResult* error = nullptr) {
  constexpr unsigned flags = Flags | rapidjson::kParseIterativeFlag | rapidjson::kParseInsituFlag;
  rapidjson::ParseResult result;
  bool deep = false;
  auto generate = [&](rapidjson::Document& target) {
    rapidjson::InsituStringStream in(buffer.data());
    rapidjson::Reader reader;
    depth_limited<rapidjson::Document> handler(target);
    result = reader.Parse<flags>(in, handler);
    deep = handler.too_deep();
    return !result.IsError();
  };
  buffer.assign(body);
  doc.Populate(generate);
  if (!deep && result.Code() == rapidjson::kParseErrorNumberTooBig) {
    const rapidjson::ParseResult first = result;
    buffer = numbers_rewritten(body, (Flags & rapidjson::kParseNumbersAsStringsFlag) != 0);
    doc.Populate(generate);
    if (result.IsError() && !deep) result = first;
  }
  if (deep) return parse_outcome::too_deep;
  if (result.IsError()) {
    if (error) *error = result;
    return parse_outcome::not_json;
  }
  return parse_outcome::ok;
}

}  // namespace clerk_sync::event::detail

namespace clerk_sync::event::detail {

// The envelope of a parsed body; shared by read_envelope() and decode().
[[nodiscard]] std::variant<envelope, envelope_error> envelope_of(const rapidjson::Value& doc);

}  // namespace clerk_sync::event::detail
