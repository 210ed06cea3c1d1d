// A submitter's TorchScript cannot harm the rig [torch][torchscript]: real models exported by
// Debian's PyTorch (tests/python/export_checked_models.py) that read a file, loop forever, call
// operators outside aten and prim, name a GPU or run code while loading are refused before any of
// their code runs, naming the operator and where; an honest model with the usual layers trains and replays
// bitwise; a step that stalls past its time limit is reported while it runs and ends
// training with Error(Budget); and replays past a verifier's replay budget stop between steps.
#include <catch2/catch.hpp>
#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <limits>
#include <map>
#include <mutex>
#include <span>
#include <string>
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

const std::filesystem::path kExporter = test::source_dir() / "tests/python/export_checked_models.py";

// Exports the model `kind` (see the exporter's usage) into `dir`.
std::filesystem::path exported_model(const ScratchDir& dir, const std::string& kind) {
  const std::filesystem::path model = dir / "model.pt";
  const test::CommandResult exported = test::run_command({test::system_python(), kExporter.string(), kind, model.string()});
  INFO(exported.output);
  REQUIRE(exported.exit_code == 0);
  return model;
}

// "export_checked_models.py:48": where the exporter's source holds `fragment`, as errors name it.
std::string exporter_line_of(const std::string& fragment) {
  const std::string source = read_file(kExporter);
  const std::size_t at = source.find(fragment);
  REQUIRE(at != std::string::npos);
  const auto line = 1 + std::count(source.begin(), source.begin() + static_cast<std::ptrdiff_t>(at), '\n');
  return "export_checked_models.py:" + std::to_string(line);
}

// An 8-step task on the real Fashion-MNIST with the TorchScript model `model`.
Task script_task(const std::filesystem::path& model) {
  json task = json::parse(read_file(test::source_dir() / "configs/tasks/fashion-mnist-mlp.json"));
  task["id"] = "checked-torchscript";
  task["model"] = {{"kind", "torchscript"}, {"file", {{"location", model.string()}, {"sha256", sha256_file_hex(model)}}}};
  task["training"] = {{"optimizer", {{"kind", "adam"}, {"lr", 0.003}}}, {"batch_size", 32}, {"steps", 8}};
  task["proof"] = {{"checkpoint_every", 4}};
  task.erase("budget");
  return parse_task(task, test::source_dir());
}

const train::TrainerOptions kTwoThreadsOnCpu{"cpu", 2};

// Requires that building a Trainer for `task` throws Error(Input) whose message holds every fragment.
void require_refused(const Task& task, std::initializer_list<std::string> fragments) {
  try {
    train::Trainer trainer(task, kTwoThreadsOnCpu);
  } catch (const Error& error) {
    INFO("message: " << error.what());
    CHECK(error.kind() == ErrorKind::Input);
    for (const std::string& fragment : fragments) CHECK_THAT(error.what(), Catch::Contains(fragment));
    return;
  }
  FAIL("the model was accepted; expected Error(Input) containing \"" << *fragments.begin() << "\"");
}

}  // namespace

TEST_CASE("A TorchScript model that reads a file is refused before any of it runs, naming the operator and where",
          "[torch][torchscript]") {
  const ScratchDir dir("script-reads-file");
  SECTION("in forward") {
    require_refused(script_task(exported_model(dir, "reads_file")),
                    {"model.file: operator aten::from_file is not allowed (in forward, " +
                     exporter_line_of("leaked = torch.from_file") + ")"});
  }
  SECTION("in a function called in a branch of a submodule's forward") {
    require_refused(script_task(exported_model(dir, "reads_file_nested")),
                    {"model.file: operator aten::from_file is not allowed (in forward > Helper.forward > read_secret, " +
                     exporter_line_of("return torch.from_file") + ")"});
  }
}

TEST_CASE("A TorchScript model with a while loop is refused: only loops bounded when they start may run",
          "[torch][torchscript]") {
  const ScratchDir dir("script-while");
  require_refused(script_task(exported_model(dir, "while_loop")),
                  {"model.file: a loop whose trip count is not bounded when it starts", "(in forward, " +
                   exporter_line_of("while bool(") + ")"});
}

TEST_CASE("Operators outside aten and prim are refused, whether LibTorch registers them or not", "[torch][torchscript]") {
  const ScratchDir dir("script-foreign-op");
  SECTION("an operator LibTorch registers in another namespace") {
    require_refused(script_task(exported_model(dir, "foreign_op")),
                    {"model.file: operator profiler::_record_function_enter is not allowed (in forward, " +
                     exporter_line_of("handle = torch.ops.profiler") + ")"});
  }
  SECTION("a custom operator this process does not have") {
    require_refused(script_task(exported_model(dir, "unknown_op")),
                    {"is not a loadable TorchScript module", "solver_test::exfiltrate"});
  }
}

TEST_CASE("A TorchScript model naming a GPU is refused: a model follows its input's device", "[torch][torchscript]") {
  const ScratchDir dir("script-names-device");
  require_refused(script_task(exported_model(dir, "names_device")),
                  {"model.file: the device constant cuda:1 is not allowed", "(in forward, " +
                   exporter_line_of("torch.device(\"cuda:1\")") + ")"});
}

TEST_CASE("A TorchScript module that would run code while loading (__setstate__) is refused before loading",
          "[torch][torchscript]") {
  const ScratchDir dir("script-setstate");
  require_refused(script_task(exported_model(dir, "setstate")),
                  {"model.file: code/__torch__.py defines __setstate__, which loading the module would run"});
}

TEST_CASE("An honest model with BatchNorm, a ModuleList and the usual layers is accepted, trains and replays bitwise",
          "[torch][torchscript]") {
  const ScratchDir dir("script-layers");
  const Task task = script_task(exported_model(dir, "layers"));
  train::Trainer trainer(task, kTwoThreadsOnCpu);
  std::vector<StepRecord> records;
  std::map<std::int64_t, checkpoint::Checkpoint> checkpoints;
  train::TrainHooks hooks;
  hooks.on_step = [&](StepRecord&& record) { records.push_back(std::move(record)); };
  hooks.on_checkpoint = [&](std::int64_t step, checkpoint::Checkpoint&& state) { checkpoints.emplace(step, std::move(state)); };
  REQUIRE(trainer.train(0, hooks) == 8);

  train::Trainer verifier(task, kTwoThreadsOnCpu);
  verifier.load_state(checkpoints.at(4));
  const std::vector<float> losses = verifier.replay(std::span(records).subspan(4, 4));
  const checkpoint::Checkpoint replayed = verifier.state(8);
  REQUIRE(replayed.tensors.size() == checkpoints.at(8).tensors.size());
  for (std::size_t i = 0; i < replayed.tensors.size(); ++i) {
    INFO("tensor " << replayed.tensors[i].name);
    CHECK(replayed.tensors[i].data == checkpoints.at(8).tensors[i].data);
  }
  for (std::size_t i = 0; i < losses.size(); ++i) CHECK(losses[i] == records[4 + i].loss);
}

TEST_CASE("The step time limit is a tenth of the wall budget, at least 60 s, at most the budget and max_step_seconds",
          "[torch][torchscript]") {
  const auto limit = [](double max_wall_seconds, double max_step_seconds) {
    return train::step_time_limit_seconds(BudgetSpec{0, max_wall_seconds, 0}, max_step_seconds);
  };
  CHECK(limit(0.0, 600.0) == 600.0);      // no budget: the ceiling
  CHECK(limit(0.0, 5.0) == 5.0);
  CHECK(limit(3600.0, 600.0) == 360.0);   // a tenth
  CHECK(limit(300.0, 600.0) == 60.0);     // at least a minute...
  CHECK(limit(20.0, 600.0) == 20.0);      // ...but never more than the whole budget
  CHECK(limit(86400.0, 600.0) == 600.0);  // and never more than the ceiling
  CHECK(limit(3600.0, 100.0) == 100.0);

  const Task task = parse_task(json::parse(read_file(test::source_dir() / "configs/tasks/fashion-mnist-mlp.json")),
                               test::source_dir());
  for (const double bad : {0.0, -1.0, 1e300}) {
    try {
      train::Trainer trainer(task, train::TrainerOptions{"cpu", 2, 0, bad});
      FAIL("max_step_seconds " << bad << " was accepted");
    } catch (const Error& error) {
      CHECK(error.kind() == ErrorKind::Config);
      CHECK_THAT(error.what(), Catch::Contains("max_step_seconds must be > 0 and at most 1000000"));
    }
  }
}

TEST_CASE("A step still running past its time limit is reported while it runs, and ends training with Error(Budget)",
          "[torch][torchscript]") {
  const ScratchDir dir("script-slow");
  const Task task = script_task(exported_model(dir, "slow:2"));
  // The limit is a quarter of what a step of this model takes on this machine now (seconds on a
  // loaded 2-core CI machine, less on a fast one), so the step runs well past it anywhere, while
  // the trial pass, which skips the slow part, stays well within it.
  Task one_step = task;
  one_step.training.steps = 1;
  train::Trainer calibration(one_step, kTwoThreadsOnCpu);
  const auto calibration_started = std::chrono::steady_clock::now();
  calibration.train(0, {});
  const double step_seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - calibration_started).count();
  const double limit = std::max(0.01, std::round(step_seconds / 4 * 100) / 100);

  std::mutex mutex;
  std::vector<std::string> reports;
  std::vector<double> report_seconds;
  const auto started = std::chrono::steady_clock::now();
  const auto seconds_since_start = [&] { return std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count(); };
  train::TrainerOptions options{"cpu", 2, 0, limit};
  options.on_stuck_step = [&](const Error& overrun) {
    const std::lock_guard lock(mutex);
    reports.push_back(overrun.what());
    report_seconds.push_back(seconds_since_start());
    CHECK(overrun.kind() == ErrorKind::Budget);
  };
  train::Trainer trainer(task, options);
  const double training_started = seconds_since_start();
  std::vector<StepRecord> records;
  train::TrainHooks hooks;
  hooks.on_step = [&](StepRecord&& record) { records.push_back(std::move(record)); };
  try {
    trainer.train(0, hooks);
    FAIL("training ended without a Budget error");
  } catch (const Error& error) {
    INFO("message: " << error.what());
    CHECK(error.kind() == ErrorKind::Budget);
    CHECK_THAT(error.what(), Catch::Contains(fmt::format("step 1 ran past its time limit of {} s: it took", limit)));
  }
  const double training_ended = seconds_since_start();
  std::printf("a step of the slow model: %.2f s, then %.2f s against a limit of %g s\n", step_seconds,
              training_ended - training_started, limit);
  CHECK(records.size() == 1);  // the step past its limit completed, and the run ended after it
  const std::lock_guard lock(mutex);
  REQUIRE(reports.size() == 1);  // the trial pass stayed within the limit; step 1 did not
  CHECK(reports[0] == fmt::format("step 1 ran past its time limit of {} s and is still running", limit));
  // Reported while the step was still running.
  CHECK(report_seconds[0] >= training_started + limit);
  CHECK(report_seconds[0] < training_ended);
}

TEST_CASE("Replays past the replay budget stop between steps with Error(Budget), and later replays and evaluations do not run",
          "[torch][torchscript]") {
  CHECK(train::replay_budget_seconds(BudgetSpec{0, 30.0, 0}) == 60.0);  // twice the wall budget
  CHECK(train::replay_budget_seconds(BudgetSpec{}) == 0.0);  // no wall budget: only each step's limit

  const ScratchDir dir("replay-budget");
  const Task task = script_task(exported_model(dir, "slow:1"));
  // Honest records of the task's first steps, and what a step of this model takes here now.
  train::Trainer trainer(task, kTwoThreadsOnCpu);
  const checkpoint::Checkpoint initial = trainer.state(0);
  std::vector<StepRecord> records;
  train::TrainHooks hooks;
  hooks.on_step = [&](StepRecord&& record) { records.push_back(std::move(record)); };
  const auto calibration_started = std::chrono::steady_clock::now();
  trainer.train(0, hooks);
  const double step_seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - calibration_started).count() / records.size();

  // A budget of one and a half steps: the second step of a replay ends past it (the first may
  // too, on a noisy machine).
  const double budget = std::round(step_seconds * 1.5 * 100) / 100;
  train::TrainerOptions options = kTwoThreadsOnCpu;
  options.max_replay_seconds = budget;
  train::Trainer replayer(task, options);
  replayer.load_state(initial);
  try {
    replayer.replay(records);
    FAIL("the replay of " << records.size() << " steps ended within a budget of " << budget << " s");
  } catch (const Error& error) {
    INFO("message: " << error.what());
    CHECK(error.kind() == ErrorKind::Budget);
    CHECK_THAT(error.what(), Catch::StartsWith("replay budget exceeded: the replays took "));
    CHECK_THAT(error.what(), Catch::Contains(fmt::format("over the budget of {} s", budget)));
    const std::string message = error.what();
    CHECK((message.find("by the end of step 1,") != std::string::npos ||
           message.find("by the end of step 2,") != std::string::npos));
  }

  // Spent: a later replay or evaluation refuses before running any of the model.
  const auto refused_started = std::chrono::steady_clock::now();
  try {
    replayer.replay(std::span(records).subspan(4));
    FAIL("a replay ran after the budget was spent");
  } catch (const Error& error) {
    CHECK(error.kind() == ErrorKind::Budget);
    CHECK_THAT(error.what(), Catch::StartsWith("replay budget exceeded before step 5: the replays took "));
    CHECK_THAT(error.what(), Catch::EndsWith(fmt::format("over the budget of {} s; not run", budget)));
  }
  try {
    replayer.evaluate();
    FAIL("an evaluation ran after the budget was spent");
  } catch (const Error& error) {
    CHECK(error.kind() == ErrorKind::Budget);
    CHECK_THAT(error.what(), Catch::StartsWith("replay budget exceeded before evaluating the test set"));
  }
  CHECK(std::chrono::duration<double>(std::chrono::steady_clock::now() - refused_started).count() < step_seconds / 2);

  for (const double bad : {-1.0, std::numeric_limits<double>::quiet_NaN()}) {
    train::TrainerOptions invalid = kTwoThreadsOnCpu;
    invalid.max_replay_seconds = bad;
    try {
      train::Trainer refused(task, invalid);
      FAIL("max_replay_seconds " << bad << " was accepted");
    } catch (const Error& error) {
      CHECK(error.kind() == ErrorKind::Config);
      CHECK_THAT(error.what(), Catch::Contains("max_replay_seconds must be >= 0 (0 = none)"));
    }
  }
}
