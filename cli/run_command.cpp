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
#include <mutex>
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
#include "train/host_memory.h"

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

// Progress: a line redrawn in place on a terminal, a log line every 10 s otherwise. On a
// terminal it wraps the log sink while it lives, so that a log line (from any thread) first
// ends the progress line instead of being written over it. Create it before the threads that
// log start, and let it outlive them.
class ProgressReporter {
 public:
  ProgressReporter() : interactive_(::isatty(STDERR_FILENO) == 1) {
    if (!interactive_) return;
    wrapped_sink_ = set_log_sink([this](const LogRecord& record) {
      const std::lock_guard lock(mutex_);
      end_line_locked();
      wrapped_sink_(record);
    });
  }
  ~ProgressReporter() {
    end_line();
    if (interactive_) set_log_sink(std::move(wrapped_sink_));
  }
  ProgressReporter(const ProgressReporter&) = delete;
  ProgressReporter& operator=(const ProgressReporter&) = delete;

  void report(const train::Progress& progress) {
    const std::string line =
        fmt::format("step {}/{} epoch {} loss {:.4f} {:.0f} samples/s ETA {}", progress.step, progress.total_steps,
                    progress.epoch + 1, progress.loss, progress.samples_per_second, format_duration(progress.eta_seconds));
    if (interactive_) {
      const std::lock_guard lock(mutex_);
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
    const std::lock_guard lock(mutex_);
    end_line_locked();
  }

 private:
  void end_line_locked() {
    if (line_open_) std::fputc('\n', stderr);
    line_open_ = false;
  }

  bool interactive_;
  std::mutex mutex_;  // the progress line and the log lines share stderr
  bool line_open_ = false;
  LogSink wrapped_sink_;
  std::chrono::steady_clock::time_point last_logged_{};
};

// `text` as a POSIX shell reads it back: bare when it holds only characters no shell treats
// specially, else in single quotes.
std::string shell_quoted(const std::string& text) {
  const bool plain = !text.empty() && text.find_first_not_of("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"
                                                             "_-+=.,:/@%") == std::string::npos;
  if (plain) return text;
  std::string quoted = "'";
  for (const char c : text) quoted += c == '\'' ? std::string("'\\''") : std::string(1, c);
  return quoted + "'";
}

// The command that continues this run: the same task, bundle folder, key and devices, with --resume.
std::string resume_command(const RunOptions& options, const std::filesystem::path& out_dir) {
  std::string command = "solver run";
  if (!options.task_file.empty()) command += " " + shell_quoted(options.task_file);
  command += " --resume --out " + shell_quoted(out_dir.string());
  if (options.key_file) command += " --key " + shell_quoted(options.key_file->string());
  if (options.device != "cpu") command += " --device " + shell_quoted(options.device);
  if (options.threads != 0) command += " --threads " + std::to_string(options.threads);
  if (options.shards != 0) command += " --shards " + std::to_string(options.shards);
  return command;
}

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

  ProgressReporter progress;  // before the job: it must outlive the job's threads that log
  train::reset_host_tensor_peak();  // the run's own peak, printed at the end
  const train::TrainerOptions trainer_options{options.device, options.threads, options.shards};
  agent::TrainingJob job(task, trainer_options, key ? &*key : nullptr, out_dir, options.resume);
  const RuntimeInfo runtime = job.trainer().runtime();
  log_info("run", "task={} model={} steps={} batch={} k={} device={} threads={} shards={} torch={} step_limit_s={}",
           task.id, name_of(task.model.kind), job.trainer().total_steps(), task.training.batch_size, task.checkpoint_every,
           options.device, runtime.threads, runtime.shards, runtime.torch_version,
           train::step_time_limit_seconds(task.budget, trainer_options.max_step_seconds));

  const StopSignals stop;  // SIGINT/SIGTERM: stop after the current step with the journal current
  train::TrainHooks hooks;
  hooks.on_progress = [&](const train::Progress& update) { progress.report(update); };
  hooks.should_stop = [&] { return stop.requested(); };
  const agent::TrainingRun run = job.run(std::move(hooks));
  progress.end_line();
  const std::int64_t steps_run = run.last_step - run.first_step;
  if (!run.finished) {
    std::printf("stopped by a signal at step %lld of %lld; continue with: %s\n", static_cast<long long>(run.last_step),
                static_cast<long long>(run.total_steps), resume_command(options, out_dir).c_str());
    return agent::kExitOk;
  }
  std::printf("trained %s: %lld steps in %.1f s (%.1f steps/s), final loss %.4f, test loss %.4f, test accuracy %.2f%%\n",
              task.id.c_str(), static_cast<long long>(steps_run), run.seconds, steps_run / std::max(run.seconds, 1e-9),
              run.outcome.final_loss, run.test_loss, run.outcome.test_accuracy * 100.0);
  // What limits.max_host_memory_gb must allow for this task on the CPU with these shards.
  std::printf("host memory held by tensors at most: %.1f MB\n",
              static_cast<double>(train::host_tensor_memory().peak_bytes) / 1e6);
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
