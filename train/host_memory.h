// The host memory LibTorch's CPU tensors hold, and a limit on it. LibTorch has no memory limit
// for the CPU as it has for a GPU (its memory is the device's), so a rig that lends its CPU, or
// a host shared with its owner, sets one here: limits.max_host_memory_gb in the agent's config.
// An allocator of ours replaces LibTorch's default CPU allocator the first time any function here
// is called; it counts every CPU tensor's bytes (not other host memory: the process's code,
// threads, the datasets' files) and refuses an allocation that would take the count past the
// limit with LibTorch's own out-of-memory error, which a step reports as Error(OutOfMemory), as
// it does when a GPU runs out. The agent answers that by splitting the batch (agent/detail/task_job.h).
#pragma once

#include <cstdint>

namespace solver::train {

struct HostTensorMemory {
  std::uint64_t held_bytes = 0;   // by CPU tensors now
  std::uint64_t peak_bytes = 0;   // the most held at once since the last reset_host_tensor_peak()
  std::uint64_t limit_bytes = 0;  // 0: none
};

// The most all CPU tensors of this process may hold at once; 0 lifts the limit. Tensors already
// held stay; allocations from now on are refused past it.
void limit_host_tensor_memory(std::uint64_t bytes);
HostTensorMemory host_tensor_memory();
// Starts a new peak at what is held now.
void reset_host_tensor_peak();

}  // namespace solver::train
