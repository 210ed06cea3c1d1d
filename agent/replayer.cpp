#include "agent/replayer.h"

#include "train/trainer.h"

namespace solver::agent {
namespace {

class TrainerReplayer final : public proof::Replayer {
 public:
  TrainerReplayer(const Task& task, const train::TrainerOptions& options)
      : trainer_(task, options), initial_state_(trainer_.state(0)) {}

  RuntimeInfo runtime() const override { return trainer_.runtime(); }
  std::int64_t train_samples() const override { return trainer_.train_samples(); }
  // Captured before any replay, so it is the initialisation the task seed gives.
  checkpoint::Checkpoint initial_state() override { return initial_state_; }

  Result replay(const checkpoint::Checkpoint& start, std::span<const StepRecord> steps) override {
    trainer_.load_state(start);
    Result result;
    result.losses = trainer_.replay(steps);
    result.state = trainer_.state(steps.empty() ? 0 : steps.back().step);
    return result;
  }

  double test_accuracy(const checkpoint::Checkpoint& state) override {
    trainer_.load_state(state);
    return trainer_.evaluate().accuracy;
  }

 private:
  train::Trainer trainer_;
  checkpoint::Checkpoint initial_state_;
};

class TrainerStepReplayer final : public proof::StepReplayer {
 public:
  TrainerStepReplayer(const Task& task, const train::TrainerOptions& options) : trainer_(task, options) {}

  RuntimeInfo runtime() const override { return trainer_.runtime(); }
  void load_state(const checkpoint::Checkpoint& state) override { trainer_.load_state(state); }
  float run_step(const StepRecord& record) override { return trainer_.replay(std::span(&record, 1)).front(); }
  checkpoint::Checkpoint state(std::int64_t step) const override { return trainer_.state(step); }

  std::vector<checkpoint::Tensor> trace_step(const StepRecord& record) override {
    std::vector<checkpoint::Tensor> trace;
    for (train::LayerTrace& layer : trainer_.trace_step(record)) {
      layer.value.name = layer.kind == "loss" ? layer.kind : layer.kind + " " + layer.value.name;
      trace.push_back(std::move(layer.value));
    }
    return trace;
  }

 private:
  train::Trainer trainer_;
};

}  // namespace

proof::StepReplayerFactory trainer_step_replayer_factory() {
  return [](const Task& task, const std::string& device, int threads, int shards) -> std::unique_ptr<proof::StepReplayer> {
    return std::make_unique<TrainerStepReplayer>(
        task, train::TrainerOptions{.device = device, .threads = threads, .shards = shards, .on_stuck_step = end_process_for_stuck_step});
  };
}

proof::ReplayerFactory trainer_replayer_factory(std::string device, StuckStepHandler on_stuck_step) {
  return [device = std::move(device), on_stuck_step = std::move(on_stuck_step)](
             const Task& task, int threads, int shards) -> std::unique_ptr<proof::Replayer> {
    // The one place a replay's budget comes from: the task's (docs/bundle-format.md, "Replay budget").
    return std::make_unique<TrainerReplayer>(task, train::TrainerOptions{.device = device,
                                                                         .threads = threads,
                                                                         .shards = shards,
                                                                         .max_replay_seconds = train::replay_budget_seconds(task.budget),
                                                                         .on_stuck_step = on_stuck_step});
  };
}

}  // namespace solver::agent
