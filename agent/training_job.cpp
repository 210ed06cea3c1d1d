// TrainingJob: the order matters for "nothing lost". The bundle writer journals each checkpoint
// as it lands, so a job stopped or killed at any moment resumes from its last checkpoint, and the
// steps after it are retrained bitwise identically (per-step seeds, see train/trainer.h). The one
// thing that must not resume is a step that stalled: its record is checked before anything else.
#include "agent/training_job.h"

#include <chrono>
#include <cstdio>
#include <cstdlib>

#include "agent/exit_status.h"
#include "common/files.h"
#include "common/keys.h"
#include "common/log.h"

namespace solver::agent {
namespace {

// <bundle_dir>/stuck_step.txt, after checking that no earlier run left one (Error(Budget) with
// its reason if one did); empty without a key, which writes no bundle.
std::filesystem::path checked_stuck_step_record(const SigningKey* key, const std::filesystem::path& bundle_dir) {
  if (key == nullptr) return {};
  const std::filesystem::path record = bundle_dir / kStuckStepFile;
  if (std::filesystem::exists(record))
    throw Error(ErrorKind::Budget, read_file(record) + " (recorded in " + record.string() +
                                       " when that run ended); the task cannot go on in this folder");
  return record;
}

}  // namespace

void end_process_for_stuck_step(const Error& reason) {
  log_error("agent", "{} error: {}; ending the process, since a step cannot be interrupted",
            error_kind_name(reason.kind()), reason.what());
  std::fflush(nullptr);
  std::_Exit(kExitBadInput);
}

TrainingJob::TrainingJob(const Task& task, const train::TrainerOptions& trainer_options, const SigningKey* key,
                         const std::filesystem::path& bundle_dir, bool resume, StuckStepHandler on_stuck_step)
    : task_(task),
      stuck_step_record_(checked_stuck_step_record(key, bundle_dir)),
      on_stuck_step_(std::move(on_stuck_step)),
      trainer_(task, with_stuck_step_handler(trainer_options)) {
  if (key == nullptr) return;
  writer_.emplace(bundle_dir, task_, *key,
                  proof::BundlePlan{trainer_.runtime(), trainer_.train_samples(), trainer_.steps_per_epoch(),
                                    trainer_.total_steps()},
                  resume);
  if (!resume) return;
  if (auto point = writer_->resume_point()) {
    trainer_.load_state(point->second);
    start_step_ = point->first;
    resumed_ = true;
    log_info("agent", "task={} resuming from checkpoint step={}", task_.id, start_step_);
  } else {
    log_info("agent", "task={} no checkpoint to resume from: starting at step 0", task_.id);
  }
}

TrainingJob::~TrainingJob() = default;

train::TrainerOptions TrainingJob::with_stuck_step_handler(train::TrainerOptions options) {
  options.on_stuck_step = [this](const Error& reason) {
    record_stuck_step(reason);
    on_stuck_step_(reason);
  };
  return options;
}

void TrainingJob::record_stuck_step(const Error& reason) const {
  if (stuck_step_record_.empty()) return;
  try {
    std::filesystem::create_directories(stuck_step_record_.parent_path());
    write_file_durably(stuck_step_record_, std::string_view(reason.what()));
  } catch (const std::exception& error) {
    log_error("agent", "task={} cannot record the stuck step in {}: {}", task_.id, stuck_step_record_.string(),
              error.what());
  }
}

TrainingRun TrainingJob::run(train::TrainHooks hooks) {
  TrainingRun run;
  run.first_step = start_step_;
  run.total_steps = trainer_.total_steps();
  const auto on_step = std::move(hooks.on_step);
  hooks.on_step = [&](StepRecord&& record) {
    run.outcome.final_loss = record.loss;
    if (on_step) on_step(StepRecord(record));
    if (writer_) writer_->record_step(std::move(record));
  };
  // One clock for this run's training time: the journal's running total and the manifest's.
  const auto started = std::chrono::steady_clock::now();
  const auto seconds_so_far = [&] { return std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count(); };
  if (writer_) {
    hooks.on_checkpoint = [&](std::int64_t step, checkpoint::Checkpoint&& state) {
      // Resumed from checkpoint 0, the trainer hands over the initial state again: the bundle has it.
      if (resumed_ && step == start_step_) return;
      writer_->add_checkpoint(step, std::move(state), writer_->earlier_train_seconds() + seconds_so_far());
      log_debug("proof", "task={} checkpoint step={} queued", task_.id, step);
    };
  }

  run.last_step = trainer_.train(start_step_, hooks);
  run.seconds = seconds_so_far();
  // The bundle's training time counts every run of it, not only this one.
  run.outcome.train_seconds = (writer_ ? writer_->earlier_train_seconds() : 0.0) + run.seconds;
  run.finished = run.last_step == run.total_steps;
  if (!run.finished) {
    // Flush queued checkpoints into the journal; the steps after the last one are retrained on resume.
    if (writer_) writer_->flush();
    return run;
  }
  const train::Trainer::Evaluation evaluation = trainer_.evaluate();
  run.outcome.test_accuracy = evaluation.accuracy;
  run.test_loss = evaluation.loss;
  if (writer_) run.manifest = writer_->finish(run.outcome);
  return run;
}

std::vector<CheckpointCommitment> TrainingJob::written_checkpoints() const {
  return writer_ ? writer_->written_checkpoints() : std::vector<CheckpointCommitment>{};
}

std::vector<double> TrainingJob::take_checkpoint_write_seconds() {
  return writer_ ? writer_->take_write_seconds() : std::vector<double>{};
}

}  // namespace solver::agent
