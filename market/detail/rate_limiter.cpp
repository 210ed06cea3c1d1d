#include "market/detail/rate_limiter.h"

#include <algorithm>
#include <cmath>

namespace solver::market::detail {

RateLimiter::RateLimiter(RateLimit limit, std::size_t max_tracked) : limit_(limit), max_tracked_(max_tracked) {}

double RateLimiter::refilled(const Bucket& bucket, Clock::time_point now) const {
  const double seconds = std::chrono::duration<double>(now - bucket.updated).count();
  return std::min(limit_.burst, bucket.tokens + seconds * limit_.per_second);
}

std::optional<int> RateLimiter::admit(const std::string& name, Clock::time_point now) {
  std::lock_guard lock(mutex_);
  auto found = buckets_.find(name);
  if (found == buckets_.end()) {
    // Pruning walks every bucket, so a flood of new names gets it at most once a second.
    if (buckets_.size() >= max_tracked_ && now - last_pruned_ >= std::chrono::seconds(1)) {
      std::erase_if(buckets_, [&](const auto& entry) { return refilled(entry.second, now) >= limit_.burst; });
      last_pruned_ = now;
    }
    if (buckets_.size() >= max_tracked_) return 1;
    found = buckets_.emplace(name, Bucket{limit_.burst, now}).first;
  }
  Bucket& bucket = found->second;
  bucket.tokens = refilled(bucket, now);
  bucket.updated = now;
  if (bucket.tokens >= 1) {
    bucket.tokens -= 1;
    return std::nullopt;
  }
  return std::max(1, static_cast<int>(std::ceil((1 - bucket.tokens) / limit_.per_second)));
}

}  // namespace solver::market::detail
