// A replay that runs out of its budget is a verdict, not an error: verify_bundle turns the
// replayer's Error(Budget) (train::Trainer's between steps, docs/bundle-format.md "Replay
// budget") into a rejection naming the budget, for the segment that spent it and for every
// later one, which the replayer refuses to run.
#include <catch2/catch.hpp>

#include "common/error.h"
#include "common/keys.h"
#include "proof/verify.h"
#include "tests/proof/toy_training.h"
#include "tests/test_support.h"

namespace solver::proof {
namespace {

// The toy replayer with a budget of `allowed` runs of steps: after them, each run throws what a
// Trainer whose replay budget is spent throws.
class BudgetedReplayer final : public Replayer {
 public:
  BudgetedReplayer(std::unique_ptr<Replayer> inner, int allowed) : inner_(std::move(inner)), allowed_(allowed) {}
  RuntimeInfo runtime() const override { return inner_->runtime(); }
  std::int64_t train_samples() const override { return inner_->train_samples(); }
  checkpoint::Checkpoint initial_state() override { return inner_->initial_state(); }
  void load_state(const checkpoint::Checkpoint& state) override { inner_->load_state(state); }
  std::vector<float> run_steps(std::span<const StepRecord> steps) override {
    if (replays_++ >= allowed_)
      throw Error(ErrorKind::Budget, "replay budget exceeded before step " + std::to_string(steps.front().step) +
                                         ": the replays took 6.20 s, over the budget of 6 s; not run");
    return inner_->run_steps(steps);
  }
  checkpoint::Checkpoint state(std::int64_t step) const override { return inner_->state(step); }
  double test_accuracy() override { return inner_->test_accuracy(); }
  std::vector<checkpoint::Tensor> trace_step(const StepRecord& record) override { return inner_->trace_step(record); }

 private:
  std::unique_ptr<Replayer> inner_;
  int allowed_;
  int replays_ = 0;
};

}  // namespace

TEST_CASE("A replay over its budget rejects the bundle naming the budget, and no later segment is replayed", "[proof]") {
  const test::ScratchDir scratch("replay-budget");
  const SigningKey solver = SigningKey::generate();
  REQUIRE(test::write_toy_bundle(scratch.path(), test::toy_task(), solver));
  int replays = 0;
  const ReplayerFactory toy = test::toy_replayer_factory(&replays);
  const ReplayerFactory budgeted = [&](const Task& task, const ReplaySetting& setting) -> std::unique_ptr<Replayer> {
    return std::make_unique<BudgetedReplayer>(toy(task, setting), 2);
  };
  VerifyOptions options;
  options.selection = SegmentSelection::All;

  const Verdict verdict = verify_bundle(scratch.path(), options, budgeted);
  CHECK_FALSE(verdict.accepted);
  CHECK(replays == 2);
  // The toy run's 5 segments replayed in order: 11-15 is refused, and the verifier stops there.
  REQUIRE(verdict.failures.size() == 1);
  CHECK(verdict.failures[0] ==
        "segment steps 11-15: replay failed: replay budget exceeded before step 11: the replays took 6.20 s, over the "
        "budget of 6 s; not run");
  REQUIRE(verdict.segments.size() == 3);
  CHECK_FALSE(verdict.segments.back().replayed);
  CHECK(verdict.replayed_fraction == Approx(10.0 / 23.0));
}

}  // namespace solver::proof
