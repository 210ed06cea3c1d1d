// TrainingJob: the order matters for "nothing lost". The bundle writer journals each checkpoint
// as it lands, so a job stopped or killed at any moment resumes from its last checkpoint, and the
// steps after it are retrained bitwise identically (per-step seeds, see train/trainer.h).
#include "agent/training_job.h"

#include <chrono>

#include "common/keys.h"
#include "common/log.h"

namespace solver::agent {

TrainingJob::TrainingJob(const Task& task, const train::TrainerOptions& trainer_options, const SigningKey* key,
                         const std::filesystem::path& bundle_dir, bool resume)
    : task_(task), trainer_(task, trainer_options) {
  if (key == nullptr) return;
  writer_.emplace(bundle_dir, task_, *key,
                  proof::BundlePlan{trainer_.runtime(), trainer_.train_samples(), trainer_.steps_per_epoch(),
                                    trainer_.total_steps()},
                  resume);
  if (!resume) return;
  if (auto point = writer_->resume_point()) {
    trainer_.load_state(point->second);
    start_step_ = point->first;
    log_info("agent", "task={} resuming from checkpoint step={}", task_.id, start_step_);
  } else {
    log_info("agent", "task={} no checkpoint to resume from: starting at step 0", task_.id);
  }
}

TrainingJob::~TrainingJob() = default;

TrainingOutcome TrainingJob::run(train::TrainHooks hooks) {
  TrainingOutcome outcome;
  outcome.first_step = start_step_;
  outcome.total_steps = trainer_.total_steps();
  const auto on_step = std::move(hooks.on_step);
  hooks.on_step = [&](StepRecord&& record) {
    outcome.final_loss = record.loss;
    if (on_step) on_step(StepRecord(record));
    if (writer_) writer_->record_step(std::move(record));
  };
  if (writer_) {
    hooks.on_checkpoint = [&](std::int64_t step, checkpoint::Checkpoint&& state) {
      writer_->add_checkpoint(step, std::move(state));
      log_debug("proof", "task={} checkpoint step={} queued", task_.id, step);
    };
  }

  const auto started = std::chrono::steady_clock::now();
  outcome.last_step = trainer_.train(start_step_, hooks);
  outcome.train_seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count();
  outcome.finished = outcome.last_step == outcome.total_steps;
  if (!outcome.finished) {
    // Flush queued checkpoints into the journal; the steps after the last one are retrained on resume.
    if (writer_) writer_->flush();
    return outcome;
  }
  const train::Trainer::Evaluation evaluation = trainer_.evaluate();
  outcome.test_accuracy = evaluation.accuracy;
  outcome.test_loss = evaluation.loss;
  if (writer_)
    outcome.manifest = writer_->finish(proof::TrainOutcome{outcome.test_accuracy, outcome.final_loss, outcome.train_seconds});
  return outcome;
}

std::vector<proof::WrittenCheckpoint> TrainingJob::written_checkpoints() const {
  return writer_ ? writer_->written_checkpoints() : std::vector<proof::WrittenCheckpoint>{};
}

}  // namespace solver::agent
