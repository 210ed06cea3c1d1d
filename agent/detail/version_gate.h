// Whether the market still accepts this agent's version: the market advertises the lowest agent
// version it lets claim (min_agent_version in GET /v1/health, docs/market-protocol.md). An older
// agent claims nothing, neither tasks nor verifications, rather than have each claim refused;
// it still finishes and publishes what it holds. Asked before each claim, it reads the health
// reply again once `recheck` has passed, so a market that lowers its minimum, or an upgrade,
// is noticed without a restart.
#pragma once

#include <chrono>
#include <mutex>
#include <optional>
#include <string>

#include "agent/detail/status_board.h"
#include "net/market_client.h"

namespace solver::agent::detail {

class VersionGate {
 public:
  static constexpr std::chrono::seconds kRecheck{60};

  VersionGate(net::MarketClient& market, StatusBoard& status, std::chrono::steady_clock::duration recheck = kRecheck);

  // nullopt while this agent may claim; else why not ("this agent is 0.1.0; the market accepts
  // 0.2.0 or newer: upgrade solver"), logged once when it starts being so and shown in
  // status.json, `solver status`, STATUS= and solver_agent_outdated. A market that refuses the
  // health request (4xx) advertises no minimum. Throws the market client's Error(Network) when the
  // market cannot be reached or names a malformed version; it is asked again at the next call.
  std::optional<std::string> outdated();

 private:
  net::MarketClient& market_;
  StatusBoard& status_;
  const std::chrono::steady_clock::duration recheck_;
  std::mutex mutex_;
  std::optional<std::chrono::steady_clock::time_point> checked_at_;  // guarded by mutex_
  std::optional<std::string> outdated_;                              // guarded by mutex_
};

}  // namespace solver::agent::detail
