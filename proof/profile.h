// Profiling: how far honest replays of the same training drift apart under the settings an
// honest solver may differ in (thread count, device), and the distance thresholds δ that a
// verifier derives from it (docs/profiling.md). Pieces of training are replayed under each
// setting; each end state is compared with the reference setting's. δ per metric is the
// largest spread seen times a safety factor, never below a floor of float32 rounding.
// proof/ decides what to replay and computes δ; the replays are train/'s (via proof/replayer.h),
// one replayer at a time: a Trainer sets process-wide LibTorch switches (the thread count among
// them). Every setting keeps the bundle's data-parallel shard count.
#pragma once

#include <nlohmann/json.hpp>

#include <cstdint>
#include <filesystem>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "common/records.h"
#include "common/task.h"
#include "kernels/distance.h"
#include "proof/replayer.h"
#include "proof/state_distance.h"
#include "proof/verify.h"

namespace solver::proof {

inline constexpr std::string_view kProfileSchema = "solver.profile/2";
// δ = kProfileSafetyFactor x max(largest spread observed, rounding floor); see docs/profiling.md.
inline constexpr double kProfileSafetyFactor = 10.0;

struct ProfileOptions {
  int segments = 3;   // bundle: how many segments to replay (first, middle, last, then evenly spread)
  int steps = 100;    // bundle: at most this many steps of each segment; task: steps trained from step 0
  std::vector<int> threads{1, 2, 4};  // the first is the reference's
  std::vector<std::string> devices{"cpu"};  // usable devices; the first is the reference's
  // Settings asked for but not measured (a device LibTorch does not see), with the reason.
  std::vector<std::pair<std::string, std::string>> skipped;
};

struct PieceReport {
  std::int64_t first_step = 0;
  std::int64_t last_step = 0;
  kernels::WeightDistance from_reference;                 // parameters, vs the reference replay
  std::optional<kernels::WeightDistance> from_claimed;    // bundle pieces that end on a checkpoint
  bool bitwise_equal = false;                             // whole state (all tensors, metadata) equals the reference's
  std::string first_difference;                           // where it does not: a tensor name or metadata key
};

struct VariationReport {
  std::string name;  // "reference", "repeat", "threads=2", "device=cuda:0"
  ReplaySetting setting;
  RuntimeInfo runtime;
  std::vector<PieceReport> pieces;
  bool bitwise_equal = false;  // every piece
  StateThresholds spread;      // per part and for the losses: largest over the pieces, vs the reference
  double seconds = 0.0;
};

struct Profile {
  std::string task_id;
  std::string task_sha256;
  std::string source;  // "bundle" or "task"
  std::vector<VariationReport> variations;  // [0] is the reference
  std::vector<std::pair<std::string, std::string>> skipped;
  std::map<std::string, MetricValues> part_norm;  // the reference's end state: each part's l1, l2, linf norms
  std::int64_t longest_piece = 0;
  StateThresholds observed_spread;  // largest over the variations other than the reference
  StateThresholds floor;
  double safety_factor = kProfileSafetyFactor;
  StateThresholds thresholds;

  nlohmann::json to_json() const;
};

// Replays pieces of the bundle in `dir` from their start checkpoints. Trusts the bundle as a
// starting point only: distances from its checkpoints are reported, never used for δ.
// Throws Error(Input) when the bundle cannot be read, Error(Usage) for bad options.
Profile profile_bundle(const std::filesystem::path& dir, const ProfileOptions& options,
                       const ReplayerFactory& make_replayer);
// Trains options.steps steps from the task's seeded initialisation, with the data order and
// learning rates the task's seed and schedule give.
Profile profile_task(const Task& task, const ProfileOptions& options, const ReplayerFactory& make_replayer);

// What a verifier takes from a profile file: the runtimes it measured and their thresholds.
// Throws Error(Config) naming the file and field when it is not a profile.
RuntimeCoverage read_profile(const std::filesystem::path& path);
// Throws Error(Config) when the bundle in `bundle_dir` is for another task than the profile,
// Error(Input) when the bundle has no readable manifest.
void check_profile_applies(const RuntimeCoverage& profile, const std::filesystem::path& bundle_dir);

}  // namespace solver::proof
