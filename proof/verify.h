// Verifying a bundle: cheap checks first (signature, file hashes, hash chain, checkpoint
// order, data order recomputed from the seed, initialisation recomputed from the seed), then
// replays of chosen segments compared with the claimed checkpoints. Rejections are verdicts
// with reasons; only a bundle that cannot be read at all is an Error.
// proof/ decides what to replay and judges; the replay itself is train/'s (via proof/replayer.h).
#pragma once

#include <nlohmann/json.hpp>

#include <cstdint>
#include <filesystem>
#include <optional>
#include <string>
#include <vector>

#include "common/records.h"
#include "common/task.h"
#include "kernels/distance.h"
#include "proof/replayer.h"
#include "proof/state_distance.h"

namespace solver::proof {

// Which segments are replayed (all cheap checks run on every segment regardless):
//   TopQ    within each epoch, the q segments whose change of the whole training state is the
//           most unusual against the segments around them (docs/profiling.md, "Ranking
//           segments"), plus the last segment (the final model is what the submitter gets),
//           plus random_count more drawn among all the rest. A ranking is something a forger
//           can compute too; the random draws, unknown to the solver, are what catch a forger
//           who fakes where no ranking looks. A segment belongs to the epoch of its last step
//           (epochs of manifest.steps_per_epoch steps).
//   Random  the last segment, and random_count segments drawn among the others.
//   All     every segment.
// proof/detail/segment_selection.h has the rules and the detection probability.
enum class SegmentSelection { TopQ, Random, All };

// A profile's verdict on which runtimes replay alike (docs/profiling.md): a verifier that
// holds one judges a bundle from any runtime it lists, when its own runtime is listed too,
// against the profile's per-part thresholds. A bundle from the verifier's own runtime must
// replay bit for bit. The verifier chooses its coverages; the bundle only claims a runtime.
struct RuntimeCoverage {
  std::string task_sha256;  // the task it was measured on: thresholds do not carry over between tasks
  std::vector<RuntimeInfo> runtimes;
  StateThresholds thresholds;
  std::string source;  // where it came from, for messages ("profile p.json")
};

struct VerifyOptions {
  SegmentSelection selection = SegmentSelection::TopQ;
  int q = 2;              // top-q: the q largest updates of each epoch...
  int random_count = 1;   // ...plus this many drawn at random among the rest of the bundle
  // Instead of random_count: the fewest draws that catch, with this probability, a forger who
  // faked faked_fraction of the segments where it chose (docs/bundle-format.md, "Verifying").
  std::optional<double> catch_probability;
  double faked_fraction = 0.1;
  std::optional<std::uint64_t> random_seed;  // verifier's randomness; drawn and reported when absent
  // The verifier's policy for other runtimes than its own: the profiles it chose. Without one
  // that covers a bundle's runtime, the bundle is not judged (Verdict::not_covered).
  std::vector<RuntimeCoverage> coverages;
  // Caps the verifier sets for itself: a bundle's runtime.threads above max_threads is replayed
  // with max_threads (another runtime, then); runtime.shards above max_shards is not judged.
  int max_threads = 4;
  int max_shards = 64;
  std::optional<std::string> expected_task_sha256;   // reject a bundle for another task
  std::optional<std::string> expected_public_key;    // reject a bundle signed by someone else
  // The checkpoints the solver committed to the market while training: a bundle whose
  // checkpoints differ was rewritten afterwards and is rejected.
  std::vector<CheckpointCommitment> committed_checkpoints;
  std::string device = "cpu";  // where the replays run
  // false: only the checks that need no training; nothing is replayed and the verdict is not
  // an acceptance (a dispute's referee replays by itself).
  bool replay = true;
};

struct SegmentReport {
  std::int64_t first_step = 0;
  std::int64_t last_step = 0;
  std::string chosen_by;  // "top-q", "final", "random" or "all"
  PartDistances distances;    // replayed end state vs claimed checkpoint, per part (infinite until measured)
  bool bitwise_equal = false;  // every tensor (parameters, buffers, optimizer state) and metadata entry
  bool losses_match = false;   // replayed losses equal the recorded ones (bitwise when bitwise required)
  bool bitwise_required = true;  // else the coverage's thresholds applied
  bool replayed = false;         // false when the replay could not run (a checkpoint unreadable, the budget spent)
  bool passed = false;
  double seconds = 0.0;
};

// The chance that the replayed segments catch a forger who faked some segments and put them
// where this verifier was least likely to look: outside the segments it always replays.
struct Detection {
  std::int64_t always_replayed = 0;  // top-q and the final segment: a forger can compute which
  std::int64_t random_draws = 0;     // drawn among the others with the verifier's seed
  struct Chance {
    double faked_fraction = 0.0;  // of the segments; 0: one faked segment
    std::int64_t faked_segments = 0;
    double probability = 0.0;
  };
  std::vector<Chance> chances;  // one faked segment, then by faked fraction, ascending
};

struct Verdict {
  bool accepted = false;
  std::vector<std::string> failures;  // why it was rejected, most important first
  std::vector<SegmentReport> segments;
  std::uint64_t random_seed = 0;
  bool same_runtime = false;       // bitwise replay required
  // Whether the bundle's task was checked against the task the verifier expected
  // (VerifyOptions::expected_task_sha256). When not, an accepted bundle is only self-consistent:
  // it proves some training of the task it names, whatever that task is.
  bool task_checked = false;
  // Set when the verifier cannot judge the bundle here: its runtime is neither the verifier's
  // own nor covered by one of the verifier's profiles (or is beyond the verifier's caps).
  // Neither accepted nor rejected; `failures` is empty.
  std::optional<std::string> not_covered;
  std::int64_t segments_total = 0;  // in the bundle; `segments` holds the replayed ones
  std::optional<Detection> detection;  // absent when the bundle was rejected before segments were chosen
  double replayed_fraction = 0.0;  // replayed steps / total steps
  double replay_seconds = 0.0;
  double train_seconds = 0.0;      // as recorded in the bundle

  nlohmann::json to_json() const;
  // accepted, why (the first failure, or what an acceptance checked) and to_json() as the
  // report. Only for a verdict that judged the bundle: with VerifyOptions::replay, and not
  // not_covered (such a bundle is declined, not judged).
  VerdictSummary summary() const;
};

// Verifies the bundle in `dir`. Blocks (replays run on this thread).
// Throws Error(Input) only when the bundle cannot be read as a bundle at all.
Verdict verify_bundle(const std::filesystem::path& dir, const VerifyOptions& options, const ReplayerFactory& make_replayer);

}  // namespace solver::proof
