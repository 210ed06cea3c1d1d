// One task trained with its proof: a Trainer and a BundleWriter wired together, resumable,
// stoppable between steps. `solver run` drives one in the foreground; the agent drives one on a
// background thread while it heartbeats the market with the checkpoints written so far.
// A step stuck past its time limit cannot be interrupted: the job records why in the bundle
// folder and hands over to a StuckStepHandler, which ends the process; the record makes any
// later run of the task in that folder (--resume, the agent's restart) fail with that reason
// instead of running the step again.
#pragma once

#include <cstdint>
#include <filesystem>
#include <functional>
#include <memory>
#include <optional>
#include <string_view>
#include <vector>

#include "common/error.h"
#include "common/task.h"
#include "proof/bundle_writer.h"
#include "proof/manifest.h"
#include "train/trainer.h"

namespace solver {
class SigningKey;
}

namespace solver::agent {

// What one TrainingJob::run() did.
struct TrainingRun {
  bool finished = false;         // false: stopped early by should_stop; the bundle stays resumable
  std::int64_t first_step = 0;   // where this run started (the resume point)
  std::int64_t last_step = 0;
  std::int64_t total_steps = 0;
  double seconds = 0.0;          // this run's training time
  // The manifest's outcome: the last step's loss; when finished, the test accuracy (next-token
  // accuracy for a gpt); the training time of every run of a resumed bundle, this one's included.
  proof::TrainOutcome outcome;
  double test_loss = 0.0;                   // when finished: mean cross-entropy on the test set
  std::optional<proof::Manifest> manifest;  // when finished with a proof
};

// The file in a bundle folder that records why a step could not finish: the Budget error's text.
inline constexpr std::string_view kStuckStepFile = "stuck_step.txt";

// What a TrainingJob does about a step still running past its time limit. Called on the
// trainer's watchdog thread, with the training thread still inside the step, after the job has
// written the reason to <bundle_dir>/stuck_step.txt (fsynced). It should end the process and not
// return: std::_Exit, since exit() would run destructors under the training thread. If it
// returns, the step goes on, and its end throws Error(Budget) from run().
using StuckStepHandler = std::function<void(const Error& reason)>;

// The default StuckStepHandler: logs "budget error: <reason>" and ends the process at once with
// exit status 2 (kExitBadInput), the status of every exceeded budget.
[[noreturn]] void end_process_for_stuck_step(const Error& reason);

class TrainingJob {
 public:
  // Loads the task's model and data. With a key, writes the bundle into `bundle_dir` (resuming
  // from its journal when `resume` is set and there is one); without, trains only. Throws
  // Error(Budget), before building anything, when `bundle_dir` holds a stuck_step.txt: the task
  // stalled there before and would again. `trainer_options.on_stuck_step` is replaced by the
  // job's own, which records the reason and then calls `on_stuck_step`.
  TrainingJob(const Task& task, const train::TrainerOptions& trainer_options, const SigningKey* key,
              const std::filesystem::path& bundle_dir, bool resume,
              StuckStepHandler on_stuck_step = end_process_for_stuck_step);
  ~TrainingJob();

  const train::Trainer& trainer() const { return trainer_; }
  std::int64_t start_step() const { return start_step_; }

  // Trains from start_step() to the end, or until hooks.should_stop says stop (then pending
  // checkpoint writes are flushed, the journal is current, and the outcome is not finished).
  // Throws what the trainer throws: Error(Budget) for a step that ended past its time limit.
  TrainingRun run(train::TrainHooks hooks);

  // The checkpoints written and journaled so far. Safe from any thread while run() runs.
  std::vector<CheckpointCommitment> written_checkpoints() const;
  // The seconds each checkpoint write took, since the last call (BundleWriter::take_write_seconds).
  std::vector<double> take_checkpoint_write_seconds();

 private:
  // The trainer's options, with the job's stuck-step handler.
  train::TrainerOptions with_stuck_step_handler(train::TrainerOptions options);
  void record_stuck_step(const Error& reason) const;

  Task task_;
  // Before the trainer: its watchdog may call the handler while the trainer is being built (the
  // trial forward pass of a TorchScript model).
  std::filesystem::path stuck_step_record_;  // <bundle_dir>/stuck_step.txt; empty without a bundle
  StuckStepHandler on_stuck_step_;
  train::Trainer trainer_;
  std::optional<proof::BundleWriter> writer_;
  std::int64_t start_step_ = 0;
  bool resumed_ = false;  // from the bundle's checkpoint at start_step_
};

}  // namespace solver::agent
