// Backoff with "full jitter" (a uniform delay up to the exponential cap): many agents that lost
// the same market at the same moment come back spread out instead of in one thundering herd.
#include "net/retry.h"

#include <algorithm>
#include <cmath>
#include <random>
#include <thread>

#include "common/error.h"
#include "common/log.h"

namespace solver::net {

std::chrono::milliseconds backoff_delay(const RetryPolicy& policy, int retry) {
  const double cap = std::min(static_cast<double>(policy.max_delay.count()),
                              static_cast<double>(policy.initial_delay.count()) * std::pow(policy.multiplier, retry - 1));
  thread_local std::mt19937_64 generator{std::random_device{}()};
  std::uniform_real_distribution<double> uniform(0.0, cap);
  return std::chrono::milliseconds(static_cast<std::int64_t>(uniform(generator)));
}

bool sleep_unless_stopped(std::chrono::milliseconds duration, const std::atomic<bool>* stop) {
  const auto deadline = std::chrono::steady_clock::now() + duration;
  while (std::chrono::steady_clock::now() < deadline) {
    if (stop && stop->load()) return false;
    const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - std::chrono::steady_clock::now());
    std::this_thread::sleep_for(std::clamp(left, std::chrono::milliseconds(0), std::chrono::milliseconds(50)));
  }
  return !(stop && stop->load());
}

void with_retries(const RetryPolicy& policy, std::string_view what, const std::function<void()>& attempt) {
  for (int tries = 1;; ++tries) {
    try {
      attempt();
      return;
    } catch (const Error& error) {
      // Non-retryable errors pass through untouched (callers may catch a subclass); their
      // message already names the operation.
      if (!error.retryable()) throw;
      if (policy.max_attempts > 0 && tries >= policy.max_attempts)
        throw Error(error.kind(), std::string(what) + ": gave up after " + std::to_string(tries) + " attempts: " + error.what(),
                    true);
      const auto delay = backoff_delay(policy, tries);
      // The error names the operation already (callers build it with throw_unless_success or alike).
      log_warn("net", "{} (attempt {}, retrying in {:.1f} s)", error.what(), tries, delay.count() / 1000.0);
      if (!sleep_unless_stopped(delay, policy.stop)) throw;
    }
  }
}

}  // namespace solver::net
