// `solver dispute` against real bundles: two honest runs of a small task, and forgeries of one
// of them made with tests/e2e/forger.h (a perturbed checkpoint, an altered recorded loss, a
// tampered file left unsealed). The referee must name the honest side in either argument order.
#include <catch2/catch.hpp>

#include "tests/e2e/e2e_support.h"
#include "tests/e2e/forger.h"

using namespace solver;
using namespace solver::test;
using nlohmann::json;

namespace {

// 20 steps, a checkpoint every 5: segments 1-5, 6-10, 11-15, 16-20.
struct DisputeWorld {
  ScratchDir dir{"dispute"};
  std::filesystem::path key;     // the honest solvers' (and the forger's) key
  std::filesystem::path task;
  std::filesystem::path honest;  // `solver run` of the task
  std::filesystem::path second;  // the same task run again under another key
};

std::filesystem::path run_task(const std::filesystem::path& task, const std::filesystem::path& key, const std::filesystem::path& out) {
  const CommandResult run = run_solver({"run", task.string(), "--out", out.string(), "--key", key.string(), "--threads", "1"});
  REQUIRE(run.exit_code == 0);
  return out;
}

const DisputeWorld& world() {
  static DisputeWorld* made = [] {
    auto* world = new DisputeWorld;
    world->key = make_key(world->dir.path());
    world->task = write_task(world->dir.path(), "task", small_task("dispute", 20, 5));
    world->honest = run_task(world->task, world->key, world->dir / "honest");
    world->second = run_task(world->task, make_key(world->dir / "second-solver"), world->dir / "second");
    return world;
  }();
  return *made;
}

CommandResult dispute(const std::filesystem::path& a, const std::filesystem::path& b) {
  return run_solver({"dispute", a.string(), b.string(), "--threads", "1"});
}

json dispute_json(const std::filesystem::path& a, const std::filesystem::path& b) {
  const CommandResult result = run_solver({"dispute", a.string(), b.string(), "--threads", "1", "--json", "-q"});
  REQUIRE(result.exit_code == 0);
  return json::parse(result.output);
}

// A copy of the honest bundle whose checkpoint `index` has every parameter moved by 0.01, resealed.
std::filesystem::path forge_checkpoint(const std::filesystem::path& to, std::size_t index) {
  copy_bundle(world().honest, to);
  Forger forger(to, world().key);
  checkpoint::Checkpoint state = forger.checkpoint_at(index);
  for (auto& tensor : state.tensors) {
    if (!tensor.name.starts_with("param.")) continue;
    auto* values = reinterpret_cast<float*>(tensor.data.data());
    for (std::int64_t i = 0; i < tensor.element_count(); ++i) values[i] += 0.01f;
  }
  forger.replace_checkpoint(index, state);
  forger.reseal();
  return to;
}

}  // namespace

TEST_CASE("dispute: two honest bundles of the same task agree", "[e2e][dispute]") {
  const CommandResult result = dispute(world().honest, world().second);
  CHECK(result.exit_code == 0);
  CHECK(result.output.find("verdict: they agree") != std::string::npos);
}

TEST_CASE("dispute: a perturbed checkpoint is the first divergent one and the replay supports the honest side in either order",
          "[e2e][dispute]") {
  ScratchDir dir("dispute-checkpoint");
  // Checkpoint 2 is step 10, the end of the second segment (steps 6-10).
  const auto forged = forge_checkpoint(dir / "forged", 2);
  for (const bool honest_first : {true, false}) {
    const auto& a = honest_first ? world().honest : forged;
    const auto& b = honest_first ? forged : world().honest;
    const CommandResult result = dispute(a, b);
    CHECK(result.exit_code == 0);
    CHECK(result.output.find("first divergent checkpoint: step 10 (segment steps 6-10)") != std::string::npos);
    CHECK(result.output.find(std::string("verdict: the replay supports ") + (honest_first ? "A" : "B") + " (" +
                             world().honest.string() + ")") != std::string::npos);
  }
  const json report = dispute_json(world().honest, forged);
  CHECK(report["supported"] == "A");
  CHECK(report["divergent_checkpoint"] == 10);
  CHECK(report["divergence"] == "end state");
  CHECK(report["a"]["end_state_matches"] == true);
  CHECK(report["b"]["end_state_matches"] == false);
  CHECK(report["b"]["first_wrong_loss"].is_null());  // the records were left honest
  // The trace of the divergent step: every module of the MLP, the loss and every gradient.
  REQUIRE(report["trace"].size() == 4 + 1 + 4);
  CHECK(report["trace"][0]["name"] == "output 0 (Flatten)");
  CHECK(report["trace"][4]["name"] == "loss");
  // The trace recomputes the step bit for bit: its loss is the one the honest side recorded.
  const float recorded_loss = Forger(world().honest, world().key).segment(1).back().loss;
  CHECK(report["trace"][4]["l2_norm"].get<double>() == static_cast<double>(recorded_loss));
  CHECK(report["trace"][5]["name"] == "gradient 1.weight");
}

TEST_CASE("dispute: a side from another runtime is judged within delta, and still wins against a forgery", "[e2e][dispute]") {
  ScratchDir dir("dispute-runtime");
  // The honest bundle as if trained with 2 threads: the referee (1 thread) cannot demand bits from it.
  const auto elsewhere = copy_bundle(world().honest, dir / "elsewhere");
  {
    Forger forger(elsewhere, world().key);
    forger.manifest().runtime.threads = 2;
    forger.reseal();
  }
  const auto forged = forge_checkpoint(dir / "forged", 2);
  const json report = dispute_json(elsewhere, forged);
  CHECK(report["a"]["same_runtime"] == false);
  CHECK(report["b"]["same_runtime"] == true);
  CHECK(report["a"]["end_state_matches"] == true);   // within delta
  CHECK(report["b"]["end_state_matches"] == false);  // bit for bit, and it is not
  CHECK(report["supported"] == "A");
  CHECK(report["divergent_checkpoint"] == 10);
}

TEST_CASE("dispute: an altered recorded loss is found at exactly its step", "[e2e][dispute]") {
  ScratchDir dir("dispute-loss");
  const auto forged = copy_bundle(world().honest, dir / "forged");
  Forger forger(forged, world().key);
  std::vector<StepRecord> steps = forger.segment(2);  // steps 11-15
  REQUIRE(steps[2].step == 13);
  steps[2].loss += 0.25f;
  forger.replace_segment(2, steps);
  forger.reseal();

  const CommandResult result = dispute(forged, world().honest);
  CHECK(result.exit_code == 0);
  CHECK(result.output.find("first divergent checkpoint: step 15 (segment steps 11-15)") != std::string::npos);
  CHECK(result.output.find("first divergent step: 13 (loss)") != std::string::npos);
  CHECK(result.output.find("verdict: the replay supports B (" + world().honest.string() + ")") != std::string::npos);
  const json report = dispute_json(world().honest, forged);
  CHECK(report["divergent_step"] == 13);
  CHECK(report["b"]["first_wrong_loss"] == 13);
  CHECK(report["a"]["first_wrong_loss"].is_null());
  CHECK(report["supported"] == "A");
}

TEST_CASE("dispute: a bundle that fails the checks without training loses outright", "[e2e][dispute]") {
  ScratchDir dir("dispute-invalid");
  const auto tampered = copy_bundle(world().honest, dir / "tampered");
  Forger forger(tampered, world().key);
  checkpoint::Checkpoint state = forger.checkpoint_at(1);
  state.tensors.front().data.front() ^= std::byte{1};
  forger.replace_checkpoint(1, state);  // not resealed: the manifest's hash no longer matches

  const CommandResult result = dispute(tampered, world().second);
  CHECK(result.exit_code == 0);
  CHECK(result.output.find("is invalid and loses outright") != std::string::npos);
  CHECK(result.output.find("verdict: the replay supports B (" + world().second.string() + ")") != std::string::npos);
}

TEST_CASE("dispute: bundles of different tasks are refused with exit status 2", "[e2e][dispute]") {
  ScratchDir dir("dispute-tasks");
  json other_task = small_task("dispute", 20, 5);
  other_task["seed"] = 99;
  const auto other = run_task(write_task(dir.path(), "other", other_task), world().key, dir / "other");
  const CommandResult result = dispute(world().honest, other);
  CHECK(result.exit_code == 2);
  CHECK(result.output.find("a dispute is between two bundles of the same task") != std::string::npos);
}
