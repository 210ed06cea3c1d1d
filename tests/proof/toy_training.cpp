// See toy_training.h. Every operation is plain float arithmetic in a fixed order, so a replay
// on this machine reproduces a run bit for bit, as the real trainer must on the same runtime.
#include "tests/proof/toy_training.h"

#include <nlohmann/json.hpp>

#include <algorithm>
#include <cstring>
#include <stdexcept>
#include <string>

#include "common/data_order.h"

namespace solver::test {
namespace {

constexpr std::int64_t kWidth = 8;

float target(std::uint32_t sample, std::int64_t i) {
  return static_cast<float>((sample * 7 + static_cast<std::uint32_t>(i) * 3) % 11) / 11.0f - 0.5f;
}

std::byte* data_of(checkpoint::Checkpoint& state, std::string_view name) {
  for (checkpoint::Tensor& tensor : state.tensors)
    if (tensor.name == name) return tensor.data.data();
  throw std::runtime_error("toy state has no tensor " + std::string(name));
}

}  // namespace

Task toy_task(std::uint64_t seed, double lr) {
  const std::string fake_hash(64, '0');  // the toy never reads its dataset
  const nlohmann::json file = {{"location", "/nonexistent/toy.idx"}, {"sha256", fake_hash}};
  return parse_task({{"id", "toy"},
                     {"seed", seed},
                     {"model", {{"kind", "mlp"}, {"hidden", {4}}}},
                     {"dataset",
                      {{"format", "idx"},
                       {"train_images", file},
                       {"train_labels", file},
                       {"test_images", file},
                       {"test_labels", file}}},
                     {"training",
                      {{"optimizer", {{"kind", "sgd"}, {"lr", lr}}},
                       {"schedule", {{"kind", "cosine"}, {"warmup_steps", 2}, {"min_lr", 0.01}}},
                       {"batch_size", 8},
                       {"steps", 23}}},
                     {"proof", {{"checkpoint_every", 5}}}},
                    "/");
}

RuntimeInfo toy_runtime(int threads) { return RuntimeInfo{"0.1.0-test", "none", "cpu", threads, true}; }

checkpoint::Checkpoint toy_initial_state(std::uint64_t seed) {
  checkpoint::Checkpoint state;
  checkpoint::Tensor w{"param.w", checkpoint::DType::F32, {kWidth}, std::vector<std::byte>(kWidth * sizeof(float))};
  for (std::int64_t i = 0; i < kWidth; ++i) {
    const float value = static_cast<float>(derive_seed(seed, kStreamInit, static_cast<std::uint64_t>(i)) >> 40) / 16777216.0f - 0.5f;
    std::memcpy(w.data.data() + i * sizeof(float), &value, sizeof value);
  }
  checkpoint::Tensor steps{"optim.step", checkpoint::DType::I64, {1}, std::vector<std::byte>(sizeof(std::int64_t))};
  state.tensors = {std::move(w), std::move(steps)};
  state.metadata = {{"step", "0"}, {"optimizer_step", "0"}};
  return state;
}

float toy_step(checkpoint::Checkpoint& state, std::span<const std::uint32_t> indices, double lr) {
  float* w = reinterpret_cast<float*>(data_of(state, "param.w"));
  const float batch = static_cast<float>(indices.size());
  float loss = 0.0f;
  for (std::int64_t i = 0; i < kWidth; ++i) {
    float gradient = 0.0f;
    for (const std::uint32_t sample : indices) {
      const float error = w[i] - target(sample, i);
      gradient += error / batch;
      loss += 0.5f * error * error / (batch * kWidth);
    }
    w[i] -= static_cast<float>(lr) * gradient;
  }
  std::int64_t count = 0;
  std::byte* counter = data_of(state, "optim.step");
  std::memcpy(&count, counter, sizeof count);
  ++count;
  std::memcpy(counter, &count, sizeof count);
  state.metadata["step"] = state.metadata["optimizer_step"] = std::to_string(count);
  return loss;
}

std::optional<proof::Manifest> write_toy_bundle(const std::filesystem::path& dir, const Task& task,
                                                const SigningKey& key, const ToyRun& run) {
  const std::int64_t total = total_steps(task, kToySamples);
  proof::BundleWriter writer(dir, task, key, proof::BundlePlan{run.runtime, kToySamples, kToySamples / 8, total}, run.resume);
  checkpoint::Checkpoint state = toy_initial_state(task.seed);
  std::int64_t step = 0;
  if (auto point = writer.resume_point()) {
    step = point->first;
    state = std::move(point->second);
  } else {
    writer.add_checkpoint(0, state, 0.0);
  }
  DataOrder order(task.seed, kToySamples, static_cast<std::uint32_t>(task.training.batch_size));
  float loss = 0.0f;
  while (step < total) {
    ++step;
    const std::span<const std::uint32_t> batch = order.batch(step);
    const double lr = learning_rate_at(task.training, step, total);
    loss = toy_step(state, batch, lr);
    writer.record_step(StepRecord{step, {batch.begin(), batch.end()}, loss, lr});
    // A toy clock: a second of training per step.
    if (step % task.checkpoint_every == 0 || step == total) writer.add_checkpoint(step, state, static_cast<double>(step));
    if (run.crash_after_step == step) return std::nullopt;
  }
  return writer.finish(proof::TrainOutcome{toy_test_accuracy(state), loss, 1.25});
}

std::vector<float> ToyReplayer::run_steps(std::span<const StepRecord> steps) {
  ++*replays_;
  std::vector<float> losses;
  for (const StepRecord& record : steps) losses.push_back(toy_step(state_, record.indices, record.lr));
  return losses;
}

double toy_test_accuracy(const checkpoint::Checkpoint& state) {
  const std::span<const float> w = state.find("param.w")->as_f32();
  return static_cast<double>(std::ranges::count_if(w, [](float value) { return value >= 0.0f; })) / static_cast<double>(w.size());
}

proof::ReplayerFactory toy_replayer_factory(int* replays, RuntimeInfo runtime) {
  return [replays, runtime](const Task& task, const proof::ReplaySetting&) -> std::unique_ptr<proof::Replayer> {
    return std::make_unique<ToyReplayer>(task, runtime, replays);
  };
}

}  // namespace solver::test
