// The replays of the verifier, the profiler and the referee, done by train::Trainer: the glue
// that keeps LibTorch out of proof/.
#pragma once

#include "agent/training_job.h"
#include "proof/replayer.h"

namespace solver::agent {

// The ReplayerFactory of every replay (`solver verify`, `profile` and `dispute`, the agent's
// verification jobs): a train::Trainer with the setting's device, threads and shard count (on
// however many devices the setting's device lists), within the task's replay budget
// (train::replay_budget_seconds): replays past it throw Error(Budget) between steps. A replayed
// step still running past its time limit (a hostile bundle's model can be slow) goes to
// `on_stuck_step`, which must not return: a stuck step cannot be interrupted.
proof::ReplayerFactory trainer_replayer_factory(StuckStepHandler on_stuck_step = end_process_for_stuck_step);

}  // namespace solver::agent
