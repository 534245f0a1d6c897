#pragma once
// Helpers shared by the libFuzzer targets in tests/fuzz/targets: split one
// input into parts, and fail a property loudly. A failed property aborts, so
// libFuzzer saves the input as a crash file and the replay test (the same
// target built by GCC, run over the corpus and regressions) fails too.

#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string_view>
#include <vector>

namespace clerk_sync::fuzz {

inline std::string_view text(const std::uint8_t* data, std::size_t size) {
  return size == 0 ? std::string_view{} : std::string_view(reinterpret_cast<const char*>(data), size);
}

// Exactly `n` parts, separated by lines holding "--" alone; the last part
// takes the rest (separators included), missing parts are empty. Seeds stay
// readable text and mutations move bytes between the parts.
inline std::vector<std::string_view> split(std::string_view in, std::size_t n) {
  constexpr std::string_view sep = "\n--\n";
  std::vector<std::string_view> parts;
  while (parts.size() + 1 < n) {
    const auto at = in.find(sep);
    if (at == std::string_view::npos) break;
    parts.push_back(in.substr(0, at));
    in.remove_prefix(at + sep.size());
  }
  parts.push_back(in);
  parts.resize(n);
  return parts;
}

[[noreturn]] inline void fail(const char* what, int line) {
  std::fprintf(stderr, "fuzz property failed (line %d): %s\n", line, what);
  std::fflush(stderr);  // lib/log makes stderr fully buffered, and abort() does not flush it
  std::abort();
}

}  // namespace clerk_sync::fuzz

// A property of the code under test; on failure the input is a finding.
#define FUZZ_CHECK(cond) ((cond) ? static_cast<void>(0) : ::clerk_sync::fuzz::fail(#cond, __LINE__))
