// `solver run`: train one task and write its proof-of-learning bundle (agent/training_job.h).
// A run killed at any moment resumes (--resume) from its last checkpoint; SIGINT or SIGTERM
// stop it after the current step with the journal current. A step stuck past its time limit ends
// the process with exit status 2 (TrainingJob's default StuckStepHandler), and --resume then
// fails with the recorded reason.
#include <unistd.h>

#include <fmt/format.h>

#include <chrono>
#include <cstdio>
#include <memory>
#include <optional>
#include <string>

#include "agent/exit_status.h"
#include "agent/training_job.h"
#include "cli/command.h"
#include "cli/common.h"
#include "cli/signals.h"
#include "common/error.h"
#include "common/keys.h"
#include "common/log.h"
#include "common/task.h"

namespace solver::cli {
namespace {

struct RunOptions {
  std::string task_file;                           // empty: the embedded default task
  std::optional<std::filesystem::path> out_dir;    // empty: runs/<task id>
  std::optional<std::filesystem::path> key_file;   // empty: default_key_path(), created if missing
  std::string device = "cpu";  // or a comma list: data parallel over those devices
  int threads = 0;
  int shards = 0;  // data-parallel shards per step; 0 = one per device
  bool resume = false;
  bool no_proof = false;  // train only, no bundle (to measure the proof's overhead)
};

std::string format_duration(double seconds) {
  const auto total = static_cast<long>(seconds + 0.5);
  return fmt::format("{}:{:02}:{:02}", total / 3600, (total / 60) % 60, total % 60);
}

// Progress: a line redrawn in place on a terminal, a log line every 10 s otherwise.
class ProgressReporter {
 public:
  ProgressReporter() : interactive_(::isatty(STDERR_FILENO) == 1) {}
  ~ProgressReporter() { end_line(); }

  void report(const train::Progress& progress) {
    const std::string line =
        fmt::format("step {}/{} epoch {} loss {:.4f} {:.0f} samples/s ETA {}", progress.step, progress.total_steps,
                    progress.epoch + 1, progress.loss, progress.samples_per_second, format_duration(progress.eta_seconds));
    if (interactive_) {
      std::fprintf(stderr, "\r%-78s", line.c_str());
      std::fflush(stderr);
      line_open_ = true;
      return;
    }
    const auto now = std::chrono::steady_clock::now();
    if (now - last_logged_ < std::chrono::seconds(10)) return;
    last_logged_ = now;
    log_info("train", "{}", line);
  }
  void end_line() {
    if (line_open_) std::fputc('\n', stderr);
    line_open_ = false;
  }

 private:
  bool interactive_;
  bool line_open_ = false;
  std::chrono::steady_clock::time_point last_logged_{};
};

Task load_run_task(const RunOptions& options) {
  if (!options.task_file.empty()) return load_task_file(options.task_file);
  log_info("run", "no task file given: training the embedded default task (configs/tasks/fashion-mnist-mlp.json)");
  return parse_embedded_default_task();
}

std::uint64_t directory_size(const std::filesystem::path& dir) {
  std::uint64_t total = 0;
  for (const auto& entry : std::filesystem::recursive_directory_iterator(dir))
    if (entry.is_regular_file()) total += entry.file_size();
  return total;
}

int run_command(const RunOptions& options) {
  if (options.resume && options.no_proof)
    throw Error(ErrorKind::Usage, "--resume needs a bundle; it cannot be combined with --no-proof");
  const Task task = load_run_task(options);
  const std::filesystem::path out_dir = options.out_dir.value_or(std::filesystem::path("runs") / task.id);
  std::optional<SigningKey> key;
  // A --key that names no file is a mistake, not a new identity.
  if (!options.no_proof)
    key = options.key_file ? SigningKey::load(*options.key_file) : load_or_create_key(default_key_path(), "solver");  // before training: a bad key must not cost a run

  const train::TrainerOptions trainer_options{options.device, options.threads, options.shards};
  agent::TrainingJob job(task, trainer_options, key ? &*key : nullptr, out_dir, options.resume);
  const RuntimeInfo runtime = job.trainer().runtime();
  log_info("run", "task={} model={} steps={} batch={} k={} device={} threads={} shards={} torch={} step_limit_s={}",
           task.id, name_of(task.model.kind), job.trainer().total_steps(), task.training.batch_size, task.checkpoint_every,
           options.device, runtime.threads, runtime.shards, runtime.torch_version,
           train::step_time_limit_seconds(task.budget, trainer_options.max_step_seconds));

  const StopSignals stop;  // SIGINT/SIGTERM: stop after the current step with the journal current
  ProgressReporter progress;
  train::TrainHooks hooks;
  hooks.on_progress = [&](const train::Progress& update) { progress.report(update); };
  hooks.should_stop = [&] { return stop.requested(); };
  const agent::TrainingRun run = job.run(std::move(hooks));
  progress.end_line();
  const std::int64_t steps_run = run.last_step - run.first_step;
  if (!run.finished) {
    std::printf("stopped by a signal at step %lld of %lld; continue with: solver run --resume --out %s\n",
                static_cast<long long>(run.last_step), static_cast<long long>(run.total_steps), out_dir.c_str());
    return agent::kExitOk;
  }
  std::printf("trained %s: %lld steps in %.1f s (%.1f steps/s), final loss %.4f, test loss %.4f, test accuracy %.2f%%\n",
              task.id.c_str(), static_cast<long long>(steps_run), run.seconds, steps_run / std::max(run.seconds, 1e-9),
              run.outcome.final_loss, run.test_loss, run.outcome.test_accuracy * 100.0);
  if (!run.manifest) return agent::kExitOk;
  const proof::Manifest& manifest = *run.manifest;
  std::printf("bundle %s: %zu checkpoints, %zu segments, %.1f MB, signed by %s\n", out_dir.c_str(),
              manifest.checkpoints.size(), manifest.segments.size(), directory_size(out_dir) / 1e6,
              manifest.solver_public_key.c_str());
  return agent::kExitOk;
}

}  // namespace

Command add_run_command(CLI::App& parent) {
  auto options = std::make_shared<RunOptions>();
  CLI::App* command = parent.add_subcommand("run", "Train a task and write its proof-of-learning bundle");
  command->add_option("task", options->task_file, "Task file (JSON, docs/task-format.md); default: the embedded Fashion-MNIST MLP task");
  command->add_option("--out", options->out_dir, "Bundle folder (default: runs/<task id>)");
  command->add_option("--device", options->device, "cpu, cuda or cuda:N; a comma list (cuda:0,cuda:1) trains data parallel over them")
      ->capture_default_str();
  command->add_option("--shards", options->shards, "Data-parallel shards per step (0: one per --device entry)")
      ->check(CLI::Range(0, 1024))
      ->capture_default_str();
  command->add_option("--threads", options->threads, "CPU threads for LibTorch (0: min(cores, 4))")->check(CLI::Range(0, 256));
  command->add_option("--key", options->key_file, "Solver key (default: $SOLVER_KEY or ~/.config/solver/solver.key)");
  command->add_flag("--resume", options->resume, "Continue an interrupted run in --out from its last checkpoint");
  command->add_flag("--no-proof", options->no_proof, "Train without writing a bundle (to measure the proof's cost)");
  return {command, [options] { return run_command(*options); }};
}

}  // namespace solver::cli
