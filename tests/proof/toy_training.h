// A tiny deterministic "training" in plain C++ for the proof tests: one F32 parameter vector
// (param.w) pulled towards per-sample targets by gradient descent, plus an I64 step counter
// that stands for optimizer state. It follows the real contract (data order and learning
// rates from the task, state checkpointed through BundleWriter, replay from any checkpoint),
// so real bundles can be written and verified without torch.
#pragma once

#include <cstdint>
#include <filesystem>
#include <optional>
#include <span>

#include "checkpoint/safetensors.h"
#include "common/records.h"
#include "common/task.h"
#include "proof/bundle_writer.h"
#include "common/keys.h"
#include "proof/verify.h"

namespace solver::test {

inline constexpr std::int64_t kToySamples = 64;

// 23 steps of batch 8 over 64 samples (3 epochs, the last cut short), a checkpoint every 5
// steps: checkpoints 0, 5, 10, 15, 20, 23 (a partial last interval). Cosine schedule with warm-up.
Task toy_task(std::uint64_t seed = 7, double lr = 0.1);
RuntimeInfo toy_runtime(int threads = 1);

checkpoint::Checkpoint toy_initial_state(std::uint64_t seed);
// One step on `state` with the batch's samples; returns the batch's loss before the update.
float toy_step(checkpoint::Checkpoint& state, std::span<const std::uint32_t> indices, double lr);
// The toy's stand-in for a test accuracy: the share of w's elements that are not negative.
double toy_test_accuracy(const checkpoint::Checkpoint& state);

struct ToyRun {
  bool resume = false;
  std::optional<std::int64_t> crash_after_step;  // destroy the writer without finish() after this step
  RuntimeInfo runtime = toy_runtime();
};

// Trains the toy task into a bundle in `dir`. Returns the manifest, or nullopt after a crash.
std::optional<proof::Manifest> write_toy_bundle(const std::filesystem::path& dir, const Task& task,
                                                const SigningKey& key, const ToyRun& run = {});

// The honest replayer of the toy training. Counts the runs of steps, so tests can tell a bundle
// was rejected before any replay.
class ToyReplayer final : public proof::Replayer {
 public:
  ToyReplayer(const Task& task, RuntimeInfo runtime, int* replays)
      : task_(task), runtime_(std::move(runtime)), replays_(replays), state_(toy_initial_state(task.seed)) {}
  RuntimeInfo runtime() const override { return runtime_; }
  std::int64_t train_samples() const override { return kToySamples; }
  checkpoint::Checkpoint initial_state() override { return toy_initial_state(task_.seed); }
  void load_state(const checkpoint::Checkpoint& state) override { state_ = state; }
  std::vector<float> run_steps(std::span<const StepRecord> steps) override;
  checkpoint::Checkpoint state(std::int64_t) const override { return state_; }
  double test_accuracy() override { return toy_test_accuracy(state_); }
  // The toy has no layers to trace.
  std::vector<checkpoint::Tensor> trace_step(const StepRecord&) override { return {}; }

 private:
  Task task_;
  RuntimeInfo runtime_;
  int* replays_;
  checkpoint::Checkpoint state_;
};

proof::ReplayerFactory toy_replayer_factory(int* replays, RuntimeInfo runtime = toy_runtime());

}  // namespace solver::test
