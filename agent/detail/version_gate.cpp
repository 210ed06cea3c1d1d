#include "agent/detail/version_gate.h"

#include <fmt/format.h>

#include "common/log.h"
#include "common/version.h"

namespace solver::agent::detail {

VersionGate::VersionGate(net::MarketClient& market, StatusBoard& status, std::chrono::steady_clock::duration recheck)
    : market_(market), status_(status), recheck_(recheck) {}

std::optional<std::string> VersionGate::outdated() {
  const std::lock_guard lock(mutex_);  // one slot asks the market; the others wait for its answer
  const auto now = std::chrono::steady_clock::now();
  if (checked_at_ && now - *checked_at_ < recheck_) return outdated_;
  std::optional<Version> minimum;
  try {
    minimum = market_.min_agent_version();
  } catch (const net::MarketError&) {
    // A market that refuses GET /v1/health (one without it) advertises no minimum; were it to
    // have one, its claims would say so (403 agent_outdated).
  }
  checked_at_ = now;
  const Version mine = Version::parse(solver_version(), "solver_version");
  std::optional<std::string> verdict;
  if (minimum && mine < *minimum)
    verdict = fmt::format("this agent is {}; the market accepts {} or newer: upgrade solver", mine.text(), minimum->text());
  if (verdict == outdated_) return outdated_;
  if (verdict)
    log_error("agent", "{}; claiming nothing until then (work in hand is finished)", *verdict);
  else
    log_info("agent", "the market accepts this agent ({}) again: claiming", mine.text());
  outdated_ = verdict;
  status_.set_outdated(outdated_.value_or(""));
  return outdated_;
}

}  // namespace solver::agent::detail
