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
#include <variant>

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

// Parses the NUL-terminated `text` in place into `doc`. `Flags` adds to
// kParseIterativeFlag | kParseInsituFlag (e.g. numbers as strings).
template <unsigned Flags>
parse_outcome parse_bounded(rapidjson::Document& doc, char* text, rapidjson::ParseResult* error = nullptr) {
  constexpr unsigned flags = Flags | rapidjson::kParseIterativeFlag | rapidjson::kParseInsituFlag;
  rapidjson::ParseResult result;
  bool deep = false;
  auto generate = [&](rapidjson::Document& target) {
    rapidjson::InsituStringStream in(text);
    rapidjson::Reader reader;
    depth_limited<rapidjson::Document> handler(target);
    result = reader.Parse<flags>(in, handler);
    deep = handler.too_deep();
    return !result.IsError();
  };
  doc.Populate(generate);
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
