// Plain records that cross the libraries: the trainer produces them, the proof stores and
// checks them, the market protocol carries them. No torch, no I/O.
#pragma once

#include <nlohmann/json.hpp>

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

// A checkpoint committed by its hash: what the bundle writer journals, the agent sends the
// market while training (net::Heartbeat) and a verifier holds the bundle to (VerifyOptions).
struct CheckpointCommitment {
  std::int64_t step = 0;
  std::string sha256;  // of the checkpoint's file
};

// A verifier's judgement of a bundle in brief, as the market records it (POST
// /v1/verifications/{job_id}/verdict): proof::Verdict::summary() makes one from a verification.
struct VerdictSummary {
  bool accepted = false;
  std::string reason;  // one sentence: why it was rejected, or what was checked
  nlohmann::json report = nlohmann::json::object();
};

}  // namespace solver
