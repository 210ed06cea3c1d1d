// One verification the market hands this rig: fetch the solver's bundle from wherever it was
// published, check that it is the bundle the solver completed the task with, judge it with
// proof::verify_bundle (replays on this slot's device), and post the verdict, or give the job
// back when this rig's runtime cannot judge the bundle's (no profile covers it).
#pragma once

#include <filesystem>

#include "agent/agent_config.h"
#include "agent/detail/services.h"

namespace solver::agent::detail {

// Claims one verification job and sees it through. Returns false when the market had none.
// What an error means is the error policy's: the bundle's fault is a REJECTED verdict; ours
// (the network, the disk, the GPU, a bug) posts nothing, so the job goes to another verifier.
bool verify_one(const AgentConfig& settings, AgentServices& services, const SlotPlace& place);

}  // namespace solver::agent::detail
