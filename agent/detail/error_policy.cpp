#include "agent/detail/error_policy.h"

#include "common/error.h"
#include "net/market_client.h"

namespace solver::agent::detail {
namespace {

// The market refused a call about a task because the task is no longer this rig's: its lease
// expired and went to another rig (409), or the task is gone (404).
bool market_says_not_ours(const std::exception& error) {
  const auto* refusal = dynamic_cast<const net::MarketError*>(&error);
  return refusal != nullptr && (refusal->status() == 409 || refusal->status() == 404);
}

}  // namespace

Remedy remedy_for(Stage stage, const std::exception& error, bool stopping) {
  const auto* solver_error = dynamic_cast<const Error*>(&error);
  // Anything that is not a solver::Error escaped every check: a bug.
  const ErrorKind kind = solver_error != nullptr ? solver_error->kind() : ErrorKind::Internal;
  // More shards per step need less memory at once, wherever the task was when it ran out.
  const bool task_stage = stage == Stage::Preparing || stage == Stage::Resuming || stage == Stage::Training;
  if (kind == ErrorKind::OutOfMemory && task_stage) return Remedy::SplitBatch;
  switch (stage) {
    case Stage::Registering:
      // Even a market that refuses us or answers garbage is waited for: an operator may be
      // fixing it, and a worker that exits would need a person to start it again.
      return kind == ErrorKind::Network ? Remedy::Later : Remedy::StopAgent;
    case Stage::Preparing:
      return kind == ErrorKind::Network && stopping ? Remedy::Later : Remedy::FailTask;
    case Stage::Resuming:
      // An unusable journal (say, a half-written first checkpoint) costs the steps, not the task.
      return kind == ErrorKind::Input ? Remedy::RestartBundle : Remedy::FailTask;
    case Stage::Training:
      return Remedy::FailTask;
    case Stage::Heartbeat:
      // Training goes on through a market that is down; the lease interval paces the retries.
      return market_says_not_ours(error) ? Remedy::DropTask : Remedy::Later;
    case Stage::Delivering:
      // A store or market that is down leaves the finished bundle spooled, never lost.
      if (market_says_not_ours(error)) return Remedy::DropTask;
      return kind == ErrorKind::Internal ? Remedy::StopAgent : Remedy::Later;
    case Stage::Verifying:
      switch (kind) {
        case ErrorKind::Network:
        case ErrorKind::Io:
        case ErrorKind::Cuda:
        case ErrorKind::OutOfMemory:
        case ErrorKind::Internal: return Remedy::SkipJob;  // our problem, not the solver's
        default: return Remedy::RejectBundle;
      }
    case Stage::Polling:
      return kind == ErrorKind::Internal ? Remedy::StopAgent : Remedy::Later;
  }
  return Remedy::StopAgent;
}

net::Fault fault_of(const Error& error) {
  switch (error.kind()) {
    case ErrorKind::Input:
    case ErrorKind::Budget: return net::Fault::Task;
    case ErrorKind::Network:
    case ErrorKind::Cuda: return net::Fault::Unknown;
    default: return net::Fault::Worker;  // disk, memory, configuration, this rig's ceilings, a bug
  }
}

}  // namespace solver::agent::detail
