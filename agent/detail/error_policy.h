// What the agent does about an error, decided in one place: the task job, the verification job
// and the loop ask remedy_for() instead of each keeping its own list of error kinds. Folding@home's
// client keeps its retry policy apart from its work units the same way.
#pragma once

#include <exception>

#include "net/market_protocol.h"

namespace solver {
class Error;
}

namespace solver::agent::detail {

// Where the error happened.
enum class Stage {
  Registering,  // telling the market who we are
  Preparing,    // reading the leased task, fetching its inputs, loading model and data
  Resuming,     // reopening the bundle a previous run left
  Training,     // the step loop
  Heartbeat,    // renewing the lease and committing checkpoints while training
  Delivering,   // publishing the bundle and completing the task
  Verifying,    // fetching and judging another solver's bundle
  Polling,      // anything else in a turn of the loop (claiming work)
};

enum class Remedy {
  Later,          // leave the work as it is (spooled, or still training); a later turn tries again
  FailTask,       // tell the market the task failed, and whose fault it was (fault_of); drop its folder
  DropTask,       // the market says the task is not ours any more: drop its folder, tell no one
  RestartBundle,  // the bundle left behind cannot be resumed: train it again from step 0
  SplitBatch,     // a step ran out of memory: train again from step 0 with the batch in more shards
  RejectBundle,   // the bundle being verified is at fault: post a REJECTED verdict
  SkipJob,        // the verifier is at fault: post nothing; the job's lease expires and it goes to another
  StopAgent,      // a bug, or a rig that cannot work: stop every slot once their work is saved
};

// `stopping`: the agent was asked to stop, so an interrupted download is not a failure.
Remedy remedy_for(Stage stage, const std::exception& error, bool stopping);

// Whose fault a failed task is (docs/market-protocol.md, "Failures"). A GPU error may be the
// device's or the model's, and a download that failed for good the host's or our network's:
// unknown, so that neither a broken rig nor a poisoned task can go on forever.
net::Fault fault_of(const Error& error);

}  // namespace solver::agent::detail
