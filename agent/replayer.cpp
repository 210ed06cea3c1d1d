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
  void load_state(const checkpoint::Checkpoint& state) override { trainer_.load_state(state); }
  std::vector<float> run_steps(std::span<const StepRecord> steps) override { return trainer_.replay(steps); }
  checkpoint::Checkpoint state(std::int64_t step) const override { return trainer_.state(step); }
  double test_accuracy() override { return trainer_.evaluate().accuracy; }

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
  checkpoint::Checkpoint initial_state_;
};

}  // namespace

proof::ReplayerFactory trainer_replayer_factory(StuckStepHandler on_stuck_step) {
  return [on_stuck_step = std::move(on_stuck_step)](const Task& task,
                                                    const proof::ReplaySetting& setting) -> std::unique_ptr<proof::Replayer> {
    // The one place a replay's budget comes from: the task's (docs/bundle-format.md, "Replay budget").
    return std::make_unique<TrainerReplayer>(task, train::TrainerOptions{.device = setting.device,
                                                                         .threads = setting.threads,
                                                                         .shards = setting.shards,
                                                                         .max_replay_seconds = train::replay_budget_seconds(task.budget),
                                                                         .on_stuck_step = on_stuck_step});
  };
}

}  // namespace solver::agent
