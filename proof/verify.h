// Verifying a bundle: cheap checks first (signature, file hashes, hash chain, checkpoint
// order, data order recomputed from the seed, initialisation recomputed from the seed), then
// replays of chosen segments compared with the claimed checkpoints. Rejections are verdicts
// with reasons; only a bundle that cannot be read at all is an Error.
// proof/ decides what to replay and judges; the replay itself is train/'s (via Replayer).
#pragma once

#include <nlohmann/json.hpp>

#include <cstdint>
#include <filesystem>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "checkpoint/safetensors.h"
#include "common/records.h"
#include "common/task.h"
#include "kernels/distance.h"

namespace solver::proof {

// Replays training for the verifier. Implemented over train::Trainer by the agent.
class Replayer {
 public:
  virtual ~Replayer() = default;
  virtual RuntimeInfo runtime() const = 0;
  virtual std::int64_t train_samples() const = 0;
  // The step-0 state recomputed from the task seed.
  virtual checkpoint::Checkpoint initial_state() = 0;
  // Loads `start`, runs `steps` with their recorded indices and learning rates, and returns
  // the resulting state (same tensor names as a checkpoint) and each step's loss.
  struct Result {
    checkpoint::Checkpoint state;
    std::vector<float> losses;
  };
  virtual Result replay(const checkpoint::Checkpoint& start, std::span<const StepRecord> steps) = 0;
};

// Builds a replayer for a task (loading its model and data) with the bundle's thread count and
// data-parallel shard count.
using ReplayerFactory = std::function<std::unique_ptr<Replayer>(const Task& task, int threads, int shards)>;

// Which segments are replayed (all cheap checks run on every segment regardless):
//   TopQ    within each epoch, the q segments with the largest recorded updates (l2), as in
//           Jia et al.'s proof of learning, plus random_count more drawn among all the rest.
//           Top-q alone is blind to a forger who keeps the largest updates honest and fakes
//           small ones; the random draws, unknown to the solver, are what catch that.
//           A segment belongs to the epoch of its last step, where its update is measured
//           (epochs of manifest.steps_per_epoch steps).
//   Random  random_count segments drawn among all.
//   All     every segment.
enum class SegmentSelection { TopQ, Random, All };

struct VerifyOptions {
  SegmentSelection selection = SegmentSelection::TopQ;
  int q = 2;              // top-q: the q largest updates of each epoch...
  int random_count = 1;   // ...plus this many drawn at random among the rest of the bundle
  std::optional<std::uint64_t> random_seed;  // verifier's randomness; drawn and reported when absent
  double delta = 1e-3;    // l2 threshold when the replay runtime differs from the bundle's
  // Further thresholds, from a profile (`solver profile`): each one set must hold as well.
  std::optional<double> delta_l1;
  std::optional<double> delta_linf;
  std::optional<double> delta_cosine;  // bounds 1 - cosine similarity
  std::optional<std::string> expected_task_sha256;   // reject a bundle for another task
  std::optional<std::string> expected_public_key;    // reject a bundle signed by someone else
  // step -> sha256 of the checkpoints the solver committed to the market while training: a
  // bundle whose checkpoints differ was rewritten afterwards and is rejected.
  std::map<std::int64_t, std::string> committed_checkpoints;
};

struct SegmentReport {
  std::int64_t first_step = 0;
  std::int64_t last_step = 0;
  std::string chosen_by;  // "top-q", "random" or "all"
  kernels::WeightDistance distance;  // replayed end state vs claimed checkpoint (parameters)
  bool bitwise_equal = false;        // every tensor (parameters, buffers, optimizer state) and metadata entry
  bool losses_match = false;         // replayed losses equal the recorded ones (bitwise when bitwise required)
  double threshold = 0.0;            // 0 = bitwise required
  bool passed = false;
  double seconds = 0.0;
};

struct Verdict {
  bool accepted = false;
  std::vector<std::string> failures;  // why it was rejected, most important first
  std::vector<SegmentReport> segments;
  std::uint64_t random_seed = 0;
  bool same_runtime = false;       // bitwise replay required
  std::int64_t segments_total = 0;  // in the bundle; `segments` holds the replayed ones
  double replayed_fraction = 0.0;  // replayed steps / total steps
  double replay_seconds = 0.0;
  double train_seconds = 0.0;      // as recorded in the bundle

  nlohmann::json to_json() const;
};

// Verifies the bundle in `dir`. Blocks (replays run on this thread).
// Throws Error(Input) only when the bundle cannot be read as a bundle at all.
Verdict verify_bundle(const std::filesystem::path& dir, const VerifyOptions& options, const ReplayerFactory& make_replayer);

}  // namespace solver::proof
