// One task trained with its proof: a Trainer and a BundleWriter wired together, resumable,
// stoppable between steps. `solver run` drives one in the foreground; the agent drives one on a
// background thread while it heartbeats the market with the checkpoints written so far.
#pragma once

#include <cstdint>
#include <filesystem>
#include <functional>
#include <memory>
#include <optional>
#include <vector>

#include "common/task.h"
#include "proof/bundle_writer.h"
#include "proof/manifest.h"
#include "train/trainer.h"

namespace solver {
class SigningKey;
}

namespace solver::agent {

struct TrainingOutcome {
  bool finished = false;         // false: stopped early by should_stop; the bundle stays resumable
  std::int64_t first_step = 0;   // where this run started (the resume point)
  std::int64_t last_step = 0;
  std::int64_t total_steps = 0;
  float final_loss = 0.0f;
  double train_seconds = 0.0;
  double test_accuracy = 0.0;               // when finished (next-token accuracy for a gpt)
  double test_loss = 0.0;                   // when finished: mean cross-entropy on the test set
  std::optional<proof::Manifest> manifest;  // when finished with a proof
};

class TrainingJob {
 public:
  // Loads the task's model and data. With a key, writes the bundle into `bundle_dir` (resuming
  // from its journal when `resume` is set and there is one); without, trains only.
  TrainingJob(const Task& task, const train::TrainerOptions& trainer_options, const SigningKey* key,
              const std::filesystem::path& bundle_dir, bool resume);
  ~TrainingJob();

  const train::Trainer& trainer() const { return trainer_; }
  std::int64_t start_step() const { return start_step_; }

  // Trains from start_step() to the end, or until hooks.should_stop says stop (then pending
  // checkpoint writes are flushed, the journal is current, and the outcome is not finished).
  TrainingOutcome run(train::TrainHooks hooks);

  // The checkpoints written and journaled so far. Safe from any thread while run() runs.
  std::vector<proof::WrittenCheckpoint> written_checkpoints() const;

 private:
  Task task_;
  train::Trainer trainer_;
  std::optional<proof::BundleWriter> writer_;
  std::int64_t start_step_ = 0;
};

}  // namespace solver::agent
