#include "agent/ceilings.h"

#include <fmt/format.h>

#include "common/error.h"

namespace solver::agent {
namespace {

void decline_unless(bool fits, const std::string& why) {
  if (!fits) throw Error(ErrorKind::Capacity, "declined: " + why);
}

std::uint64_t declared_input_bytes(const Task& task) {
  Task copy = task;  // task_files hands out pointers into the task
  std::uint64_t total = 0;
  for (const auto& [file, what] : task_files(copy)) total += file->size.value_or(0);
  return total;
}

}  // namespace

void check_declared_task(const Task& task, const TaskCeilings& ceilings) {
  decline_unless(task.training.steps <= ceilings.max_steps,
                 fmt::format("the task asks for {} steps, this rig's ceiling is {} (limits.max_task_steps)",
                             task.training.steps, ceilings.max_steps));
  decline_unless(task.budget.max_memory_mb == 0 || ceilings.max_memory_mb == 0 ||
                     task.budget.max_memory_mb <= ceilings.max_memory_mb,
                 fmt::format("the task may use {} MB of memory, this rig allows {} MB (limits.max_task_memory_mb)",
                             task.budget.max_memory_mb, ceilings.max_memory_mb));
  const std::uint64_t inputs = declared_input_bytes(task);
  decline_unless(inputs <= ceilings.max_disk_bytes,
                 fmt::format("the task's inputs are {:.1f} GB, this rig allows {:.1f} GB per task (limits.max_task_disk_gb)",
                             inputs / 1e9, ceilings.max_disk_bytes / 1e9));
}

void check_loaded_task(const Task& task, std::int64_t total_steps, std::uint64_t state_bytes,
                       const TaskCeilings& ceilings) {
  decline_unless(total_steps <= ceilings.max_steps,
                 fmt::format("the task trains {} steps, this rig's ceiling is {} (limits.max_task_steps)", total_steps,
                             ceilings.max_steps));
  // A checkpoint every k steps and at the end, plus each step's record (its sample indices).
  const std::int64_t checkpoints = total_steps / task.checkpoint_every + 2;
  const double bundle_bytes = static_cast<double>(checkpoints) * static_cast<double>(state_bytes) +
                              static_cast<double>(total_steps) * static_cast<double>(task.training.batch_size + 4) * 8.0;
  const double disk_bytes = bundle_bytes + static_cast<double>(declared_input_bytes(task));
  decline_unless(disk_bytes <= static_cast<double>(ceilings.max_disk_bytes),
                 fmt::format("the task's inputs and bundle ({} checkpoints of {:.1f} MB) come to about {:.1f} GB, this rig "
                             "allows {:.1f} GB per task (limits.max_task_disk_gb)",
                             checkpoints, state_bytes / 1e6, disk_bytes / 1e9, ceilings.max_disk_bytes / 1e9));
}

}  // namespace solver::agent
