// Token buckets by name (a client address, a public key), for answering 429 with Retry-After.
// `limit` must have per_second > 0 and burst >= 1 (MarketServer checks).
// Memory stays bounded however many names a flood invents: a bucket that has refilled is the same
// as no bucket and is dropped, and when `max_tracked` buckets are all in use a new name is refused
// rather than tracked (a client that sent nothing before waits one second).
#pragma once

#include <chrono>
#include <cstddef>
#include <mutex>
#include <optional>
#include <string>
#include <unordered_map>

#include "market/server.h"

namespace solver::market::detail {

class RateLimiter {
 public:
  using Clock = std::chrono::steady_clock;

  explicit RateLimiter(RateLimit limit, std::size_t max_tracked = 100'000);

  // Takes a token from `name`'s bucket: nullopt when there was one, else the whole seconds
  // (at least 1) until there will be. Thread-safe.
  std::optional<int> admit(const std::string& name, Clock::time_point now);

 private:
  struct Bucket {
    double tokens;
    Clock::time_point updated;
  };
  double refilled(const Bucket& bucket, Clock::time_point now) const;

  RateLimit limit_;
  std::size_t max_tracked_;
  std::mutex mutex_;
  std::unordered_map<std::string, Bucket> buckets_;
  Clock::time_point last_pruned_{};
};

}  // namespace solver::market::detail
