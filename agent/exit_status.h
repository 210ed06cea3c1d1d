// The process exit statuses of every `solver` command (docs/cli.md), and the one mapping from
// an error's kind to its status. Here rather than in cli/ because the agent library ends the
// process itself when a step is stuck (training_job.h).
#pragma once

#include "common/error.h"

namespace solver::agent {

inline constexpr int kExitOk = 0;
inline constexpr int kExitRejected = 1;     // verify: the bundle was checked and rejected
inline constexpr int kExitNotCovered = 3;   // verify: the bundle's runtime is not one this verifier can judge
inline constexpr int kExitNotRunning = 3;   // status: no agent works in that work dir (as an LSB init script says)
inline constexpr int kExitBadInput = 2;     // a task, bundle, checkpoint or data file was bad; a budget was exceeded
inline constexpr int kExitUsage = 64;       // the command line was wrong
inline constexpr int kExitGpu = 69;         // the requested GPU is unavailable
inline constexpr int kExitInternal = 70;    // a bug in solver
inline constexpr int kExitTemporary = 75;   // a server was unreachable or erred: try again later
inline constexpr int kExitConfig = 78;      // configuration (e.g. the key file) is wrong

// The status a command exits with for an error it could not handle.
int exit_status_for(const Error& error);

}  // namespace solver::agent
