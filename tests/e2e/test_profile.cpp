// solver profile on real training (docs/profiling.md): thresholds from replays of a small
// bundle and of a task, and solver verify --profile applying them. Trains with --threads 2; the
// profile compares 1 and 2 threads and reports what it sees rather than assuming equality.
#include <catch2/catch.hpp>

#include <algorithm>
#include <cmath>

#include "tests/e2e/e2e_support.h"
#include "tests/e2e/forger.h"

using namespace solver;
using namespace solver::test;
using nlohmann::json;

namespace {

// 40 steps, a checkpoint every 10: the profile replays steps 1-10, 21-30 and 31-40.
struct ProfileWorld {
  ScratchDir dir{"profile"};
  std::filesystem::path key;
  std::filesystem::path bundle;
  std::filesystem::path profile;
  CommandResult profile_run;

  ProfileWorld() {
    key = make_key(dir.path());
    const auto task = write_task(dir.path(), "mlp", small_task("profile-mlp", 40, 10));
    bundle = dir / "bundle";
    REQUIRE(run_solver({"run", task.string(), "--out", bundle.string(), "--key", key.string(), "--threads", "2"}).exit_code == 0);
    profile = dir / "profile.json";
    profile_run = run_solver({"profile", bundle.string(), "--threads-list", "1,2", "--out", profile.string()});
  }
};

ProfileWorld& world() {
  static ProfileWorld instance;
  return instance;
}

json variation(const json& profile, const std::string& name) {
  for (const json& entry : profile["variations"])
    if (entry["name"] == name) return entry;
  FAIL("the profile has no variation " << name);
  return {};
}

// A copy of the bundle (trained with 2 threads), for a verifier that replays with 1 thread
// (--max-threads 1): a runtime other than the bundle's, both measured by the profile, so the
// profile's thresholds apply instead of bitwise equality.
std::filesystem::path bundle_copy(const std::string& name) { return copy_bundle(world().bundle, world().dir / name); }

}  // namespace

TEST_CASE("solver profile of a bundle: positive thresholds, the same settings twice bitwise equal", "[e2e]") {
  const CommandResult& run = world().profile_run;
  REQUIRE(run.exit_code == 0);
  CHECK(run.output.find("same settings twice: bitwise equal") != std::string::npos);
  CHECK((run.output.find("not measured: cuda") != std::string::npos || run.output.find("device=cuda:0") != std::string::npos));

  const json profile = read_json(world().profile);
  const json manifest = read_json(world().bundle / "manifest.json");
  CHECK(profile["schema"] == "solver.profile/2");
  CHECK(profile["runtimes"].size() == profile["variations"].size());
  CHECK(profile["source"] == "bundle");
  CHECK(profile["task_sha256"] == manifest["task_sha256"]);

  const json reference = variation(profile, "reference");
  REQUIRE(reference["pieces"].size() == 3);
  CHECK(reference["pieces"][0]["first_step"] == 1);
  CHECK(reference["pieces"][1]["first_step"] == 21);
  CHECK(reference["pieces"][2]["last_step"] == 40);
  // Same build, device and threads as the run: the replay reproduces the claimed checkpoints.
  for (const json& piece : reference["pieces"]) CHECK(piece["from_claimed"]["l2"] == 0.0);

  const json repeat = variation(profile, "repeat");
  CHECK(repeat["bitwise_equal"] == true);
  CHECK(repeat["spread"]["parts"]["param"]["l2"] == 0.0);
  CHECK(repeat["spread"]["parts"]["optim.exp_avg_sq"]["l2"] == 0.0);

  const json two_threads = variation(profile, "threads=2");
  CHECK(two_threads["runtime"]["threads"] == 2);
  WARN("1 vs 2 threads bitwise equal on this machine: " << two_threads["bitwise_equal"] << ", parameters' l2 spread "
                                                          << two_threads["spread"]["parts"]["param"]["l2"]);

  // A threshold for every part of the state (the task trains with Adam), and for the losses.
  const double safety = profile["safety_factor"];
  const json& parts = profile["thresholds"]["parts"];
  CHECK(parts.size() == 3);
  for (const char* part : {"param", "optim.exp_avg", "optim.exp_avg_sq"})
    for (const char* metric : {"l1", "l2", "linf", "cosine_distance"}) {
      INFO(part << " " << metric);
      const double threshold = parts[part][metric];
      CHECK(std::isfinite(threshold));
      CHECK(threshold > 0.0);
      const double observed = profile["observed_spread"]["parts"][part][metric];
      const double floor = profile["floor"]["parts"][part][metric];
      CHECK(threshold == Approx(safety * std::max(observed, floor)));
    }
  CHECK(profile["thresholds"]["loss"] ==
        Approx(safety * std::max(profile["observed_spread"]["loss"].get<double>(), profile["floor"]["loss"].get<double>())));
}

TEST_CASE("solver verify --profile accepts the honest bundle on another runtime and rejects a checkpoint moved by more than δ", "[e2e]") {
  REQUIRE(world().profile_run.exit_code == 0);
  const std::string profile = world().profile.string();

  const auto honest = bundle_copy("honest-2-threads");
  const CommandResult unjudged = run_solver({"verify", honest.string(), "--max-threads", "1"});
  CHECK(unjudged.exit_code == 3);  // no profile: another runtime is not judged
  CHECK(unjudged.output.find("verdict: NOT JUDGED HERE") != std::string::npos);
  const CommandResult accepted =
      run_solver({"verify", honest.string(), "--segments", "all", "--max-threads", "1", "--profile", profile, "--json"});
  REQUIRE(accepted.exit_code == 0);
  const json verdict = json::parse(accepted.output.substr(accepted.output.find('{')));
  CHECK(verdict["accepted"] == true);
  CHECK(verdict["same_runtime"] == false);
  for (const json& segment : verdict["segments"]) {
    CHECK(segment["bitwise_required"] == false);
    CHECK(segment["distances"].contains("optim.exp_avg_sq"));  // every part compared, not only the parameters
  }

  // Checkpoint 20 moved 2% of the way back to checkpoint 10: far below a training step, far above δ.
  const auto forged = bundle_copy("forged-2-threads");
  {
    Forger forger(forged, world().key);
    checkpoint::Checkpoint state = forger.checkpoint_at(2);
    interpolate_parameters(state, forger.checkpoint_at(2), forger.checkpoint_at(1), 0.02f);
    forger.replace_checkpoint(2, state);
    forger.reseal();
  }
  const CommandResult rejected =
      run_solver({"verify", forged.string(), "--segments", "all", "--max-threads", "1", "--profile", profile});
  check_rejected(rejected, "segment steps 11-20: replay differs from the claimed checkpoint beyond the thresholds of profile ");
  CHECK(rejected.output.find("> threshold") != std::string::npos);
}

TEST_CASE("solver profile of a task, and verify refuses a profile measured for another task", "[e2e]") {
  REQUIRE(world().profile_run.exit_code == 0);
  json other = small_task("profile-other", 40, 10);
  other["seed"] = 99;
  const auto other_task = write_task(world().dir.path(), "other", other);
  const auto other_profile = world().dir / "other-profile.json";
  const CommandResult run =
      run_solver({"profile", other_task.string(), "--steps", "5", "--threads-list", "1", "--out", other_profile.string()});
  REQUIRE(run.exit_code == 0);
  const json profile = read_json(other_profile);
  CHECK(profile["source"] == "task");
  const json reference = variation(profile, "reference");
  REQUIRE(reference["pieces"].size() == 1);
  CHECK(reference["pieces"][0]["first_step"] == 1);
  CHECK(reference["pieces"][0]["last_step"] == 5);
  CHECK(variation(profile, "repeat")["bitwise_equal"] == true);
  CHECK(profile["thresholds"]["parts"]["param"]["l2"] > 0.0);

  const CommandResult refused = run_solver({"verify", world().bundle.string(), "--profile", other_profile.string()});
  CHECK(refused.exit_code == 78);
  CHECK(refused.output.find("was measured for task " + profile["task_sha256"].get<std::string>()) != std::string::npos);

  const auto not_a_profile = world().dir / "not-a-profile.json";
  write_text(not_a_profile, R"({"schema": "solver.profile/1", "task_sha256": "00"})");
  const CommandResult unusable = run_solver({"verify", world().bundle.string(), "--profile", not_a_profile.string()});
  CHECK(unusable.exit_code == 78);
  CHECK(unusable.output.find("cannot be used") != std::string::npos);
}
