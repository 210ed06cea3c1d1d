// Plain records shared by the trainer (which produces them) and the proof (which stores
// and checks them). No torch, no I/O.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace solver {

// One optimizer step: the samples it used and what it measured.
struct StepRecord {
  std::int64_t step = 0;               // 1-based; checkpoint step_n holds the state after step n
  std::vector<std::uint32_t> indices;  // training-set sample indices of the batch, in batch order
  float loss = 0.0f;                   // mean loss of the batch before the update
  double lr = 0.0;                     // learning rate applied by this step
};

// What produced a run: enough for a verifier to tell "same build and device" (bitwise
// replay expected) from "different" (distance under a threshold).
struct RuntimeInfo {
  std::string solver_version;
  std::string torch_version;
  std::string device;       // "cpu" or "cuda:N (<GPU name>)": the primary device, where the optimizer runs
  int threads = 0;          // intra-op threads
  bool deterministic = true;  // deterministic algorithms requested
  // Data-parallel shards each step's batch is split into (docs/gpu.md). It, not the number of
  // devices the shards ran on, changes the bits: S shards on one device equal S on S devices.
  int shards = 1;
};

}  // namespace solver
