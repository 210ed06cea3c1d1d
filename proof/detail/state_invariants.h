// What a checkpoint's optimizer state can be, checked without replaying anything: bounds that
// follow from the optimizer's update rule, the task's hyperparameters and the step count
// alone (each derived in docs/bundle-format.md, "Invariants of a checkpoint"). A forger who
// rewrites the optimizer state (the hidden channel: the moments steer every later step) must
// keep it inside these bounds at every checkpoint, or be caught before any replay.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "checkpoint/safetensors.h"
#include "common/task.h"

namespace solver::proof::detail {

// Appends to `failures` what `state`, the checkpoint after `step` steps, breaks: its step
// counters; every float finite; Adam's second moment non-negative and, with its first moment,
// within the Cauchy-Schwarz bound; with gradient clipping, each moment (or SGD's momentum)
// within what clipped gradients can build. With `previous` (the checkpoint after
// `previous_step`), the same bounds over the steps between them: the second moment decays no
// faster than beta2 per step, and a parameter moves only when its optimizer state does.
// `state` and `previous` must have the task's layout (names, dtypes, shapes) already.
void check_state_invariants(const Task& task, std::int64_t step, const checkpoint::Checkpoint& state,
                            const checkpoint::Checkpoint* previous, std::int64_t previous_step,
                            std::vector<std::string>& failures);

}  // namespace solver::proof::detail
