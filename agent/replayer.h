// The verifier's and the referee's replays, done by train::Trainer: the glue that keeps LibTorch out of proof/.
#pragma once

#include <memory>
#include <string>

#include "proof/dispute.h"
#include "proof/verify.h"

namespace solver::agent {

// A ReplayerFactory that trains on `device` with train::Trainer, with the shard count it is
// given (the bundle's) on however many devices `device` lists.
proof::ReplayerFactory trainer_replayer_factory(std::string device);

// A StepReplayerFactory (the referee of `solver dispute`) over train::Trainer.
proof::StepReplayerFactory trainer_step_replayer_factory();

}  // namespace solver::agent
