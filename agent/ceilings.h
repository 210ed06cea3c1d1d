// The rig's ceilings: what one task may ask of this rig (the agent config's limits.max_task_*).
// A task beyond them is declined before it trains, with Error(Capacity): the market gives it to
// another rig without counting the attempt against the task. It is never failed halfway.
#pragma once

#include <cstdint>

#include "common/task.h"

namespace solver::agent {

struct TaskCeilings {
  std::int64_t max_steps = 100'000'000;
  double max_wall_seconds = 7 * 24 * 3600.0;        // also the wall budget of a task that sets none
  std::uint64_t max_disk_bytes = 200'000'000'000;  // inputs + bundle; also the largest bundle a verifier fetches
  std::int64_t max_memory_mb = 0;                  // 0: none beyond the memory the rig reports to the market
  double max_step_seconds = 600.0;                 // one step's time limit at most (train::step_time_limit_seconds)
};

// What the task states, checked before anything is fetched: its steps, step budget, memory
// budget and the declared sizes of its remote inputs.
void check_declared_task(const Task& task, const TaskCeilings& ceilings);

// What only the loaded task tells: its exact step count (epochs times the data's batches) and
// the bundle it will write, estimated from the size of one checkpoint of its training state.
void check_loaded_task(const Task& task, std::int64_t total_steps, std::uint64_t state_bytes,
                       const TaskCeilings& ceilings);

}  // namespace solver::agent
