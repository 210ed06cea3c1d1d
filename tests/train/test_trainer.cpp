// Trainer tests [torch]: the reproducibility contract (same task = same bits; a segment
// replayed from its start checkpoint ends on the recorded end checkpoint, bit for bit; resuming
// equals not stopping), state round trips and their validation, budgets, data files, devices,
// TorchScript models, the gpt on token files, bf16 autocast, batches prefetched a step ahead,
// and our optimizers against PyTorch's torch.optim (tests/python/reference_step.py), and data-parallel shards.
// Tasks are tiny (tens of steps on the real Fashion-MNIST) so the suite runs in seconds.
#include <catch2/catch.hpp>
#include <nlohmann/json.hpp>

#include <algorithm>
#include <bit>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <map>
#include <string>
#include <thread>
#include <vector>

#include "common/error.h"
#include "common/files.h"
#include "common/sha256.h"
#include "common/task.h"
#include "tests/test_support.h"
#include "train/trainer.h"

namespace {

using namespace solver;
using json = nlohmann::json;
using solver::test::ScratchDir;

const train::TrainerOptions kTwoThreadsOnCpu{"cpu", 2};

// A 20-step MLP task on the real Fashion-MNIST (the example task's files and hashes).
json tiny_task_json() {
  json task = json::parse(read_file(test::source_dir() / "configs/tasks/fashion-mnist-mlp.json"));
  task["id"] = "tiny-mlp";
  task["model"] = {{"kind", "mlp"}, {"hidden", {32}}};
  task["training"] = {
      {"optimizer", {{"kind", "adamw"}, {"lr", 0.003}, {"weight_decay", 0.01}}},
      {"schedule", {{"kind", "cosine"}, {"warmup_steps", 5}, {"min_lr", 0.0001}}},
      {"batch_size", 32},
      {"steps", 20},
      {"grad_clip_norm", 1.0}};
  task["proof"] = {{"checkpoint_every", 10}};
  task.erase("budget");
  return task;
}

Task parsed(const json& task) { return parse_task(task, test::source_dir()); }

struct RecordedRun {
  std::vector<StepRecord> records;
  std::map<std::int64_t, checkpoint::Checkpoint> checkpoints;  // by step
};

RecordedRun train_recording(train::Trainer& trainer, std::int64_t from_step = 0) {
  RecordedRun run;
  train::TrainHooks hooks;
  hooks.on_step = [&](StepRecord&& record) { run.records.push_back(std::move(record)); };
  hooks.on_checkpoint = [&](std::int64_t step, checkpoint::Checkpoint&& state) { run.checkpoints.emplace(step, std::move(state)); };
  trainer.train(from_step, hooks);
  return run;
}

const checkpoint::Tensor& tensor_named(const checkpoint::Checkpoint& state, const std::string& name) {
  const auto found = std::find_if(state.tensors.begin(), state.tensors.end(),
                                  [&](const checkpoint::Tensor& tensor) { return tensor.name == name; });
  if (found == state.tensors.end()) FAIL("checkpoint has no tensor " << name);
  return *found;
}

std::vector<float> floats_of(const checkpoint::Tensor& tensor) {
  REQUIRE(tensor.dtype == checkpoint::DType::F32);
  std::vector<float> values(tensor.data.size() / sizeof(float));
  std::memcpy(values.data(), tensor.data.data(), values.size() * sizeof(float));
  return values;
}

void require_bitwise_equal(const checkpoint::Checkpoint& actual, const checkpoint::Checkpoint& expected) {
  REQUIRE(actual.tensors.size() == expected.tensors.size());
  for (std::size_t i = 0; i < actual.tensors.size(); ++i) {
    INFO("tensor " << expected.tensors[i].name);
    REQUIRE(actual.tensors[i].name == expected.tensors[i].name);
    CHECK(actual.tensors[i].dtype == expected.tensors[i].dtype);
    CHECK(actual.tensors[i].shape == expected.tensors[i].shape);
    CHECK(actual.tensors[i].data == expected.tensors[i].data);
  }
  CHECK(actual.metadata == expected.metadata);
}

// Runs `body` and requires a solver::Error of `kind` whose message contains every fragment.
template <typename Body>
void require_error(Body&& body, ErrorKind kind, std::initializer_list<std::string> fragments) {
  try {
    body();
  } catch (const Error& error) {
    INFO("message: " << error.what());
    CHECK(error.kind() == kind);
    for (const std::string& fragment : fragments) CHECK_THAT(error.what(), Catch::Contains(fragment));
    return;
  }
  FAIL("expected a solver::Error containing \"" << *fragments.begin() << "\"");
}

json file_ref(const std::filesystem::path& path) {
  return {{"location", path.string()}, {"sha256", sha256_file_hex(path)}};
}

std::string big_endian_u32(std::uint32_t value) {
  return {static_cast<char>(value >> 24), static_cast<char>(value >> 16), static_cast<char>(value >> 8),
          static_cast<char>(value)};
}

// A plain (not gzip) IDX dataset of `count` 8x8 images whose label is i % 4.
struct TinyIdx {
  std::filesystem::path images, labels;
};
TinyIdx write_tiny_idx(const ScratchDir& dir, std::uint32_t count) {
  std::string images = big_endian_u32(0x803) + big_endian_u32(count) + big_endian_u32(8) + big_endian_u32(8);
  std::string labels = big_endian_u32(0x801) + big_endian_u32(count);
  for (std::uint32_t i = 0; i < count; ++i) {
    for (int pixel = 0; pixel < 64; ++pixel) images.push_back(static_cast<char>((i * 37 + pixel * (i % 4 + 1)) % 256));
    labels.push_back(static_cast<char>(i % 4));
  }
  TinyIdx files{dir / "images.idx", dir / "labels.idx"};
  test::write_text(files.images, images);
  test::write_text(files.labels, labels);
  return files;
}

json tiny_idx_task_json(const TinyIdx& files) {
  json task = tiny_task_json();
  task["dataset"]["train_images"] = file_ref(files.images);
  task["dataset"]["train_labels"] = file_ref(files.labels);
  task["dataset"]["test_images"] = file_ref(files.images);
  task["dataset"]["test_labels"] = file_ref(files.labels);
  task["training"]["batch_size"] = 8;
  task["training"]["steps"] = 4;
  return task;
}

}  // namespace

TEST_CASE("Two trainers built from the same task start bitwise equal, and another seed starts elsewhere", "[torch]") {
  const json task = tiny_task_json();
  train::Trainer first(parsed(task), kTwoThreadsOnCpu);
  train::Trainer second(parsed(task), kTwoThreadsOnCpu);
  const checkpoint::Checkpoint initial = first.state(0);
  require_bitwise_equal(second.state(0), initial);

  CHECK(first.train_samples() == 60000);
  CHECK(first.steps_per_epoch() == 1875);
  CHECK(first.total_steps() == 20);
  CHECK(tensor_named(initial, "param.1.weight").shape == std::vector<std::int64_t>{32, 784});
  CHECK(tensor_named(initial, "param.3.bias").shape == std::vector<std::int64_t>{10});
  CHECK(floats_of(tensor_named(initial, "optim.1.weight.exp_avg_sq")) == std::vector<float>(32 * 784, 0.0f));
  CHECK(initial.metadata.at("step") == "0");
  CHECK(initial.metadata.at("optimizer_step") == "0");

  const RuntimeInfo runtime = first.runtime();
  CHECK(runtime.device == "cpu");
  CHECK(runtime.threads == 2);
  CHECK(runtime.deterministic);
  CHECK_FALSE(runtime.torch_version.empty());

  json other_seed = task;
  other_seed["seed"] = task["seed"].get<std::uint64_t>() + 1;
  train::Trainer third(parsed(other_seed), kTwoThreadsOnCpu);
  CHECK(tensor_named(third.state(0), "param.1.weight").data != tensor_named(initial, "param.1.weight").data);
}

TEST_CASE("Replaying a segment from its start checkpoint reproduces the end checkpoint and losses bitwise", "[torch]") {
  json task = tiny_task_json();
  SECTION("mlp with adamw, cosine schedule and clipping") {}
  SECTION("cnn with sgd, nesterov momentum and weight decay") {
    task["model"] = {{"kind", "cnn"}, {"channels", {4, 8}}};
    task["training"]["optimizer"] = {{"kind", "sgd"}, {"lr", 0.05}, {"momentum", 0.9}, {"nesterov", true}, {"weight_decay", 0.0005}};
    task["training"]["schedule"] = {{"kind", "step"}, {"step_size", 7}, {"gamma", 0.5}};
  }
  train::Trainer trainer(parsed(task), kTwoThreadsOnCpu);
  const RecordedRun run = train_recording(trainer);
  REQUIRE(run.records.size() == 20);
  REQUIRE(run.checkpoints.size() == 3);  // steps 0, 10 and 20
  CHECK(run.records[0].step == 1);
  CHECK(run.records[0].indices.size() == 32);
  CHECK(run.checkpoints.at(20).metadata.at("optimizer_step") == "20");
  CHECK(tensor_named(run.checkpoints.at(20), "param.3.weight").data != tensor_named(run.checkpoints.at(0), "param.3.weight").data);

  train::Trainer verifier(parsed(task), kTwoThreadsOnCpu);
  verifier.load_state(run.checkpoints.at(10));
  const std::vector<float> losses = verifier.replay(std::span(run.records).subspan(10, 10));
  require_bitwise_equal(verifier.state(20), run.checkpoints.at(20));
  REQUIRE(losses.size() == 10);
  for (std::size_t i = 0; i < losses.size(); ++i) CHECK(losses[i] == run.records[10 + i].loss);
}

TEST_CASE("With prefetching, replaying a whole run from step 0 gives its losses and weights bitwise", "[torch]") {
  const json task = tiny_task_json();
  // One thread leaves a core free on any machine with two, so the batches are gathered on the
  // background thread; two threads on a 2-core machine (CI) gather them inline.
  for (const train::TrainerOptions& options : {train::TrainerOptions{"cpu", 1}, kTwoThreadsOnCpu}) {
    INFO(options.threads << " training threads");
    train::Trainer trainer(parsed(task), options);
    const RecordedRun run = train_recording(trainer);
    REQUIRE(run.records.size() == 20);

    train::Trainer verifier(parsed(task), options);
    const std::vector<float> losses = verifier.replay(run.records);
    REQUIRE(losses.size() == run.records.size());
    for (std::size_t i = 0; i < losses.size(); ++i) CHECK(losses[i] == run.records[i].loss);
    require_bitwise_equal(verifier.state(20), run.checkpoints.at(20));
  }
}

TEST_CASE("train() stopped early drops its prefetched batch, and continuing ends bitwise where an uninterrupted run ends", "[torch]") {
  const json task = tiny_task_json();
  train::Trainer uninterrupted(parsed(task), kTwoThreadsOnCpu);
  const RecordedRun full = train_recording(uninterrupted);

  train::Trainer stopped(parsed(task), kTwoThreadsOnCpu);
  RecordedRun run;
  train::TrainHooks hooks;
  hooks.on_step = [&](StepRecord&& record) { run.records.push_back(std::move(record)); };
  hooks.on_checkpoint = [&](std::int64_t step, checkpoint::Checkpoint&& state) { run.checkpoints.emplace(step, std::move(state)); };
  hooks.should_stop = [&] { return run.records.size() == 7; };
  REQUIRE(stopped.train(0, hooks) == 7);
  hooks.should_stop = nullptr;
  REQUIRE(stopped.train(7, hooks) == 20);
  REQUIRE(run.records.size() == 20);
  for (std::size_t i = 0; i < run.records.size(); ++i) {
    CHECK(run.records[i].indices == full.records[i].indices);
    CHECK(run.records[i].loss == full.records[i].loss);
  }
  require_bitwise_equal(run.checkpoints.at(20), full.checkpoints.at(20));
}

TEST_CASE("replay checks every record before running any step", "[torch]") {
  const json task = tiny_task_json();
  train::Trainer trainer(parsed(task), kTwoThreadsOnCpu);
  const checkpoint::Checkpoint initial = trainer.state(0);
  std::vector<StepRecord> records{{1, std::vector<std::uint32_t>(32, 1), 0.0f, 0.001},
                                  {2, std::vector<std::uint32_t>(32, 2), 0.0f, 0.001}};
  records[1].indices[31] = 60000;
  require_error([&] { trainer.replay(records); }, ErrorKind::Input, {"replaying step 2: sample index 60000 is out of range"});
  require_bitwise_equal(trainer.state(0), initial);
}

TEST_CASE("bf16 autocast trains and replays bitwise, keeps fp32 weights, and ends near but not on the fp32 run", "[torch]") {
  json task = tiny_task_json();
  task["training"]["steps"] = 6;
  task["proof"]["checkpoint_every"] = 3;
  std::string label;
  SECTION("mlp") { label = "mlp"; }
  SECTION("cnn") {
    label = "cnn";
    task["model"] = {{"kind", "cnn"}, {"channels", {4, 8}}};
  }
  json mixed_task = task;
  mixed_task["training"]["precision"] = "bf16";

  train::Trainer mixed(parsed(mixed_task), kTwoThreadsOnCpu);
  const RecordedRun run = train_recording(mixed);
  REQUIRE(run.checkpoints.size() == 3);
  for (const checkpoint::Tensor& tensor : run.checkpoints.at(6).tensors) {
    INFO("tensor " << tensor.name);
    CHECK(tensor.dtype == checkpoint::DType::F32);
  }
  train::Trainer verifier(parsed(mixed_task), kTwoThreadsOnCpu);
  verifier.load_state(run.checkpoints.at(3));
  const std::vector<float> losses = verifier.replay(std::span(run.records).subspan(3, 3));
  require_bitwise_equal(verifier.state(6), run.checkpoints.at(6));
  for (std::size_t i = 0; i < losses.size(); ++i) CHECK(losses[i] == run.records[3 + i].loss);

  train::Trainer fp32(parsed(task), kTwoThreadsOnCpu);
  const RecordedRun reference = train_recording(fp32);
  require_bitwise_equal(run.checkpoints.at(0), reference.checkpoints.at(0));  // precision does not touch the initialisation
  // Same weights and batch at step 1, so the losses differ only by bf16 rounding (~3 significant digits).
  CHECK(run.records[0].loss != reference.records[0].loss);
  CHECK(std::abs(run.records[0].loss - reference.records[0].loss) < 0.01f * reference.records[0].loss);
  double difference = 0.0, update = 0.0;
  for (const checkpoint::Tensor& tensor : reference.checkpoints.at(6).tensors) {
    if (!tensor.name.starts_with("param.")) continue;
    const std::vector<float> ours = floats_of(tensor_named(run.checkpoints.at(6), tensor.name));
    const std::vector<float> theirs = floats_of(tensor);
    const std::vector<float> initial = floats_of(tensor_named(reference.checkpoints.at(0), tensor.name));
    for (std::size_t i = 0; i < ours.size(); ++i) {
      difference += std::pow(static_cast<double>(ours[i]) - theirs[i], 2);
      update += std::pow(static_cast<double>(theirs[i]) - initial[i], 2);
    }
  }
  std::printf("%s, 6 steps: |bf16 - fp32| / |fp32 update| = %.3g\n", label.c_str(), std::sqrt(difference / update));
  CHECK(difference > 0.0);
  // bf16 rounding perturbs the steps a little: the drift it causes stays well below the update.
  CHECK(std::sqrt(difference / update) < 0.5);

  const double accuracy = mixed.evaluate().accuracy;
  CHECK(accuracy > 0.1);
  CHECK(accuracy <= 1.0);
  CHECK(std::abs(mixed.evaluate().loss - fp32.evaluate().loss) < 0.1);
  // Outputs computed in bf16 come widened to fp32: their low 16 bits are zero.
  int bf16_outputs = 0;
  for (const train::LayerTrace& entry : verifier.trace_step(run.records[0])) {
    REQUIRE(entry.value.dtype == checkpoint::DType::F32);
    const std::vector<float> values = floats_of(entry.value);
    const bool in_bf16 = std::all_of(values.begin(), values.end(), [](float value) {
      return (std::bit_cast<std::uint32_t>(value) & 0xffffu) == 0;
    });
    if (entry.kind == "output" && in_bf16) ++bf16_outputs;
  }
  CHECK(bf16_outputs > 0);
}

TEST_CASE("load_state restores exactly what state() saved", "[torch]") {
  json task = tiny_task_json();
  task["training"]["steps"] = 5;
  train::Trainer trainer(parsed(task), kTwoThreadsOnCpu);
  train_recording(trainer);
  const checkpoint::Checkpoint saved = trainer.state(5);
  train::Trainer fresh(parsed(task), kTwoThreadsOnCpu);
  fresh.load_state(saved);
  require_bitwise_equal(fresh.state(5), saved);
}

TEST_CASE("load_state rejects a checkpoint that does not fit the task with Error(Input) naming what is wrong", "[torch]") {
  const json task = tiny_task_json();
  train::Trainer trainer(parsed(task), kTwoThreadsOnCpu);
  checkpoint::Checkpoint state = trainer.state(0);
  auto find = [&](const std::string& name) {
    return std::find_if(state.tensors.begin(), state.tensors.end(), [&](const auto& tensor) { return tensor.name == name; });
  };

  SECTION("a missing tensor") {
    state.tensors.erase(find("optim.1.weight.exp_avg"));
    require_error([&] { trainer.load_state(state); }, ErrorKind::Input, {"optim.1.weight.exp_avg is missing"});
  }
  SECTION("an unexpected tensor") {
    state.tensors.push_back(*find("param.1.bias"));
    state.tensors.back().name = "param.9.bias";
    require_error([&] { trainer.load_state(state); }, ErrorKind::Input, {"unexpected tensor param.9.bias"});
  }
  SECTION("a tensor of another shape") {
    find("param.1.weight")->shape = {784, 32};
    require_error([&] { trainer.load_state(state); }, ErrorKind::Input, {"param.1.weight is Float [784, 32], expected Float [32, 784]"});
  }
  SECTION("a tensor of another dtype") {
    find("param.1.bias")->dtype = checkpoint::DType::I32;
    require_error([&] { trainer.load_state(state); }, ErrorKind::Input, {"param.1.bias is Int [32], expected Float [32]"});
  }
  SECTION("a tensor whose data does not fill its shape") {
    find("param.1.bias")->data.resize(4);
    require_error([&] { trainer.load_state(state); }, ErrorKind::Input, {"param.1.bias holds 4 bytes, expected 128"});
  }
  SECTION("no optimizer step in the metadata") {
    state.metadata.erase("optimizer_step");
    require_error([&] { trainer.load_state(state); }, ErrorKind::Input, {"\"optimizer_step\" is missing"});
  }
  SECTION("a checkpoint of another model") {
    json wider = task;
    wider["model"]["hidden"] = {48};
    train::Trainer other(parsed(wider), kTwoThreadsOnCpu);
    require_error([&] { trainer.load_state(other.state(0)); }, ErrorKind::Input, {"param.1.weight is Float [48, 784]"});
  }
}

TEST_CASE("Resuming train() from a mid-run checkpoint ends bitwise where an uninterrupted run ends", "[torch]") {
  const json task = tiny_task_json();
  train::Trainer uninterrupted(parsed(task), kTwoThreadsOnCpu);
  const RecordedRun full = train_recording(uninterrupted);

  train::Trainer resumed(parsed(task), kTwoThreadsOnCpu);
  resumed.load_state(full.checkpoints.at(10));
  const RecordedRun rest = train_recording(resumed, 10);
  REQUIRE(rest.records.size() == 10);
  for (std::size_t i = 0; i < rest.records.size(); ++i) {
    const StepRecord& expected = full.records[10 + i];
    CHECK(rest.records[i].step == expected.step);
    CHECK(rest.records[i].indices == expected.indices);
    CHECK(rest.records[i].lr == expected.lr);
    CHECK(rest.records[i].loss == expected.loss);
  }
  REQUIRE(rest.checkpoints.size() == 1);  // no checkpoint for the resume point itself
  require_bitwise_equal(rest.checkpoints.at(20), full.checkpoints.at(20));
}

TEST_CASE("Budgets stop training with Error(Budget) naming the budget", "[torch]") {
  json task = tiny_task_json();
  RecordedRun run;
  train::TrainHooks hooks;
  hooks.on_step = [&](StepRecord&& record) { run.records.push_back(std::move(record)); };

  SECTION("max_steps is checked before the first step") {
    task["training"].erase("steps");
    task["training"]["epochs"] = 1;  // 1875 steps
    task["budget"] = {{"max_steps", 100}};
    train::Trainer trainer(parsed(task), kTwoThreadsOnCpu);
    require_error([&] { trainer.train(0, hooks); }, ErrorKind::Budget, {"budget.max_steps: the run needs 1875 steps, over the budget of 100"});
    CHECK(run.records.empty());
  }
  SECTION("max_wall_seconds stops the step that exceeds it") {
    task["budget"] = {{"max_wall_seconds", 1e-9}};
    train::Trainer trainer(parsed(task), kTwoThreadsOnCpu);
    require_error([&] { trainer.train(0, hooks); }, ErrorKind::Budget,
                  {"budget.max_wall_seconds exceeded", "by step 1", "checkpoints up to step 0 are kept"});
    CHECK(run.records.size() == 1);
  }
  SECTION("max_wall_seconds does not count the time should_stop waits (a GPU cooling down)") {
    task["budget"] = {{"max_wall_seconds", 1.0}};
    train::Trainer trainer(parsed(task), kTwoThreadsOnCpu);
    hooks.should_stop = [] {
      std::this_thread::sleep_for(std::chrono::milliseconds(100));
      return false;
    };
    CHECK(trainer.train(0, hooks) == 20);  // 1.9 s in should_stop, a few ms of training
    CHECK(run.records.size() == 20);
  }
  SECTION("max_memory_mb compares with the resident set") {
    task["budget"] = {{"max_memory_mb", 1}};
    train::Trainer trainer(parsed(task), kTwoThreadsOnCpu);
    require_error([&] { trainer.train(0, hooks); }, ErrorKind::Budget, {"budget.max_memory_mb exceeded"});
  }
}

TEST_CASE("A diverging run stops with Error(Input) at the first non-finite loss or gradient", "[torch]") {
  json task = tiny_task_json();
  task["training"]["optimizer"] = {{"kind", "sgd"}, {"lr", 1e30}};
  task["training"]["schedule"] = {{"kind", "constant"}};
  task["training"]["grad_clip_norm"] = 0.0;
  train::Trainer trainer(parsed(task), kTwoThreadsOnCpu);
  require_error([&] { trainer.train(0, {}); }, ErrorKind::Input, {"non-finite loss/gradient at step 2"});
}

TEST_CASE("evaluate gives an accuracy between 0 and 1 that beats chance after a short training", "[torch]") {
  json task = tiny_task_json();
  task["model"]["hidden"] = {64};
  task["training"]["optimizer"] = {{"kind", "adam"}, {"lr", 0.002}};
  task["training"]["steps"] = 150;
  task["training"]["batch_size"] = 64;
  train::Trainer trainer(parsed(task), kTwoThreadsOnCpu);
  const double untrained = trainer.evaluate().accuracy;
  CHECK(untrained >= 0.0);
  CHECK(untrained <= 1.0);
  std::vector<train::Progress> reports;
  train::TrainHooks hooks;
  hooks.on_progress = [&](const train::Progress& progress) { reports.push_back(progress); };
  trainer.train(0, hooks);
  const double trained = trainer.evaluate().accuracy;
  CHECK(trained <= 1.0);
  CHECK(trained > 0.6);  // chance is 0.1
  REQUIRE_FALSE(reports.empty());
  CHECK(reports.back().step == 150);
  CHECK(reports.back().eta_seconds == 0.0);
  std::printf("mlp 784-64-10, batch 64, 2 threads: %.0f steps/s; test accuracy %.3f after 150 steps\n",
              reports.back().samples_per_second / 64.0, trained);
}

TEST_CASE("Our optimizers and autocast take the same steps as PyTorch's torch.optim and torch.autocast", "[torch]") {
  json task = tiny_task_json();
  task["training"]["steps"] = 3;
  task["training"]["grad_clip_norm"] = 0.5;
  std::string label;
  SECTION("sgd with nesterov momentum and weight decay") {
    label = "sgd";
    task["training"]["optimizer"] = {{"kind", "sgd"}, {"lr", 0.05}, {"momentum", 0.9}, {"nesterov", true}, {"weight_decay", 0.001}};
  }
  SECTION("adam with L2 weight decay") {
    label = "adam";
    task["training"]["optimizer"] = {{"kind", "adam"}, {"lr", 0.003}, {"beta1", 0.8}, {"weight_decay", 0.01}};
  }
  SECTION("adamw with decoupled weight decay") {
    label = "adamw";
    task["training"]["optimizer"] = {{"kind", "adamw"}, {"lr", 0.003}, {"weight_decay", 0.05}};
  }
  SECTION("adamw under bf16 autocast, as torch.autocast runs it") {
    label = "adamw-bf16";
    task["training"]["optimizer"] = {{"kind", "adamw"}, {"lr", 0.003}, {"weight_decay", 0.05}};
    task["training"]["precision"] = "bf16";
  }
  const Task parsed_task = parsed(task);
  train::Trainer trainer(parsed_task, kTwoThreadsOnCpu);
  const RecordedRun run = train_recording(trainer);

  const ScratchDir scratch("reference-" + label);
  json request = {
      {"train_images", parsed_task.dataset.train_images.location},
      {"train_labels", parsed_task.dataset.train_labels.location},
      {"normalize", {{"mean", parsed_task.dataset.normalize_mean}, {"std", parsed_task.dataset.normalize_std}}},
      {"hidden", parsed_task.model.hidden},
      {"classes", 10},
      {"threads", 2},
      {"grad_clip_norm", parsed_task.training.grad_clip_norm},
      {"precision", std::string(name_of(parsed_task.training.precision))},
      {"optimizer", {{"kind", std::string(name_of(parsed_task.training.optimizer.kind))}, {"lr", parsed_task.training.optimizer.lr},
                     {"momentum", parsed_task.training.optimizer.momentum}, {"nesterov", parsed_task.training.optimizer.nesterov},
                     {"beta1", parsed_task.training.optimizer.beta1}, {"beta2", parsed_task.training.optimizer.beta2},
                     {"eps", parsed_task.training.optimizer.eps}, {"weight_decay", parsed_task.training.optimizer.weight_decay}}},
      {"steps", json::array()},
      {"parameters", json::array()}};
  for (const StepRecord& record : run.records) request["steps"].push_back({{"indices", record.indices}, {"lr", record.lr}});
  for (const checkpoint::Tensor& tensor : run.checkpoints.at(0).tensors) {
    if (!tensor.name.starts_with("param.")) continue;
    const std::string name = tensor.name.substr(6);
    test::write_text(scratch / "request" / (name + ".f32"), std::string(reinterpret_cast<const char*>(tensor.data.data()), tensor.data.size()));
    request["parameters"].push_back({{"name", name}, {"shape", tensor.shape}, {"file", name + ".f32"}});
  }
  test::write_text(scratch / "request" / "request.json", request.dump());

  const test::CommandResult python = test::run_command({test::system_python(), (test::source_dir() / "tests/python/reference_step.py").string(),
                                                        (scratch / "request").string(), (scratch / "reference").string()});
  INFO(python.output);
  REQUIRE(python.exit_code == 0);

  // Both sides run LibTorch 1.13's CPU kernels on the same inputs in the same op order, so
  // only an op that differs (none known) could move a weight; 1e-6 is ~1e-4 of a typical weight.
  constexpr double kTolerance = 1e-6;
  double max_difference = 0.0;
  int parameters_compared = 0;
  for (const checkpoint::Tensor& tensor : run.checkpoints.at(3).tensors) {
    if (!tensor.name.starts_with("param.")) continue;
    const std::string bytes = read_file(scratch / "reference" / (tensor.name.substr(6) + ".f32"));
    const std::vector<float> ours = floats_of(tensor);
    REQUIRE(bytes.size() == ours.size() * sizeof(float));
    std::vector<float> theirs(ours.size());
    std::memcpy(theirs.data(), bytes.data(), bytes.size());
    for (std::size_t i = 0; i < ours.size(); ++i)
      max_difference = std::max(max_difference, std::abs(static_cast<double>(ours[i]) - theirs[i]));
    ++parameters_compared;
  }
  const json reference_losses = json::parse(read_file(scratch / "reference" / "losses.json"));
  double max_loss_difference = 0.0;
  for (std::size_t i = 0; i < run.records.size(); ++i)
    max_loss_difference = std::max(max_loss_difference, std::abs(run.records[i].loss - reference_losses.at(i).get<double>()));
  std::printf("%s vs torch.optim, 3 steps: max |weight difference| %.3g, max |loss difference| %.3g\n", label.c_str(),
              max_difference, max_loss_difference);
  CHECK(parameters_compared == 4);
  CHECK(max_difference <= kTolerance);
  CHECK(max_loss_difference <= kTolerance);
}

TEST_CASE("A TorchScript model loads, trains and replays bitwise, dropout included", "[torch][torchscript]") {
  const ScratchDir scratch("torchscript");
  const std::filesystem::path model_file = scratch / "classifier.pt";
  const test::CommandResult exported = test::run_command(
      {test::system_python(), (test::source_dir() / "tests/python/export_model.py").string(), model_file.string()});
  INFO(exported.output);
  REQUIRE(exported.exit_code == 0);

  json task = tiny_task_json();
  task["model"] = {{"kind", "torchscript"}, {"file", file_ref(model_file)}};
  task["training"]["steps"] = 8;
  task["proof"]["checkpoint_every"] = 4;
  train::Trainer trainer(parsed(task), kTwoThreadsOnCpu);
  const RecordedRun run = train_recording(trainer);
  REQUIRE(run.checkpoints.size() == 3);
  CHECK(tensor_named(run.checkpoints.at(0), "param.hidden.weight").shape == std::vector<std::int64_t>{32, 784});
  CHECK(tensor_named(run.checkpoints.at(8), "param.out.bias").data != tensor_named(run.checkpoints.at(0), "param.out.bias").data);

  train::Trainer verifier(parsed(task), kTwoThreadsOnCpu);
  verifier.load_state(run.checkpoints.at(4));
  const std::vector<float> losses = verifier.replay(std::span(run.records).subspan(4, 4));
  require_bitwise_equal(verifier.state(8), run.checkpoints.at(8));
  for (std::size_t i = 0; i < losses.size(); ++i) CHECK(losses[i] == run.records[4 + i].loss);

  // Autocast reaches the ops the TorchScript interpreter runs: bf16 ends elsewhere, and replays bitwise.
  json mixed_task = task;
  mixed_task["training"]["precision"] = "bf16";
  train::Trainer mixed(parsed(mixed_task), kTwoThreadsOnCpu);
  const RecordedRun mixed_run = train_recording(mixed);
  CHECK(tensor_named(mixed_run.checkpoints.at(8), "param.hidden.weight").data != tensor_named(run.checkpoints.at(8), "param.hidden.weight").data);
  train::Trainer mixed_verifier(parsed(mixed_task), kTwoThreadsOnCpu);
  mixed_verifier.load_state(mixed_run.checkpoints.at(4));
  mixed_verifier.replay(std::span(mixed_run.records).subspan(4, 4));
  require_bitwise_equal(mixed_verifier.state(8), mixed_run.checkpoints.at(8));

  SECTION("a file that is not TorchScript is rejected") {
    test::write_text(scratch / "not-a-model.pt", "hello");
    task["model"]["file"] = file_ref(scratch / "not-a-model.pt");
    require_error([&] { train::Trainer(parsed(task), kTwoThreadsOnCpu); }, ErrorKind::Input, {"is not a loadable TorchScript module"});
  }
}

TEST_CASE("IDX datasets load from plain files, and malformed ones are rejected naming the file", "[torch]") {
  const ScratchDir scratch("idx");
  const TinyIdx files = write_tiny_idx(scratch, 40);
  json task = tiny_idx_task_json(files);

  SECTION("a well-formed plain dataset trains") {
    train::Trainer trainer(parsed(task), kTwoThreadsOnCpu);
    CHECK(trainer.train_samples() == 40);
    CHECK(trainer.steps_per_epoch() == 5);
    const RecordedRun run = train_recording(trainer);
    CHECK(run.records.size() == 4);
    CHECK(tensor_named(run.checkpoints.at(4), "param.3.weight").shape == std::vector<std::int64_t>{4, 32});  // classes 0..3
  }
  SECTION("replay refuses indices outside the data or of the wrong batch size") {
    train::Trainer trainer(parsed(task), kTwoThreadsOnCpu);
    StepRecord record{1, std::vector<std::uint32_t>(8, 3), 0.0f, 0.01};
    record.indices[5] = 40;
    require_error([&] { trainer.replay(std::span(&record, 1)); }, ErrorKind::Input, {"replaying step 1: sample index 40 is out of range"});
    record.indices.resize(7, 0);
    require_error([&] { trainer.replay(std::span(&record, 1)); }, ErrorKind::Input, {"7 sample indices, expected 8"});
  }
  SECTION("a label file with the wrong magic number") {
    test::write_text(files.labels, big_endian_u32(0x803) + big_endian_u32(40));
    task["dataset"]["train_labels"] = file_ref(files.labels);
    require_error([&] { train::Trainer(parsed(task), kTwoThreadsOnCpu); }, ErrorKind::Input,
                  {"dataset.train_labels: " + files.labels.string() + ": magic number 0x00000803, expected 0x00000801"});
  }
  SECTION("fewer labels than images") {
    std::string labels = big_endian_u32(0x801) + big_endian_u32(39) + std::string(39, '\1');
    test::write_text(files.labels, labels);
    task["dataset"]["train_labels"] = file_ref(files.labels);
    require_error([&] { train::Trainer(parsed(task), kTwoThreadsOnCpu); }, ErrorKind::Input, {"39 labels for 40 images"});
  }
  SECTION("a truncated image file") {
    std::string images = read_file(files.images);
    images.resize(images.size() - 10);
    test::write_text(files.images, images);
    task["dataset"]["train_images"] = file_ref(files.images);
    require_error([&] { train::Trainer(parsed(task), kTwoThreadsOnCpu); }, ErrorKind::Input, {"truncated: expected 2560 payload bytes"});
  }
  SECTION("a file that does not match its hash") {
    task["dataset"]["test_images"]["sha256"] = std::string(64, '0');
    require_error([&] { train::Trainer(parsed(task), kTwoThreadsOnCpu); }, ErrorKind::Input, {"dataset.test_images: sha256 mismatch"});
  }
}

TEST_CASE("An unknown device name is a config error and an unusable GPU a CUDA error", "[torch]") {
  const Task task = parsed(tiny_task_json());
  require_error([&] { train::Trainer(task, train::TrainerOptions{"tpu", 2}); }, ErrorKind::Config, {"device: expected cpu, cuda or cuda:N, got \"tpu\""});
  require_error([&] { train::Trainer(task, train::TrainerOptions{"cuda:x", 2}); }, ErrorKind::Config, {"got \"cuda:x\""});
  require_error([&] { train::Trainer(task, train::TrainerOptions{"cuda:99", 2}); }, ErrorKind::Cuda, {"device cuda:99 requested"});
}

namespace {

const train::TrainerOptions kOneThreadOnCpu{"cpu", 1};

// A 20-step gpt (context 32) on the example's byte-level tokens of the GPL-3 text.
json tiny_gpt_task_json() {
  json task = json::parse(read_file(test::source_dir() / "configs/tasks/text-gpt.json"));
  task["id"] = "tiny-gpt";
  task["model"]["context"] = 32;
  task["training"]["batch_size"] = 8;
  task["training"]["steps"] = 20;
  task["training"]["schedule"] = {{"kind", "constant"}};
  task["proof"] = {{"checkpoint_every", 10}};
  task.erase("budget");
  return task;
}

// A gpt task reading `train` and `test` token files from anywhere (locations made absolute).
Task gpt_task_with_files(const std::filesystem::path& train, const std::filesystem::path& test) {
  json task = tiny_gpt_task_json();
  task["dataset"]["train"] = file_ref(train);
  task["dataset"]["test"] = file_ref(test);
  return parse_task(task, test::source_dir());
}

std::string uint16_tokens(std::initializer_list<std::uint16_t> tokens, std::size_t repeat) {
  std::string bytes;
  for (std::size_t i = 0; i < repeat; ++i)
    for (const std::uint16_t token : tokens) {
      bytes.push_back(static_cast<char>(token & 0xff));
      bytes.push_back(static_cast<char>(token >> 8));
    }
  return bytes;
}

}  // namespace

TEST_CASE("A gpt starts bitwise equal from the same seed, learns in a few steps and replays bitwise", "[torch]") {
  const Task task = parse_task(tiny_gpt_task_json(), test::source_dir() / "configs/tasks");
  train::Trainer trainer(task, kOneThreadOnCpu);
  train::Trainer verifier(task, kOneThreadOnCpu);
  const checkpoint::Checkpoint initial = trainer.state(0);
  require_bitwise_equal(verifier.state(0), initial);
  CHECK(trainer.train_samples() == 31634 / 33);  // non-overlapping windows of context + 1 tokens
  CHECK(tensor_named(initial, "param.wte.weight").shape == std::vector<std::int64_t>{256, 64});
  CHECK(tensor_named(initial, "param.wpe.weight").shape == std::vector<std::int64_t>{32, 64});
  CHECK(tensor_named(initial, "param.h.1.attn.c_attn.weight").shape == std::vector<std::int64_t>{192, 64});
  CHECK(tensor_named(initial, "param.h.1.mlp.c_proj.weight").shape == std::vector<std::int64_t>{64, 256});
  CHECK(tensor_named(initial, "param.ln_f.bias").shape == std::vector<std::int64_t>{64});
  const double untrained_loss = trainer.evaluate().loss;
  CHECK(std::abs(untrained_loss - std::log(256.0)) < 0.1);  // small initial weights: near-uniform predictions

  const RecordedRun run = train_recording(trainer);
  REQUIRE(run.records.size() == 20);
  CHECK(run.records[0].indices.size() == 8);
  CHECK(run.records.back().loss < run.records.front().loss - 1.0f);
  CHECK(trainer.evaluate().loss < untrained_loss - 1.0);
  const double accuracy = trainer.evaluate().accuracy;
  CHECK(accuracy > 1.0 / 256.0);
  CHECK(accuracy < 1.0);

  verifier.load_state(run.checkpoints.at(10));
  const std::vector<float> losses = verifier.replay(std::span(run.records).subspan(10, 10));
  require_bitwise_equal(verifier.state(20), run.checkpoints.at(20));
  for (std::size_t i = 0; i < losses.size(); ++i) CHECK(losses[i] == run.records[10 + i].loss);

  std::vector<std::string> traced;
  for (const train::LayerTrace& entry : verifier.trace_step(run.records[0]))
    if (entry.kind == "output") traced.push_back(entry.value.name);
  CHECK(traced == std::vector<std::string>{"wte (Embedding)", "wpe (Embedding)", "h.0 (Block)", "h.1 (Block)",
                                           "ln_f (LayerNorm)", "lm_head (tied to wte)"});
}

TEST_CASE("Token files with an odd size, a token beyond the vocabulary or no whole window are rejected naming the file", "[torch]") {
  const ScratchDir dir("tokens");
  const std::filesystem::path good = dir / "good.bin", bad = dir / "bad.bin";
  test::write_text(good, uint16_tokens({1, 2, 3, 4}, 100));

  SECTION("odd byte count") {
    test::write_text(bad, uint16_tokens({1, 2, 3, 4}, 100) + "x");
    require_error([&] { train::Trainer(gpt_task_with_files(bad, good), kOneThreadOnCpu); }, ErrorKind::Input,
                  {"dataset.train", bad.string(), "801 bytes, expected an even count"});
  }
  SECTION("a token >= vocab_size") {
    test::write_text(bad, uint16_tokens({1, 2, 3, 4}, 50) + uint16_tokens({300}, 1));
    require_error([&] { train::Trainer(gpt_task_with_files(good, bad), kOneThreadOnCpu); }, ErrorKind::Input,
                  {"dataset.test", bad.string(), "token 300 at position 200", "model.vocab_size 256"});
  }
  SECTION("fewer tokens than one window") {
    test::write_text(bad, uint16_tokens({1, 2, 3, 4}, 8));
    require_error([&] { train::Trainer(gpt_task_with_files(good, bad), kOneThreadOnCpu); }, ErrorKind::Input,
                  {"dataset.test", "32 tokens, expected at least one window of model.context + 1 = 33"});
  }
}

namespace {

// Data parallel: the shard count, not the device count, fixes the bits.
const train::TrainerOptions kOneShard{"cpu", 1};
const train::TrainerOptions kTwoShardsOnOneCpu{"cpu", 1, 2};
const train::TrainerOptions kTwoShardsOnTwoCpus{"cpu,cpu", 1};  // shards 0: one per device

// |a - b| / |b - initial| over the parameters of two states.
double relative_parameter_distance(const checkpoint::Checkpoint& a, const checkpoint::Checkpoint& b,
                                   const checkpoint::Checkpoint& initial) {
  double difference = 0.0, update = 0.0;
  for (const checkpoint::Tensor& tensor : b.tensors) {
    if (!tensor.name.starts_with("param.")) continue;
    const std::vector<float> ours = floats_of(tensor_named(a, tensor.name));
    const std::vector<float> theirs = floats_of(tensor);
    const std::vector<float> start = floats_of(tensor_named(initial, tensor.name));
    for (std::size_t i = 0; i < ours.size(); ++i) {
      difference += std::pow(static_cast<double>(ours[i]) - theirs[i], 2);
      update += std::pow(static_cast<double>(theirs[i]) - start[i], 2);
    }
  }
  return std::sqrt(difference / update);
}

}  // namespace

TEST_CASE("Two shards on devices cpu,cpu and two shards on one cpu train to bitwise equal losses and weights", "[torch]") {
  json task = tiny_task_json();
  task["training"]["steps"] = 6;
  task["proof"]["checkpoint_every"] = 3;
  train::Trainer one_device(parsed(task), kTwoShardsOnOneCpu);
  train::Trainer two_devices(parsed(task), kTwoShardsOnTwoCpus);
  CHECK(one_device.runtime().shards == 2);
  CHECK(two_devices.runtime().shards == 2);
  CHECK(two_devices.runtime().device == "cpu");  // the primary's
  const RecordedRun on_one = train_recording(one_device);
  const RecordedRun on_two = train_recording(two_devices);
  REQUIRE(on_one.records.size() == 6);
  REQUIRE(on_two.records.size() == 6);
  for (std::size_t i = 0; i < on_one.records.size(); ++i) CHECK(on_two.records[i].loss == on_one.records[i].loss);
  require_bitwise_equal(on_two.checkpoints.at(6), on_one.checkpoints.at(6));
}

TEST_CASE("Two shards end near but not on the one-shard run, and replay bitwise from a checkpoint", "[torch]") {
  Task task;
  SECTION("mlp") {
    json mlp = tiny_task_json();
    mlp["training"]["steps"] = 6;
    mlp["proof"]["checkpoint_every"] = 3;
    task = parsed(mlp);
  }
  SECTION("gpt") {
    json gpt = tiny_gpt_task_json();
    gpt["training"]["steps"] = 6;
    gpt["proof"]["checkpoint_every"] = 3;
    task = parse_task(gpt, test::source_dir() / "configs/tasks");
  }
  train::Trainer single(task, kOneShard);
  const RecordedRun reference = train_recording(single);
  train::Trainer sharded(task, kTwoShardsOnOneCpu);
  const RecordedRun run = train_recording(sharded);
  require_bitwise_equal(run.checkpoints.at(0), reference.checkpoints.at(0));
  for (std::size_t i = 0; i < run.records.size(); ++i) CHECK(run.records[i].indices == reference.records[i].indices);
  // Step 1 starts from the same weights: the mean of two half-batch means is the batch mean but for rounding.
  CHECK(std::abs(run.records[0].loss - reference.records[0].loss) < 1e-5f * reference.records[0].loss);
  const double distance = relative_parameter_distance(run.checkpoints.at(6), reference.checkpoints.at(6), reference.checkpoints.at(0));
  std::printf("2 shards against 1, 6 steps: |difference| / |update| = %.3g\n", distance);
  CHECK(distance > 0.0);  // the batch was split: the gradients summed in another order
  CHECK(distance < 1e-3);

  train::Trainer verifier(task, kTwoShardsOnOneCpu);
  verifier.load_state(run.checkpoints.at(3));
  const std::vector<float> losses = verifier.replay(std::span(run.records).subspan(3, 3));
  require_bitwise_equal(verifier.state(6), run.checkpoints.at(6));
  for (std::size_t i = 0; i < losses.size(); ++i) CHECK(losses[i] == run.records[3 + i].loss);
}

TEST_CASE("A two-shard trace lists each shard's module outputs, then the step's loss and gradients", "[torch]") {
  json task = tiny_task_json();
  task["training"]["steps"] = 1;
  train::Trainer trainer(parsed(task), kTwoShardsOnOneCpu);
  const RecordedRun run = train_recording(trainer);
  REQUIRE(run.records.size() == 1);
  train::Trainer tracer(parsed(task), kTwoShardsOnOneCpu);
  const checkpoint::Checkpoint before_trace = tracer.state(0);
  const std::vector<train::LayerTrace> trace = tracer.trace_step(run.records[0]);
  std::vector<std::string> names;
  for (const train::LayerTrace& entry : trace) names.push_back(entry.kind + " " + entry.value.name);
  CHECK(std::count(names.begin(), names.end(), "output 1 (Linear) [shard 0]") == 1);
  CHECK(std::count(names.begin(), names.end(), "output 1 (Linear) [shard 1]") == 1);
  const auto loss = std::find(names.begin(), names.end(), "loss loss");
  REQUIRE(loss != names.end());
  CHECK(floats_of(trace[static_cast<std::size_t>(loss - names.begin())].value) == std::vector<float>{run.records[0].loss});
  require_bitwise_equal(tracer.state(0), before_trace);  // a trace does not train
  CHECK(names.back() == "gradient 3.bias");
  for (const train::LayerTrace& entry : trace)
    if (entry.kind == "output") CHECK(entry.value.shape.front() == 16);  // half of the batch of 32
}

TEST_CASE("Shard and device lists that do not fit are rejected naming what is wrong", "[torch]") {
  const Task task = parsed(tiny_task_json());  // batch 32
  require_error([&] { train::Trainer(task, train::TrainerOptions{"cpu", 1, 3}); }, ErrorKind::Input,
                {"training.batch_size: 32", "3 equal data-parallel shards"});
  require_error([&] { train::Trainer(task, train::TrainerOptions{"cpu", 1, -1}); }, ErrorKind::Config,
                {"shard count -1 is out of range"});
  require_error([&] { train::Trainer(task, train::TrainerOptions{"cpu,", 1}); }, ErrorKind::Config, {"device list \"cpu,\""});
  require_error([&] { train::Trainer(task, train::TrainerOptions{"cpu,cuda:0", 1}); }, ErrorKind::Config,
                {"mixes cpu and cuda:0"});
}
