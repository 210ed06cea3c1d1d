// Refereeing two bundles of the same task that disagree (`solver dispute`), after Gensyn's
// Verde: find the first checkpoint where they differ, replay that segment step by step from
// the last common checkpoint to find the first step where the two sides part, trace the layers
// of that step, and say which side the replay supports. A bundle that fails the checks that
// need no training loses outright. proof/ judges; the replay and the trace are train/'s (via
// proof/replayer.h).
#pragma once

#include <nlohmann/json.hpp>

#include <cstdint>
#include <filesystem>
#include <optional>
#include <string>
#include <vector>

#include "checkpoint/safetensors.h"
#include "common/records.h"
#include "common/task.h"
#include "kernels/distance.h"
#include "proof/verify.h"

namespace solver::proof {

struct DisputeOptions {
  std::string device = "cpu";                // where the referee replays
  std::optional<std::string> second_device;  // when set, the divergent step is traced on both devices too
  int threads = 0;                           // 0: the thread count bundle A records
  double delta = 1e-3;  // l2 threshold between states (and between traces) from different runtimes
};

// One bundle's side of the dispute.
struct DisputeSide {
  std::filesystem::path bundle;
  std::string solver_public_key;
  RuntimeInfo runtime;
  bool valid = false;                 // passed every check that needs no training
  std::vector<std::string> failures;  // why it is invalid
  bool same_runtime = false;          // as the referee's: bitwise equality required
  bool follows_seed = true;           // the disputed segment's indices and lrs are the seed's
  std::optional<std::int64_t> first_wrong_loss;  // first step whose recorded loss the replay does not give
  bool end_state_matches = false;     // the replayed end of the segment matches its checkpoint
  kernels::WeightDistance distance;   // replayed end state vs its checkpoint (parameters)
  bool supported = false;
};

// A tensor of the divergent step's trace, reduced to what two referees can compare.
struct TraceEntry {
  std::string name;  // "output 1 (Linear)", "loss", "gradient 1.weight"
  std::vector<std::int64_t> shape;
  double l2_norm = 0.0;
  std::string sha256;  // of the tensor's bytes
  std::optional<double> second_device_distance;  // l2 to the same tensor traced on the second device
};

struct DisputeReport {
  std::string task_sha256;
  DisputeSide a, b;
  std::string referee_device;
  bool identical = false;  // every checkpoint and segment file has the same hash on both sides
  // The first checkpoint whose file or segment differs, and the segment that leads to it.
  std::optional<std::int64_t> divergent_checkpoint;
  std::int64_t segment_first_step = 0;
  std::int64_t segment_last_step = 0;
  // The first step where the sides part: their records differ, or one side's recorded loss is
  // not the replay's; else the segment's last step, when only its end state tells them apart.
  std::optional<std::int64_t> divergent_step;
  std::string divergence;  // "records", "loss" or "end state"
  std::vector<TraceEntry> trace;          // the divergent step on the referee's replayed state
  std::optional<std::string> second_device;
  std::optional<std::string> divergent_operator;  // first trace entry differing beyond delta across devices
  std::string supported;  // "A", "B", "both" or "neither"
  std::vector<std::string> reasons;  // why, most important first
  std::int64_t steps_replayed = 0;
  double seconds = 0.0;

  nlohmann::json to_json() const;
};

// Referees bundles `a` and `b`. Throws Error(Input) when either cannot be read as a bundle or
// when they are bundles of different tasks; every other disagreement is a report.
DisputeReport dispute_bundles(const std::filesystem::path& a, const std::filesystem::path& b, const DisputeOptions& options,
                              const ReplayerFactory& make_replayer);

}  // namespace solver::proof
