// Writes a proof-of-learning bundle while training runs. The training thread hands over
// each checkpoint as a snapshot; a background writer encodes it, writes it durably, hashes
// it, measures the update against the previous checkpoint and appends it to the journal
// (journal.jsonl, a line per checkpoint), so a crash loses at most the steps since the last
// checkpoint. finish() writes the signed manifest and removes the journal: a bundle with a
// manifest is complete.
#pragma once

#include <cstdint>
#include <filesystem>
#include <memory>
#include <optional>
#include <utility>
#include <vector>

#include "checkpoint/safetensors.h"
#include "common/records.h"
#include "common/task.h"
#include "proof/manifest.h"

namespace solver {
class SigningKey;
}

namespace solver::proof {

struct BundlePlan {  // what the trainer knows before step 1
  RuntimeInfo runtime;
  std::int64_t train_samples = 0;
  std::int64_t steps_per_epoch = 0;
  std::int64_t total_steps = 0;
};

class BundleWriter {
 public:
  // Starts a bundle in `dir`, which must not hold another bundle unless `resume` is set.
  // The key must outlive the writer. Throws Error(Input) / Error(Io).
  BundleWriter(std::filesystem::path dir, const Task& task, const SigningKey& key, const BundlePlan& plan, bool resume);
  ~BundleWriter();  // waits for queued writes; an unfinished bundle keeps its journal for --resume

  // With resume: the last checkpoint the journal records as complete (its hash re-checked),
  // or nullopt when there is none and training starts from step 0.
  std::optional<std::pair<std::int64_t, checkpoint::Checkpoint>> resume_point();

  // Buffers one step's record; it is written with the segment that the next checkpoint closes.
  void record_step(StepRecord record);
  // Queues checkpoint `step` (0 first, then every k and the last step) for writing. Blocks
  // only while earlier checkpoints are still being written. Rethrows an earlier write error.
  // `train_seconds`: the training time up to this checkpoint over every run of the bundle
  // (earlier_train_seconds() plus this run's), which the journal keeps for a resumed run.
  void add_checkpoint(std::int64_t step, checkpoint::Checkpoint state, double train_seconds);
  // Waits until every queued checkpoint is written and journaled. Rethrows a write error.
  void flush();
  // The checkpoints journaled so far (including those found on resume), oldest first: what the
  // agent commits to the market while training. Safe to call from any thread while training runs.
  std::vector<CheckpointCommitment> written_checkpoints() const;
  // How long each checkpoint journaled since the last call took, from add_checkpoint() to its
  // journal line, in seconds: the agent's checkpoint-write metric. Safe from any thread.
  std::vector<double> take_write_seconds();
  // The training time earlier runs of a resumed bundle spent up to its resume point (0 for a
  // fresh one): the manifest's train_seconds counts it with this run's.
  double earlier_train_seconds() const;
  // Waits for all writes, then writes the signed manifest. Returns it.
  Manifest finish(const TrainOutcome& outcome);

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace solver::proof
