// The verifier's replays, done by train::Trainer: the glue that keeps LibTorch out of proof/.
#pragma once

#include <memory>
#include <string>

#include "proof/verify.h"

namespace solver::agent {

// A ReplayerFactory that trains on `device` with train::Trainer.
proof::ReplayerFactory trainer_replayer_factory(std::string device);

}  // namespace solver::agent
