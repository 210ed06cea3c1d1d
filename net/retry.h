// Retries with capped exponential backoff and full jitter, for everything that talks to a
// server that may be down, slow or lying for a while. Only retryable errors are retried
// (Error::retryable(): transport failures and transient HTTP statuses); anything else, such as
// a 403 or a malformed reply, is a clear error at once.
#pragma once

#include <atomic>
#include <chrono>
#include <functional>
#include <string_view>

namespace solver::net {

struct RetryPolicy {
  int max_attempts = 6;  // 0 = until it succeeds or `stop` is set
  std::chrono::milliseconds initial_delay{500};
  std::chrono::milliseconds max_delay{30'000};
  double multiplier = 2.0;
  // Set by a signal handler: waiting stops at once and the last error is rethrown.
  const std::atomic<bool>* stop = nullptr;
};

// The delay before retry number `retry` (1-based): uniform in [0, min(max, initial * mult^(retry-1))].
std::chrono::milliseconds backoff_delay(const RetryPolicy& policy, int retry);

// Sleeps up to `duration`, waking early when `stop` is set. Returns false if stopped.
bool sleep_unless_stopped(std::chrono::milliseconds duration, const std::atomic<bool>* stop);

// Calls `attempt` until it returns without throwing, a non-retryable Error is thrown, the
// attempts run out or `policy.stop` is set. A non-retryable error is rethrown as it is; running
// out of attempts throws Error(kind, retryable) "<what>: gave up after N attempts: <last error>".
// Each retry is logged at warn level with the error and the delay.
void with_retries(const RetryPolicy& policy, std::string_view what, const std::function<void()>& attempt);

}  // namespace solver::net
