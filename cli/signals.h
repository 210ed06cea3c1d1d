// SIGINT, SIGTERM and SIGQUIT as a stop request that long work polls: training stops after the
// current step, servers stop serving, waits end at once, and the process exits 0 with nothing
// lost. A second signal while stopping exits at once (status 130), for an operator who really
// means it. SIGHUP stops too (the terminal went away), except in the long-running agent, where
// it asks for a reload of the config (docs/agent.md).
#pragma once

#include <atomic>

namespace solver::cli {

class StopSignals {
 public:
  // Installs the handlers (one StopSignals at a time); with `reload_on_hangup`, SIGHUP sets
  // reload_flag() instead of asking to stop.
  explicit StopSignals(bool reload_on_hangup = false);
  ~StopSignals();  // restores the previous ones
  StopSignals(const StopSignals&) = delete;
  StopSignals& operator=(const StopSignals&) = delete;

  bool requested() const { return flag().load(); }
  // For net::RetryPolicy::stop and other waits.
  static const std::atomic<bool>& flag();
  // Set by SIGHUP when it means reload; whoever reloads clears it.
  static std::atomic<bool>& reload_flag();
};

}  // namespace solver::cli
