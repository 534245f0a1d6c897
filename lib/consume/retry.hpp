#pragma once
// The one retry policy for database failures while applying a batch, shared
// by the consumers' loop and ctl replay: retry the same batch with doubling
// backoff (100 ms up to 2 s) until the budget is spent, then give up. The
// budget stays below max.poll.interval.ms so the group does not evict a
// consumer that is still retrying. Header-only; no state.

#include <algorithm>
#include <atomic>
#include <chrono>
#include <thread>

#include "store/database.hpp"

namespace clerk_sync::consume {

struct retry_policy {
  std::chrono::milliseconds budget{30'000};
  std::chrono::milliseconds first_backoff{100};
  std::chrono::milliseconds max_backoff{2'000};
  // When set and true at a failure, the retries go on for at most
  // `after_stop` more: a stop must not wait out the budget (up to 240 s,
  // past systemd's TimeoutStopSec of 60 s), nor give up at once a batch
  // that a moment's retry would write. A batch given up is kept in neither
  // case: it is read again at the next start.
  const std::atomic<bool>* stop = nullptr;
  std::chrono::milliseconds after_stop{10'000};
};

// Calls attempt() until it returns without store::db_error. Before each
// retry, on_failure(attempt_number, error, give_up=false); when the budget
// would be spent (or what a stop leaves of it), on_failure(n, error, true)
// and the error is rethrown.
template <class Attempt, class OnFailure>
auto with_retry(const retry_policy& policy, Attempt&& attempt, OnFailure&& on_failure) {
  auto deadline = std::chrono::steady_clock::now() + policy.budget;
  bool stop_seen = false;
  auto backoff = policy.first_backoff;
  for (int n = 1;; ++n) {
    try {
      return attempt();
    } catch (const store::db_error& e) {
      const auto now = std::chrono::steady_clock::now();
      if (!stop_seen && policy.stop != nullptr && policy.stop->load()) {
        stop_seen = true;
        deadline = std::min(deadline, now + policy.after_stop);
      }
      const bool give_up = now + backoff > deadline;
      on_failure(n, e, give_up);
      if (give_up) throw;
      std::this_thread::sleep_for(backoff);
      backoff = std::min(backoff * 2, policy.max_backoff);
    }
  }
}

}  // namespace clerk_sync::consume
