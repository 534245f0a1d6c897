// Secret parsing: CLERK_WEBHOOK_SECRET's value and a secret file's contents
// from the input (parts: value, file contents). Properties: only the
// documented errors are thrown, and their messages never echo the input;
// every key parsed survives format_secret -> parse_secret, with its '='
// padding or without, and the same keys
// written as a list or as a file parse back to the same keys.

#include <cstdint>
#include <exception>
#include <optional>
#include <string>
#include <string_view>

#include "config/options.hpp"
#include "config/secrets.hpp"
#include "fuzz_input.hpp"
#include "verify/svix.hpp"

namespace v = clerk_sync::verify;

namespace {

// The error message of `parse` on `input`, empty when it throws none.
template <class Parse>
std::string message_of(Parse&& parse, std::string_view input) {
  try {
    (void)parse(input);
  } catch (const std::exception& e) {
    return e.what();
  }
  return {};
}

char rotate(char c) {
  if (c >= 'a' && c <= 'z') return c == 'z' ? 'a' : static_cast<char>(c + 1);
  if (c >= 'A' && c <= 'Z') return c == 'Z' ? 'A' : static_cast<char>(c + 1);
  if (c >= '0' && c <= '9') return c == '9' ? '0' : static_cast<char>(c + 1);
  return c;
}

// No word of the input is echoed by an error message. A long word found in
// the message is changed (letters and digits rotated) and the input parsed
// again: text of the message's own wording stays, an echo would change.
template <class Parse>
void check_not_echoed(Parse&& parse, std::string_view input) {
  const std::string message = message_of(parse, input);
  std::size_t i = 0;
  while (i < input.size()) {
    const auto end = input.find_first_of(" ,\t\r\n", i);
    const auto len = end == std::string_view::npos ? input.size() - i : end - i;
    const auto word = input.substr(i, len);
    if (word.size() >= 12 && message.find(word) != std::string::npos) {
      std::string changed(input);
      for (std::size_t k = i; k < i + len; ++k) changed[k] = rotate(changed[k]);
      const std::string other = message_of(parse, changed);
      if (!other.empty()) FUZZ_CHECK(other.find(word) != std::string::npos);
    }
    i += len + 1;
  }
}

std::string as_list(const std::vector<v::key>& keys) {
  std::string out;
  for (const auto& k : keys) out += (out.empty() ? "" : ", ") + v::format_secret(k);
  return out;
}

std::string as_file(const std::vector<v::key>& keys) {
  std::string out = "# rotated secrets\n\n";
  for (const auto& k : keys) out += v::format_secret(k) + "\n";
  return out;
}

void check_keys(const std::vector<v::key>& keys) {
  FUZZ_CHECK(!keys.empty());
  for (const auto& k : keys) {
    FUZZ_CHECK(!k.empty());
    FUZZ_CHECK(v::parse_secret(v::format_secret(k)) == k);
    std::string unpadded = v::format_secret(k);
    while (unpadded.back() == '=') unpadded.pop_back();
    FUZZ_CHECK(v::parse_secret(unpadded) == k);
  }
  FUZZ_CHECK(v::parse_secret_list(as_list(keys)) == keys);
  FUZZ_CHECK(v::parse_secret_file(as_file(keys)) == keys);
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const auto p = clerk_sync::fuzz::split(clerk_sync::fuzz::text(data, size), 2);
  const auto list = [](std::string_view t) { return v::parse_secret_list(t); };
  const auto file = [](std::string_view t) { return v::parse_secret_file(t); };
  const auto one = [](std::string_view t) { return std::vector<v::key>{v::parse_secret(t)}; };
  // The configuration's entry point, as the receiver and ctl call it (the
  // variable set, no file).
  const auto config = [](std::string_view t) { return clerk_sync::config::load_secrets(std::string(t), ""); };

  try {
    check_keys(list(p[0]));
  } catch (const v::secret_error&) {
    check_not_echoed(list, p[0]);
  }
  try {
    check_keys(file(p[1]));
  } catch (const v::secret_error&) {
    check_not_echoed(file, p[1]);
  }
  try {
    check_keys(one(p[0]));
  } catch (const v::secret_error&) {
    check_not_echoed(one, p[0]);
  }
  try {
    const auto keys = config(p[0]);
    FUZZ_CHECK(keys == list(p[0]));
  } catch (const clerk_sync::config::usage_error&) {
    check_not_echoed(config, p[0]);
  }
  return 0;
}
