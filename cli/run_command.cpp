// `solver run`: train one task and write its proof-of-learning bundle (agent/training_job.h).
// A run killed at any moment resumes (--resume) from its last checkpoint; SIGINT or SIGTERM
// stop it after the current step with the journal current. A step stuck past its time limit ends
// the process with exit status 2 (TrainingJob's default StuckStepHandler), and --resume then
// fails with the recorded reason.
#include <unistd.h>

#include <nlohmann/json.hpp>

#include <chrono>
#include <cstdio>
#include <cstdlib>

#include "cli/commands.h"
#include "cli/signals.h"
#include "agent/training_job.h"
#include "common/error.h"
#include "common/keys.h"
#include "common/log.h"
#include "common/task.h"

namespace solver::agent {
namespace {

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
  if (options.task_file) return load_task_file(*options.task_file);
  log_info("agent", "no task file given: training the embedded default task (configs/tasks/fashion-mnist-mlp.json)");
  return parse_embedded_default_task();
}

std::uint64_t directory_size(const std::filesystem::path& dir) {
  std::uint64_t total = 0;
  for (const auto& entry : std::filesystem::recursive_directory_iterator(dir))
    if (entry.is_regular_file()) total += entry.file_size();
  return total;
}

}  // namespace

Task parse_embedded_default_task() {
  try {
    return parse_task(nlohmann::json::parse(embedded_default_task()), std::filesystem::current_path());
  } catch (const nlohmann::json::exception& error) {
    throw Error(ErrorKind::Internal, std::string("the embedded default task is not valid JSON: ") + error.what());
  }
}

std::filesystem::path default_key_path() {
  if (const char* key = std::getenv("SOLVER_KEY"); key != nullptr && *key != '\0') return key;
  if (const char* config = std::getenv("XDG_CONFIG_HOME"); config != nullptr && *config != '\0')
    return std::filesystem::path(config) / "solver" / "solver.key";
  const char* home = std::getenv("HOME");
  return std::filesystem::path(home != nullptr ? home : ".") / ".config" / "solver" / "solver.key";
}

SigningKey load_or_create_key(const std::filesystem::path& path, std::string_view role) {
  if (std::filesystem::exists(path)) return SigningKey::load(path);
  SigningKey key = SigningKey::generate();
  key.save(path);
  log_warn("agent", "created a new {} key at {} (public {}); back it up: it is this rig's identity", role, path.string(),
           key.public_key_hex());
  return key;
}

int keygen_command(const std::optional<std::filesystem::path>& key_file) {
  const std::filesystem::path path = key_file.value_or(default_key_path());
  const SigningKey key = SigningKey::generate();
  key.save(path);
  std::printf("wrote %s (mode 0600)\npublic key: %s\nBack this file up: it is this solver's identity on the market.\n",
              path.c_str(), key.public_key_hex().c_str());
  return kExitOk;
}

int run_command(const RunOptions& options) {
  const Task task = load_run_task(options);
  const std::filesystem::path out_dir = options.out_dir.value_or(std::filesystem::path("runs") / task.id);
  std::optional<SigningKey> key;
  // A --key that names no file is a mistake, not a new identity.
  if (options.proof)
    key = options.key_file ? SigningKey::load(*options.key_file) : load_or_create_key(default_key_path(), "solver");  // before training: a bad key must not cost a run

  const train::TrainerOptions trainer_options{options.device, options.threads, options.shards};
  TrainingJob job(task, trainer_options, key ? &*key : nullptr, out_dir, options.resume);
  const RuntimeInfo runtime = job.trainer().runtime();
  log_info("agent", "task={} model={} steps={} batch={} k={} device={} threads={} shards={} torch={} step_limit_s={}",
           task.id, task.model.kind, job.trainer().total_steps(), task.training.batch_size, task.checkpoint_every,
           options.device, runtime.threads, runtime.shards, runtime.torch_version,
           train::step_time_limit_seconds(task.budget, trainer_options.max_step_seconds));

  const StopSignals stop;  // SIGINT/SIGTERM: stop after the current step with the journal current
  ProgressReporter progress;
  train::TrainHooks hooks;
  hooks.on_progress = [&](const train::Progress& update) { progress.report(update); };
  hooks.should_stop = [&] { return stop.requested(); };
  const TrainingOutcome outcome = job.run(std::move(hooks));
  progress.end_line();
  const std::int64_t steps_run = outcome.last_step - outcome.first_step;
  if (!outcome.finished) {
    std::printf("stopped by a signal at step %lld of %lld; continue with: solver run --resume --out %s\n",
                static_cast<long long>(outcome.last_step), static_cast<long long>(outcome.total_steps), out_dir.c_str());
    return kExitOk;
  }
  std::printf("trained %s: %lld steps in %.1f s (%.1f steps/s), final loss %.4f, test loss %.4f, test accuracy %.2f%%\n",
              task.id.c_str(), static_cast<long long>(steps_run), outcome.train_seconds,
              steps_run / std::max(outcome.train_seconds, 1e-9), outcome.final_loss, outcome.test_loss,
              outcome.test_accuracy * 100.0);
  if (!outcome.manifest) return kExitOk;
  const proof::Manifest& manifest = *outcome.manifest;
  std::printf("bundle %s: %zu checkpoints, %zu segments, %.1f MB, signed by %s\n", out_dir.c_str(),
              manifest.checkpoints.size(), manifest.segments.size(), directory_size(out_dir) / 1e6,
              manifest.solver_public_key.c_str());
  return kExitOk;
}

}  // namespace solver::agent
