// SIGINT and SIGTERM as a stop request that long work polls: training stops after the current
// step, servers stop serving, waits end at once, and the process exits 0 with nothing lost. A second signal while
// stopping exits at once (status 130), for an operator who really means it.
#pragma once

#include <atomic>

namespace solver::agent {

class StopSignals {
 public:
  StopSignals();   // installs the handlers (one StopSignals at a time)
  ~StopSignals();  // restores the previous ones
  StopSignals(const StopSignals&) = delete;
  StopSignals& operator=(const StopSignals&) = delete;

  bool requested() const { return flag().load(); }
  // For net::RetryPolicy::stop and other waits.
  static const std::atomic<bool>& flag();
};

}  // namespace solver::agent
