// The agent as a steward of the rig, against real `solver agent` and `solver market serve`
// processes: a GPU too hot pauses training between steps; a GPU with uncorrected ECC errors is
// quarantined until the operator clears it; idle_only gives the GPU up to another process and
// takes it back; a step that runs out of memory trains again with its batch in more shards;
// published bundles the market is done with are pruned. The
// GPU is the fake NVML's GPU 0, which the agent watches for its CPU slot (SOLVER_TEST_NVML,
// docs/testing.md); a test changes it through the fake's state file.
#include <signal.h>

#include <catch2/catch.hpp>

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <map>
#include <regex>
#include <thread>
#include <vector>

#include "common/files.h"
#include "tests/agent/fake_nvml_state.h"
#include "tests/e2e/agent_support.h"
#include "tests/e2e/e2e_support.h"

namespace solver::test {
namespace {

using json = nlohmann::json;

// The fake NVML in place of the driver's for the agents this test starts, its GPU 0 as `set` says.
class FakeGpu {
 public:
  explicit FakeGpu(const std::filesystem::path& dir) : state_(dir / "nvml.state") {
    ::setenv("SOLVER_TEST_NVML", SOLVER_FAKE_NVML, 1);
  }
  ~FakeGpu() { ::unsetenv("SOLVER_TEST_NVML"); }
  void set(const FakeGpu0& gpu) { state_.set(gpu); }

 private:
  FakeNvmlState state_;
};

// Waits until the market says the task is completed, with no attempt used (one lease throughout).
void check_completed_on_one_lease(BackgroundProcess& agent, const Market& market, const std::filesystem::path& key,
                                  const std::string& task_id) {
  INFO(agent.output());
  REQUIRE(agent.wait_for_output("task=" + task_id + " completed", 120));
  const json status = task_status(market.url(), key, task_id);
  CHECK(status["state"] == "completed");
  CHECK(status["attempts"] == 0);
}

// The most host memory the task's tensors held in `solver run` with `shards` shards per step,
// in MB, as the run prints it.
double run_peak_mb(const std::filesystem::path& task_file, const std::filesystem::path& key,
                   const std::filesystem::path& out, int shards) {
  const CommandResult run = run_solver({"run", task_file.string(), "--out", out.string(), "--key", key.string(),
                                        "--threads", "1", "--shards", std::to_string(shards)});
  INFO(run.output);
  REQUIRE(run.exit_code == 0);
  std::smatch match;
  REQUIRE(std::regex_search(run.output, match, std::regex("host memory held by tensors at most: ([0-9.]+) MB")));
  return std::stod(match[1]);
}

}  // namespace

TEST_CASE("agent steward: a GPU past thermal.max_celsius pauses training between steps, which goes on once it is cool",
          "[e2e][agent][steward]") {
  ScratchDir dir("agent-steward-heat");
  FakeGpu gpu(dir.path());
  const auto key = make_key(dir / "solver");
  Market market(dir.path(), 0);
  const std::string task_id = submit(market.url(), key, long_task(dir.path(), "heat"));
  BackgroundProcess agent(agent_argv(agent_config(dir.path(), "solver", market.url(), {"solve"}), key), dir / "agent.log");
  REQUIRE(agent.wait_for_output("checkpoint step=200 committed", 60));

  gpu.set({.temperature_c = 92});
  INFO(agent.output());
  REQUIRE(agent.wait_for_output("cpu at 92 °C (thermal.max_celsius 85); training goes on at or below 75 °C: pausing "
                                "between steps", 30));
  std::this_thread::sleep_for(std::chrono::seconds(2));  // the status board's step is the one it paused after
  const json cooling = slot_status(dir / "solver");
  CHECK_THAT(cooling["activity"].get<std::string>(), Catch::StartsWith("cooling: cpu ") && Catch::Contains("92 °C"));
  CHECK(cooling["step"] > 200);
  std::this_thread::sleep_for(std::chrono::seconds(3));
  CHECK(slot_status(dir / "solver")["step"] == cooling["step"]);  // no step trained while hot

  gpu.set({.temperature_c = 80});  // below the ceiling, above thermal.resume_celsius: still cooling
  std::this_thread::sleep_for(std::chrono::seconds(5));
  CHECK(slot_status(dir / "solver")["step"] == cooling["step"]);
  CHECK(agent.output().find("cooled down") == std::string::npos);
  gpu.set({.temperature_c = 70});
  REQUIRE(agent.wait_for_output("cpu cooled down: training may go on", 30));
  check_completed_on_one_lease(agent, market, key, task_id);
}

TEST_CASE("agent steward: a GPU with uncorrected ECC errors is quarantined, its task given back, and cleared it works "
          "again", "[e2e][agent][steward]") {
  ScratchDir dir("agent-steward-ecc");
  FakeGpu gpu(dir.path());
  const auto key = make_key(dir / "solver");
  Market market(dir.path(), 0);
  const std::string task_id = submit(market.url(), key, long_task(dir.path(), "ecc"));
  BackgroundProcess agent(agent_argv(agent_config(dir.path(), "solver", market.url(), {"solve"},
                                                  {{"pause", {{"release_after_seconds", 1}}}}),
                                     key, /*until_idle=*/false),
                          dir / "agent.log");
  REQUIRE(agent.wait_for_output("checkpoint step=200 committed", 60));

  gpu.set({.ecc_uncorrected = 2});
  INFO(agent.output());
  REQUIRE(agent.wait_for_output("cpu quarantined: cpu has 2 uncorrected ECC error(s) since the driver loaded", 30));
  REQUIRE(agent.wait_for_output("given back to the market", 60));
  CHECK(slot_status(dir / "solver")["control"] == "quarantined: cpu has 2 uncorrected ECC error(s) since the driver loaded");
  // The market hears of it: the agent registers again with the quarantined device.
  CHECK(market.process().wait_for_output(
      "quarantined {\"cpu\":\"cpu has 2 uncorrected ECC error(s) since the driver loaded\"}", 10));
  const json released = task_status(market.url(), key, task_id);
  CHECK(released["state"] == "queued");
  CHECK(released["attempts"] == 0);  // the rig's trouble, not the task's: no attempt used, no fault
  std::this_thread::sleep_for(std::chrono::seconds(3));
  CHECK(agent.output().find("claimed", agent.output().find("given back")) == std::string::npos);  // claims nothing

  // The operator fixed the GPU (the errors stay counted: only new ones quarantine it again).
  const CommandResult cleared = run_solver({"agent", "clear", "--work-dir", (dir / "solver").string(), "cpu"});
  INFO(cleared.output);
  CHECK(cleared.exit_code == 0);
  CHECK_THAT(cleared.output, Catch::Contains("cpu cleared: its slot claims again"));
  CHECK(agent.wait_for_output("told the market of the quarantined devices: none", 10));
  check_completed_on_one_lease(agent, market, key, task_id);
  agent.signal(SIGTERM);
  CHECK(agent.wait(30) == 0);
}

TEST_CASE("agent steward: idle_only gives the GPU up when another process starts on it, and resumes on the same lease "
          "once it is gone", "[e2e][agent][steward]") {
  ScratchDir dir("agent-steward-idle");
  FakeGpu gpu(dir.path());
  const auto key = make_key(dir / "solver");
  Market market(dir.path(), 0, /*lease_seconds=*/6);  // held only by the heartbeats while the GPU is busy
  const std::string task_id = submit(market.url(), key, long_task(dir.path(), "idle"));
  BackgroundProcess agent(agent_argv(agent_config(dir.path(), "solver", market.url(), {"solve"},
                                                  {{"idle_only", {{"enabled", true}, {"stop_within_seconds", 30}}}}),
                                     key),
                          dir / "agent.log");
  REQUIRE(agent.wait_for_output("checkpoint step=200 committed", 60));

  gpu.set({.processes = {424242}});  // a game, say
  INFO(agent.output());
  REQUIRE(agent.wait_for_output("idle_only holds cpu", 30));
  const std::optional<std::string> stopped_at =
      agent.wait_for_match("stopped at checkpoint step ([0-9]+) of 6000 while held", 30);
  REQUIRE(stopped_at);
  CHECK_THAT(slot_status(dir / "solver")["control"].get<std::string>(), Catch::StartsWith("idle-only: "));
  std::this_thread::sleep_for(std::chrono::seconds(8));  // longer than the lease: the heartbeats keep it
  CHECK(task_status(market.url(), key, task_id)["state"] == "leased");

  gpu.set({});
  REQUIRE(agent.wait_for_output("cpu is idle: idle_only lets it work", 30));
  CHECK(agent.wait_for_output("resuming from checkpoint step=" + *stopped_at, 30));
  check_completed_on_one_lease(agent, market, key, task_id);
  CHECK(agent.wait(30) == 0);
}

TEST_CASE("agent steward: a step out of the host's memory trains again in two shards, and the bundle verifies",
          "[e2e][agent][steward]") {
  ScratchDir dir("agent-out-of-memory");
  const auto key = make_key(dir / "solver");
  // A convolution's activations far outweigh its weights, which a second shard copies.
  json task = small_task("out-of-memory", 4, 2, {{"kind", "cnn"}, {"channels", {32}}});
  task["training"]["batch_size"] = 512;
  const auto task_file = write_task(dir.path(), "out-of-memory", task);
  const double one_shard = run_peak_mb(task_file, key, dir / "run-1", 1);
  const double two_shards = run_peak_mb(task_file, key, dir / "run-2", 2);
  REQUIRE(two_shards + 20.0 < one_shard);

  Market market(dir.path(), 0);
  const std::string task_id = submit(market.url(), key, task_file);
  // Between the two: one shard runs out, two fit.
  const json limits{{"min_free_disk_gb", 0}, {"max_host_memory_gb", (one_shard + two_shards) / 2 / 1000}};
  const CommandResult agent =
      run_command(agent_argv(agent_config(dir.path(), "solver", market.url(), {"solve"}, {{"limits", limits}}), key));
  INFO(agent.output);
  REQUIRE(agent.exit_code == 0);
  CHECK_THAT(agent.output, Catch::Contains("ran out of memory with 1 shard(s) per step") &&
                               Catch::Contains("limits.max_host_memory_gb") &&
                               Catch::Contains("training again from step 0 with 2") &&
                               Catch::Contains("task=" + task_id + " completed"));
  const json status = task_status(market.url(), key, task_id);
  CHECK(status["state"] == "completed");
  CHECK(status["attempts"] == 0);  // the rig's limit, handled on the rig: no failure reached the market
  const std::filesystem::path bundle = status["completion"]["bundle_address"].get<std::string>();
  CHECK(json::parse(read_file(bundle / "manifest.json"))["runtime"]["shards"] == 2);
  const CommandResult verified = run_solver({"verify", bundle.string()});
  INFO(verified.output);
  CHECK(verified.exit_code == 0);
}

}  // namespace solver::test

namespace solver::test {

TEST_CASE("agent steward: published bundles whose tasks the market has verified are pruned beyond "
          "limits.keep_bundles, the newest kept", "[e2e][agent][steward]") {
  ScratchDir dir("agent-prune");
  const auto solver_key = make_key(dir / "solver");
  const auto verifier_key = make_key(dir / "verifier");
  Market market(dir.path(), 0);
  std::vector<std::string> task_ids;
  for (const std::string name : {"prune-a", "prune-b", "prune-c"})
    task_ids.push_back(submit(market.url(), solver_key, write_task(dir.path(), name, small_task(name, 100, 50))));
  const auto solver_config = agent_config(dir.path(), "solver", market.url(), {"solve"},
                                          {{"limits", {{"min_free_disk_gb", 0}, {"keep_bundles", 1}}}});
  const CommandResult solved = run_command(agent_argv(solver_config, solver_key));
  INFO(solved.output);
  REQUIRE(solved.exit_code == 0);
  // Each bundle as the store holds it, and the newest of them.
  std::map<std::filesystem::path, std::filesystem::file_time_type> published;
  for (const auto& entry : std::filesystem::directory_iterator(dir / "published"))
    published[entry.path()] = std::filesystem::last_write_time(entry.path());
  REQUIRE(published.size() == 3);
  const auto newest = std::ranges::max_element(published, {}, &decltype(published)::value_type::second)->first;

  const CommandResult verified =
      run_command(agent_argv(agent_config(dir.path(), "verifier", market.url(), {"verify"}), verifier_key));
  INFO(verified.output);
  REQUIRE(verified.exit_code == 0);
  for (const std::string& task_id : task_ids) REQUIRE(task_status(market.url(), solver_key, task_id)["state"] == "verified");

  // The solver's next start prunes: the two older bundles go, the newest stays.
  const CommandResult pruned = run_command(agent_argv(solver_config, solver_key));
  INFO(pruned.output);
  REQUIRE(pruned.exit_code == 0);
  std::vector<std::filesystem::path> left;
  for (const auto& entry : std::filesystem::directory_iterator(dir / "published")) left.push_back(entry.path());
  CHECK(left == std::vector<std::filesystem::path>{newest});
  CHECK(std::ranges::count_if(task_ids, [&](const std::string& task_id) {
          return pruned.output.find("task=" + task_id + " pruned its published bundle") != std::string::npos;
        }) == 2);
}

}  // namespace solver::test
