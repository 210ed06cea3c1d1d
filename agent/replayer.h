// The verifier's and the referee's replays, done by train::Trainer: the glue that keeps LibTorch out of proof/.
#pragma once

#include <memory>
#include <string>

#include "agent/training_job.h"
#include "proof/dispute.h"
#include "proof/verify.h"

namespace solver::agent {

// A ReplayerFactory that trains on `device` with train::Trainer, with the shard count it is
// given (the bundle's) on however many devices `device` lists, within the task's replay budget
// (train::replay_budget_seconds): replays past it throw Error(Budget) between steps. A replayed
// step still running past its time limit (a hostile bundle's model can be slow) goes to
// `on_stuck_step`, which must not return: a stuck step cannot be interrupted.
proof::ReplayerFactory trainer_replayer_factory(std::string device,
                                                StuckStepHandler on_stuck_step = end_process_for_stuck_step);

// A StepReplayerFactory (the referee of `solver dispute`) over train::Trainer; a stuck step
// ends the process.
proof::StepReplayerFactory trainer_step_replayer_factory();

}  // namespace solver::agent
