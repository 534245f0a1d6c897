#pragma once
// clerk-sync-ctl run against a broker of a test's own with a properties
// file (credentials, TLS), and how long it took: the e2e tests of refused
// connections check that it ends in seconds, not at its timeout.

#include <chrono>
#include <string>
#include <vector>

#include "support/process.hpp"
#include "support/support.hpp"

namespace clerk_sync::test {

struct ctl_result {
  int status;
  std::chrono::milliseconds took;
  std::string err;  // stdout and stderr
};

inline ctl_result run_ctl(std::vector<std::string> args, const std::string& brokers, const std::string& properties) {
  args.insert(args.end(), {"--brokers", brokers, "--kafka-properties-file", properties});
  const auto start = std::chrono::steady_clock::now();
  const auto r = run(binary_path("app/ctl/clerk-sync-ctl"), args, {}, std::chrono::seconds(60));
  return {r.status, std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now() - start),
          r.out + r.err};
}

}  // namespace clerk_sync::test
