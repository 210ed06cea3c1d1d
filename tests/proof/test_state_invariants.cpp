// The invariants a checkpoint's optimizer state must keep (proof/detail/state_invariants.h),
// on Adam states computed the way the trainer computes them (float32 moments, a clipped
// gradient), then rewritten the ways a forger would: each rewrite breaks a named bound.
#include <catch2/catch.hpp>

#include <cmath>
#include <cstring>
#include <limits>
#include <random>

#include "proof/detail/state_invariants.h"
#include "proof/state_distance.h"
#include "tests/proof/toy_training.h"

namespace solver::proof {
namespace {

using Catch::Matchers::Contains;

constexpr std::size_t kWidth = 16;
constexpr double kClip = 1.0;

Task adam_task() {
  Task task = test::toy_task();
  task.training.optimizer.kind = OptimizerKind::AdamW;
  task.training.optimizer.beta1 = 0.9;
  task.training.optimizer.beta2 = 0.999;
  task.training.optimizer.weight_decay = 0.01;
  task.training.grad_clip_norm = kClip;
  return task;
}

checkpoint::Tensor f32(const std::string& name, const std::vector<float>& values) {
  checkpoint::Tensor tensor{name, checkpoint::DType::F32, {static_cast<std::int64_t>(values.size())},
                            std::vector<std::byte>(values.size() * sizeof(float))};
  std::memcpy(tensor.data.data(), values.data(), tensor.data.size());
  return tensor;
}

std::vector<float> values_of(const checkpoint::Checkpoint& state, const std::string& name) {
  const auto values = state.find(name)->as_f32();
  return {values.begin(), values.end()};
}

// AdamW as train/optimizer.cpp runs it, on gradients of norm up to the clip, with `constant`
// the share of each gradient that repeats every step (a steady descent direction).
class AdamRun {
 public:
  explicit AdamRun(double constant = 0.0) : constant_(constant) {}

  void steps(int count) {
    for (int i = 0; i < count; ++i) step();
  }

  checkpoint::Checkpoint state() const {
    checkpoint::Checkpoint state;
    state.tensors = {f32("param.w", parameter_), f32("optim.w.exp_avg", m_), f32("optim.w.exp_avg_sq", v_)};
    state.metadata = {{"step", std::to_string(step_)}, {"optimizer_step", std::to_string(step_)}};
    return state;
  }
  std::int64_t step_count() const { return step_; }

 private:
  void step() {
    ++step_;
    std::vector<float> gradient(kWidth);
    double norm = 0.0;
    for (std::size_t i = 0; i < kWidth; ++i) {
      gradient[i] = static_cast<float>(constant_ * (i % 2 == 0 ? 1.0 : -0.5) + (1.0 - constant_) * noise_(random_));
      norm += static_cast<double>(gradient[i]) * gradient[i];
    }
    norm = std::sqrt(norm);
    const double coefficient = std::min(1.0, kClip / (norm + 1e-6));
    const double lr = 1e-3, b1 = 0.9, b2 = 0.999, eps = 1e-8, decay = 0.01;
    for (std::size_t i = 0; i < kWidth; ++i) {
      const float g = gradient[i] * static_cast<float>(coefficient);
      parameter_[i] *= static_cast<float>(1.0 - lr * decay);
      m_[i] = m_[i] * static_cast<float>(b1) + g * static_cast<float>(1.0 - b1);
      v_[i] = v_[i] * static_cast<float>(b2) + g * g * static_cast<float>(1.0 - b2);
      const double correction1 = 1.0 - std::pow(b1, static_cast<double>(step_));
      const double correction2 = 1.0 - std::pow(b2, static_cast<double>(step_));
      parameter_[i] -= static_cast<float>(lr / correction1) * m_[i] / (std::sqrt(v_[i]) / static_cast<float>(std::sqrt(correction2)) + static_cast<float>(eps));
    }
  }

  double constant_;
  std::int64_t step_ = 0;
  std::mt19937 random_{42};
  std::normal_distribution<double> noise_{0.0, 1.0};
  std::vector<float> parameter_ = std::vector<float>(kWidth, 0.1f);
  std::vector<float> m_ = std::vector<float>(kWidth, 0.0f);
  std::vector<float> v_ = std::vector<float>(kWidth, 0.0f);
};

std::vector<std::string> check(const checkpoint::Checkpoint& state, std::int64_t step,
                               const checkpoint::Checkpoint* previous = nullptr, std::int64_t previous_step = 0) {
  std::vector<std::string> failures;
  detail::check_state_invariants(adam_task(), step, state, previous, previous_step, failures);
  return failures;
}

std::string joined(const std::vector<std::string>& failures) {
  std::string text;
  for (const std::string& failure : failures) text += failure + "\n";
  return text;
}

void scale(checkpoint::Checkpoint& state, const std::string& name, float factor) {
  std::vector<float> values = values_of(state, name);
  for (float& value : values) value *= factor;
  for (checkpoint::Tensor& tensor : state.tensors)
    if (tensor.name == name) tensor = f32(name, values);
}

TEST_CASE("Honest Adam states keep every invariant, at step 1 where the bounds are tight and later", "[proof]") {
  for (const double constant : {0.0, 0.5, 1.0}) {  // noise, a mix, and a constant gradient that meets the bounds
    AdamRun run(constant);
    run.steps(1);
    checkpoint::Checkpoint previous = run.state();
    INFO("constant share " << constant);
    CHECK(joined(check(previous, 1)).empty());
    for (int window : {1, 5, 100, 1000}) {
      run.steps(window);
      const checkpoint::Checkpoint current = run.state();
      CHECK(joined(check(current, run.step_count(), &previous, run.step_count() - window)).empty());
      previous = current;
    }
  }
}

TEST_CASE("A second moment scaled down at a checkpoint breaks its decay bound", "[proof]") {
  AdamRun run;
  run.steps(50);
  const checkpoint::Checkpoint previous = run.state();
  run.steps(10);
  checkpoint::Checkpoint forged = run.state();
  scale(forged, "optim.w.exp_avg_sq", 0.5f);
  const std::string failures = joined(check(forged, 60, &previous, 50));
  CHECK_THAT(failures, Contains("invariant at step 60: second moment decays no faster than beta2: optim.w.exp_avg_sq["));
}

TEST_CASE("A second moment scaled up at a checkpoint breaks the clip's bound", "[proof]") {
  AdamRun run;
  run.steps(2000);
  checkpoint::Checkpoint forged = run.state();
  scale(forged, "optim.w.exp_avg_sq", 1e4f);  // the next steps would barely move the parameters
  CHECK_THAT(joined(check(forged, 2000)), Contains("second moment within the clip: optim.w.exp_avg_sq["));
}

TEST_CASE("A first moment inflated beyond what its second allows breaks Cauchy-Schwarz", "[proof]") {
  AdamRun run;
  run.steps(200);
  const checkpoint::Checkpoint previous = run.state();
  run.steps(5);
  checkpoint::Checkpoint forged = run.state();
  scale(forged, "optim.w.exp_avg", 50.0f);  // steers later steps towards a chosen model
  const std::string failures = joined(check(forged, 205, &previous, 200));
  CHECK_THAT(failures, Contains("first moment within the second (Cauchy-Schwarz): optim.w.exp_avg["));
  CHECK_THAT(failures, Contains("first moment's change within the second's"));
}

TEST_CASE("A parameter that moved while its moments froze, wrong step counters and non-finite values are caught", "[proof]") {
  AdamRun run;
  run.steps(30);
  const checkpoint::Checkpoint previous = run.state();
  checkpoint::Checkpoint frozen = previous;  // the optimizer state copied, the parameters moved, 10 steps claimed
  scale(frozen, "param.w", 0.99f);
  frozen.metadata = {{"step", "40"}, {"optimizer_step", "40"}};
  CHECK_THAT(joined(check(frozen, 40, &previous, 30)), Contains("a parameter moves only with its optimizer state: param.w"));

  checkpoint::Checkpoint counters = previous;
  counters.metadata["optimizer_step"] = "29";
  CHECK_THAT(joined(check(counters, 30)), Contains("invariant at step 30: step counters: metadata optimizer_step is \"29\", expected 30"));

  checkpoint::Checkpoint infinite = previous;
  std::vector<float> values = values_of(infinite, "param.w");
  values[3] = std::numeric_limits<float>::infinity();
  for (checkpoint::Tensor& tensor : infinite.tensors)
    if (tensor.name == "param.w") tensor = f32("param.w", values);
  CHECK_THAT(joined(check(infinite, 30)), Contains("finite values: param.w[3] is inf"));
}

TEST_CASE("State parts: each optimizer slot kind is a part, and a layout must match name, dtype, shape and metadata keys", "[proof]") {
  CHECK(state_part("param.fc1.weight") == "param");
  CHECK(state_part("buffer.bn.running_mean") == "buffer");
  CHECK(state_part("optim.fc1.weight.exp_avg_sq") == "optim.exp_avg_sq");
  CHECK(state_part("optim.fc1.weight.momentum_buffer") == "optim.momentum_buffer");

  AdamRun run;
  run.steps(3);
  const checkpoint::Checkpoint expected = run.state();
  CHECK_FALSE(layout_difference(expected, expected));
  checkpoint::Checkpoint extra = expected;
  extra.tensors.push_back(f32("param.hidden", {1.0f}));
  CHECK(*layout_difference(expected, extra) == "tensor param.hidden is not part of the task's state");
  checkpoint::Checkpoint reshaped = expected;
  reshaped.tensors[1].shape = {2, 8};
  CHECK(*layout_difference(expected, reshaped) == "tensor optim.w.exp_avg: shape [2,8] instead of [16]");
  checkpoint::Checkpoint metadata = expected;
  metadata.metadata["note"] = "x";
  CHECK(*layout_difference(expected, metadata) == "metadata entry note is not part of the task's state");

  const PartDistances distances = part_distances(expected, run.state());
  CHECK(distances.size() == 3);
  CHECK(distances.at("optim.exp_avg_sq").l2 == 0.0);
  // An honest file of this state fits the bound; one with an extra 1 MB tensor does not.
  CHECK(checkpoint::encode_safetensors(expected).size() <= safetensors_size_bound(expected));
  checkpoint::Checkpoint padded = expected;
  padded.tensors.push_back(f32("param.padding", std::vector<float>(1 << 18)));
  CHECK(checkpoint::encode_safetensors(padded).size() > safetensors_size_bound(expected));
}

}  // namespace
}  // namespace solver::proof
