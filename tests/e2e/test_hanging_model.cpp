// Bundles whose TorchScript model a verifier cannot replay in time. The forger trains an honest
// linear model with `solver run`, then swaps in a model with the same parameters that the
// operator allowlist accepts but that is slow or never finishes a step on real images (it skips
// that on the zeros of the trial pass), writes the task for it with a small wall budget, and
// reseals. `solver verify` against that task must reject it within the task's replay budget
// (docs/bundle-format.md, "Replay budget"), under default options, naming why.
#include <catch2/catch.hpp>
#include <nlohmann/json.hpp>

#include <fmt/format.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>

#include "common/sha256.h"
#include "tests/e2e/e2e_support.h"
#include "tests/e2e/forger.h"

using namespace solver;
using namespace solver::test;

namespace {

// Exports a model of tests/python/export_checked_models.py as dir/<kind>.pt.
std::filesystem::path exported_model(const std::filesystem::path& dir, const std::string& kind) {
  const auto model = dir / (kind + ".pt");
  const CommandResult exported = run_command(
      {system_python(), (source_dir() / "tests/python/export_checked_models.py").string(), kind, model.string()});
  INFO(exported.output);
  REQUIRE(exported.exit_code == 0);
  return model;
}

nlohmann::json torchscript_model(const std::filesystem::path& model) {
  return {{"kind", "torchscript"}, {"file", {{"location", model.string()}, {"sha256", sha256_file_hex(model)}}}};
}

struct ForgedBundle {
  std::filesystem::path bundle;
  std::filesystem::path task;  // the task the forger claims, for verify --task
};

// An honest bundle of `steps` steps of the linear model (checkpoints every `checkpoint_every`),
// with `model_kind` put in its place, under a task whose budget.max_wall_seconds is
// `max_wall_seconds`, resealed with the solver's `key`.
ForgedBundle forge_with_model(const ScratchDir& dir, const std::filesystem::path& key, const std::string& model_kind,
                              int steps, int checkpoint_every, double max_wall_seconds) {
  const auto honest_task = write_task(dir.path(), "honest", small_task("replay-budget", steps, checkpoint_every,
                                                                       torchscript_model(exported_model(dir.path(), "linear"))));
  const auto bundle = dir / "bundle";
  REQUIRE(run_solver({"run", honest_task.string(), "--out", bundle.string(), "--key", key.string()}).exit_code == 0);

  const auto model = exported_model(dir.path(), model_kind);
  std::filesystem::copy_file(model, bundle / "model.pt", std::filesystem::copy_options::overwrite_existing);
  Forger forger(bundle, key);
  proof::Manifest& manifest = forger.manifest();
  manifest.task["model"] = torchscript_model(model);
  manifest.task["budget"]["max_wall_seconds"] = max_wall_seconds;
  manifest.model_sha256 = sha256_file_hex(model);
  REQUIRE(manifest.model_file);
  manifest.model_file->sha256 = manifest.model_sha256;
  manifest.model_file->size = std::filesystem::file_size(model);
  forger.reseal();
  return {bundle, write_task(dir.path(), "claimed", manifest.task)};
}

}  // namespace

TEST_CASE("solver verify rejects a bundle whose TorchScript model never finishes a step, at the replay budget, naming "
          "the stuck step", "[e2e][forgery]") {
  ScratchDir dir("hanging-model");
  // 2^40 loop turns per step on real images: days. The task's wall budget of 3 s gives its
  // replays 6 s, and each replayed step a limit of min(600 s, 6 s).
  const ForgedBundle forged = forge_with_model(dir, make_key(dir.path()), "hangs", 10, 5, 3.0);
  const std::string reason = "ran past its time limit of 6 s and is still running: the model's step did not finish";

  SECTION("as a table") {
    const auto started = std::chrono::steady_clock::now();
    const CommandResult verify = run_solver({"verify", forged.bundle.string(), "--task", forged.task.string()});
    const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count();
    std::printf("solver verify of a hanging model ended after %.1f s\n", seconds);
    check_rejected(verify, "  - replay budget: step ");
    CHECK(verify.output.find(reason) != std::string::npos);
    // The 6 s limit, its grace of 1 s, and the checks before the replay (seconds on a loaded
    // 2-core machine); without the limit the command would run for days.
    CHECK(seconds < 30.0);
  }
  SECTION("as JSON") {
    const CommandResult verify = run_solver({"verify", forged.bundle.string(), "--task", forged.task.string(), "--json"});
    CHECK(verify.exit_code == 1);
    const nlohmann::json verdict = nlohmann::json::parse(verify.output.substr(verify.output.find('{')));
    CHECK(verdict["accepted"] == false);
    REQUIRE(verdict["failures"].size() == 1);
    CHECK(verdict["failures"][0].get<std::string>().find(reason) != std::string::npos);
  }
}

TEST_CASE("solver verify rejects a bundle whose TorchScript model is too slow for the replay budget, and replays no "
          "segment after the budget is spent", "[e2e][forgery]") {
  ScratchDir dir("slow-model");
  const auto key = make_key(dir.path());
  // What a step of the slow model takes here now: the training time of a 2-step run of it.
  const auto calibration_task = write_task(dir.path(), "calibration", small_task("slow-calibration", 2, 1,
                                                                                  torchscript_model(exported_model(dir.path(), "slow:1"))));
  const auto calibration = dir / "calibration";
  REQUIRE(run_solver({"run", calibration_task.string(), "--out", calibration.string(), "--key", key.string()}).exit_code == 0);
  const double step_seconds = read_json(calibration / "manifest.json")["outcome"]["train_seconds"].get<double>() / 2;

  // 20 steps, a checkpoint every 2: top-q replays at least 3 segments of 2 steps, so about 6
  // step times, against a replay budget of 2 step times (a wall budget of one): spent within the
  // first two segments even if replayed steps are faster than these, while a step would have to
  // take over twice as long as these (and a second) to be reported stuck instead.
  const double max_wall_seconds = std::max(0.01, std::round(step_seconds * 100) / 100);
  const ForgedBundle forged = forge_with_model(dir, key, "slow:1", 20, 2, max_wall_seconds);
  const Verification verification = run_verify(forged.bundle, {"--task", forged.task.string()});
  const CommandResult& verify = verification.result;
  check_rejected(verify, "replay failed: replay budget exceeded: the replays took ");
  CHECK(verify.output.find(fmt::format("over the budget of {} s", 2 * max_wall_seconds)) != std::string::npos);
  // The verifier stops at the segment that spent the budget: no later one is replayed, or tried.
  CHECK(verify.output.find("replay failed: replay budget exceeded before step ") == std::string::npos);
  CHECK(verify.output.find("ran past its time limit") == std::string::npos);
}
