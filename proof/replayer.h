// Replaying training, for the verifier (verify.h), the profiler (profile.h) and the referee
// (dispute.h): proof/ decides what to replay and judges; the replay itself is train/'s, behind
// this interface, implemented over train::Trainer by the agent (agent/replayer.h).
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "checkpoint/safetensors.h"
#include "common/records.h"
#include "common/task.h"

namespace solver::proof {

// Where and how a replay runs.
struct ReplaySetting {
  std::string device = "cpu";
  int threads = 1;
  int shards = 1;  // data-parallel shards: a bundle's own count, since another splits each step's batch differently
};

// A task's model, data and optimizer, holding one training state that can be loaded, stepped,
// read and traced.
class Replayer {
 public:
  virtual ~Replayer() = default;
  virtual RuntimeInfo runtime() const = 0;
  virtual std::int64_t train_samples() const = 0;
  // The step-0 state recomputed from the task seed, whatever was loaded or run since.
  virtual checkpoint::Checkpoint initial_state() = 0;
  virtual void load_state(const checkpoint::Checkpoint& state) = 0;
  // Runs `steps` on the current state with their recorded indices and learning rates; returns
  // each step's loss.
  virtual std::vector<float> run_steps(std::span<const StepRecord> steps) = 0;
  // The current state as the checkpoint of `step` (same tensor names as a bundle's).
  virtual checkpoint::Checkpoint state(std::int64_t step) const = 0;
  // The share of the held-out test set that the current state's model gets right, measured as
  // the solver measures its outcome's test_accuracy.
  virtual double test_accuracy() = 0;
  // The forward and backward pass of `record` on the current state, which it leaves as it
  // was: module outputs in forward order, the loss, then parameter gradients, each a CPU tensor
  // named "output <module>", "loss" or "gradient <parameter>".
  virtual std::vector<checkpoint::Tensor> trace_step(const StepRecord& record) = 0;

  // Loads `start`, runs `steps`, and returns the resulting state and each step's loss.
  struct Result {
    checkpoint::Checkpoint state;
    std::vector<float> losses;
  };
  Result replay(const checkpoint::Checkpoint& start, std::span<const StepRecord> steps) {
    load_state(start);
    Result result;
    result.losses = run_steps(steps);
    result.state = state(steps.empty() ? 0 : steps.back().step);
    return result;
  }
};

// Builds a replayer for a task (loading its model and data) with a setting.
using ReplayerFactory = std::function<std::unique_ptr<Replayer>(const Task& task, const ReplaySetting& setting)>;

}  // namespace solver::proof
