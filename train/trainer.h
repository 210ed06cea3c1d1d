// Training with LibTorch, behind a header with no torch in it (torch headers cost ~20 s per
// including file). A Trainer holds one task's model, optimizer state and data on one device
// (and, data parallel, replicas of the model on the same or other devices of its kind);
// `solver run` trains with it and `solver verify` replays segments with it.
//
// Reproducibility contract (docs/bundle-format.md): initial weights come from
// derive_seed(seed, kStreamInit, 0); step s draws its batch from DataOrder and seeds torch's
// generators with derive_seed(seed, kStreamStep, s) before its forward pass; deterministic
// algorithms are on and the thread count is fixed. So the state after step s depends only
// on the state after step s-1 and the records of step s, and any segment can be replayed.
// With training.precision "bf16" the forward pass and loss run under bf16 autocast (in
// training, replay, tracing and evaluation alike); the weights and optimizer state stay fp32.
// With S > 1 shards (data parallel, docs/gpu.md) each step's batch is split into S contiguous
// shards, each run on its own replica of the model; shard s > 0 seeds with
// derive_seed(step seed, kStreamShard, s), and the gradients and losses are summed in shard
// order and divided by S. S is part of the runtime: the same S gives the same bits on any
// number of devices of one kind; S = 1 is the plain single-replica step.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "checkpoint/safetensors.h"
#include "common/error.h"
#include "common/records.h"
#include "common/task.h"

namespace solver::train {

struct TrainerOptions {
  // A device list (common/device.h): "cpu", "cuda" or "cuda:N", or a comma list of one kind ("cuda:0,cuda:1") for data parallel:
  // shard s runs on device s % count, and the first is the primary, where the optimizer runs.
  std::string device = "cpu";
  int threads = 0;  // intra-op threads; 0 = min(hardware threads, 4)
  int shards = 0;   // data-parallel shards per step; 0 = one per listed device
  // The most one step may take, seconds (> 0, at most 1e6): the limit for a task without
  // budget.max_wall_seconds, and a ceiling on the one its budget gives (step_time_limit_seconds).
  double max_step_seconds = 600.0;
  // A verifier's replay budget (replay_budget_seconds), seconds; 0 = none (training). The most
  // this Trainer's replay() and evaluate() calls may take together: checked between steps and
  // evaluation batches, Error(Budget) once exceeded, and at once by every later call. It also
  // replaces the task's share in the time limit of each pass of the model: min(max_step_seconds,
  // max_replay_seconds), since one step of a slower verifier may take more than a tenth of the
  // solver's budget, but not more than the whole replay budget.
  double max_replay_seconds = 0.0;
  // Called on a watchdog thread, once per step, when a step has run past its time limit and is
  // still running: "step 12 ran past its time limit of 60 s and is still running". LibTorch
  // cannot interrupt the step, so a caller that must not wait for it ends the process here,
  // after making the reason durable (agent/training_job.h does). Empty: the overrun is logged.
  // Either way a step that does end past its limit throws Error(Budget).
  std::function<void(const Error&)> on_stuck_step;
};

// The time limit of one step for a task, seconds: with budget.max_wall_seconds B, a tenth of B
// but at least 60 s (the first steps pay for allocation and kernel choice) and at most B (one
// step cannot have more than the whole run); without, `max_step_seconds`, which caps the limit
// in both cases. The same limit applies to the other single passes of the model: its trial
// forward pass, a replayed or traced step; an evaluation batch of n samples gets
// max(1, n / training.batch_size) times it. A Trainer with a replay budget (TrainerOptions::
// max_replay_seconds) uses min(max_step_seconds, that budget) instead, and gives no pass more
// than that budget.
double step_time_limit_seconds(const BudgetSpec& budget, double max_step_seconds);

// How long a verifier's replays of a task's bundle may take together, seconds
// (docs/bundle-format.md, "Replay budget"): kReplaySlack times budget.max_wall_seconds, in which
// the solver claims to have trained every step; 0 (no budget: only each step's limit applies)
// for a task without one. The slack lets a verifier slower than the solver's machine replay an
// honest bundle in full.
inline constexpr double kReplaySlack = 2.0;
double replay_budget_seconds(const BudgetSpec& budget);

struct Progress {
  std::int64_t step = 0;
  std::int64_t total_steps = 0;
  std::int64_t epoch = 0;  // 0-based
  float loss = 0.0f;
  double samples_per_second = 0.0;
  double eta_seconds = 0.0;
};

// One entry of a step's layer trace (Trainer::trace_step): what a referee compares between
// devices to name the first operation whose result differs.
struct LayerTrace {
  std::string kind;          // "output" (a module's forward output), "loss" or "gradient" (a parameter's)
  checkpoint::Tensor value;  // a CPU copy, named by its module ("1 (Linear)"), "loss" or its parameter ("1.weight")
};

struct TrainHooks {
  std::function<void(StepRecord&&)> on_step;                                 // after each step
  std::function<void(std::int64_t step, checkpoint::Checkpoint&&)> on_checkpoint;  // every k steps and the last
  std::function<void(const Progress&)> on_progress;                          // about once a second and at the end
  // Polled after each step; true ends train() early (SIGTERM, a cancel). It may wait (for a GPU
  // to cool down): the time it takes counts against no budget.
  std::function<bool()> should_stop;
};

// One thread drives a Trainer (not thread-safe); every call blocks until its work is done. Each
// Trainer keeps one watchdog thread of its own, which times the steps (TrainerOptions::on_stuck_step).
// The constructor sets process-wide LibTorch switches (deterministic algorithms, no cuDNN
// autotuning, the intra-op thread count), so trainers in one process share those settings.
// LibTorch failures surface as Error: OutOfMemory when the device (or the host's limit,
// train/host_memory.h) has too little memory, otherwise Cuda on a GPU and Input on the CPU.
class Trainer {
 public:
  // Checks the dataset and model files against their hashes, loads them, builds the model
  // from the task seed and moves it to the device; a TorchScript model is checked against the
  // operator allowlist (train/detail/script_check.h) before any of it runs. Throws Error(Input)
  // for a bad task, data or model or a batch size the shard count does not divide,
  // Error(Config) for a malformed device list, thread count, shard count or max_step_seconds,
  // Error(Cuda) for an unusable device, Error(Budget) for a trial forward pass past the step
  // time limit.
  Trainer(const Task& task, const TrainerOptions& options);
  ~Trainer();
  Trainer(const Trainer&) = delete;
  Trainer& operator=(const Trainer&) = delete;

  // What runs the task. device is the primary's, "cpu" or "cuda:N" (no GPU name: reading it
  // would take CUDA headers that a CPU-only LibTorch does not ship); shards is S.
  RuntimeInfo runtime() const;
  std::int64_t train_samples() const;
  std::int64_t steps_per_epoch() const;
  std::int64_t total_steps() const;

  // The full training state after `step` steps as named tensors: "param.<name>",
  // "buffer.<name>", "optim.<param name>.<slot>"; metadata holds the step.
  checkpoint::Checkpoint state(std::int64_t step) const;
  // Replaces the training state with a checkpoint (the inverse of state()). Throws
  // Error(Input) if names, dtypes or shapes do not match this task's model and optimizer.
  void load_state(const checkpoint::Checkpoint& state);

  // Trains from the state after `from_step` to the last step, calling the hooks. Enforces
  // the task's budgets and the step time limit (Error(Budget)) and stops on a non-finite loss or
  // gradient (Error(Input)).
  // on_checkpoint also fires for step `from_step` when it is 0 (the initialisation).
  // Returns the last step trained: the total, or less when should_stop asked to stop.
  std::int64_t train(std::int64_t from_step, const TrainHooks& hooks);

  // Runs the given steps from the current state with their recorded indices and learning
  // rates; returns each step's loss. The state afterwards is what state() returns. Throws
  // Error(Input), before running any step, for a record whose batch size or sample indices do
  // not fit the task; Error(Budget) for a step past the step time limit, and between steps once
  // the replays have taken longer than TrainerOptions::max_replay_seconds (then before running
  // any step of a later call).
  std::vector<float> replay(std::span<const StepRecord> steps);

  // Runs the forward and backward pass of one recorded step on the current state without
  // updating it, and returns, in the order they were computed, each top-level module's
  // output, the loss, then each trainable parameter's gradient before clipping. A model
  // without named modules (TorchScript) traces as one module, "forward". bf16 values (under
  // autocast) come widened to fp32, which is exact. With S > 1 shards the module outputs
  // come shard by shard, named "<module> [shard s]", and the loss and gradients are the
  // step's combined ones. Throws like replay().
  std::vector<LayerTrace> trace_step(const StepRecord& record);

  struct Evaluation {
    // In [0, 1]: the share of images classified right or, for a gpt, of next tokens predicted
    // right (argmax) at every position.
    double accuracy = 0.0;
    // The mean cross-entropy, per image or, for a gpt, per predicted token (nats;
    // ln(vocab_size) is guessing).
    double loss = 0.0;
  };
  // The current model on the held-out test set, in one pass over it. Throws Error(Budget) for
  // an evaluation batch past the step time limit, and between batches once the replay budget
  // (TrainerOptions::max_replay_seconds) is spent.
  Evaluation evaluate();

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace solver::train
