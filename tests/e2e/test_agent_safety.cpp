// The agent as a guest that cannot be made to overreach, and a broken rig that cannot harm the
// market: a device that is not there, tasks beyond the rig's ceilings, configuration mistakes,
// a second agent on the same work dir, and the signals an operator (or a closed terminal) sends.
// Real `solver market serve` and `solver agent` processes on 127.0.0.1.
#include <signal.h>
#include <sys/stat.h>

#include <catch2/catch.hpp>

#include <chrono>
#include <thread>

#include "tests/e2e/agent_support.h"
#include "tests/e2e/e2e_support.h"

namespace solver::test {
namespace {

using json = nlohmann::json;

void check_exit(const CommandResult& result, int status, const std::string& says) {
  INFO(result.output);
  CHECK(result.exit_code == status);
  CHECK_THAT(result.output, Catch::Contains(says));
}

TEST_CASE("agent: a device LibTorch cannot use stops it at start with exit 69, before it claims any task", "[e2e][agent]") {
  ScratchDir dir("agent-no-gpu");
  const auto key = make_key(dir / "solver");
  Market market(dir.path(), 0);
  std::vector<std::string> ids;
  for (const std::string name : {"no-gpu-0", "no-gpu-1", "no-gpu-2"})
    ids.push_back(submit(market.url(), key, write_task(dir.path(), name, small_task(name, 50, 25))));
  const CommandResult run =
      run_command(agent_argv(agent_config(dir.path(), "solver", market.url(), {"solve"}, {{"devices", {"cuda:7"}}}), key));
  check_exit(run, 69, "config.devices cuda:7 need 8 CUDA device(s), but LibTorch can use 0");
  for (const std::string& id : ids) {
    const json status = task_status(market.url(), key, id);
    CHECK(status["state"] == "queued");
    CHECK(status["attempts"] == 0);
  }
}

TEST_CASE("agent: --device replaces the config's devices: a CUDA device LibTorch cannot use exits 69, a malformed one 64",
          "[e2e][agent]") {
  ScratchDir dir("agent-device-flag");
  const auto key = make_key(dir / "solver");
  Market market(dir.path(), 0);  // no work: an agent that ignored the flag would register and exit 0
  std::vector<std::string> argv = agent_argv(agent_config(dir.path(), "solver", market.url(), {"solve"}), key);  // devices: cpu
  argv.insert(argv.end(), {"--device", "cuda:7"});
  check_exit(run_command(argv), 69, "cuda:7 need 8 CUDA device(s), but LibTorch can use 0");
  argv.back() = "gpu7";
  check_exit(run_command(argv), 64, "gpu7");
}

TEST_CASE("agent: the market is --market, else $SOLVER_MARKET, else the config's, and --threads replaces the config's",
          "[e2e][agent]") {
  ScratchDir dir("agent-market-env");
  const auto key = make_key(dir / "solver");
  std::filesystem::create_directories(dir / "other");
  Market market(dir.path(), 0);
  Market other(dir / "other", 0);  // empty: an agent that works there exits at once with nothing done
  const std::string task_id = submit(market.url(), key, write_task(dir.path(), "task", small_task("market-env", 50, 25)));
  const std::vector<std::string> agent = agent_argv(agent_config(dir.path(), "solver", other.url(), {"solve"}), key);  // threads: 1

  // The environment's market over the config's, and the flag's threads over the config's.
  std::vector<std::string> from_env{"/usr/bin/env", "SOLVER_MARKET=" + market.url(), solver_binary().string(), "-v"};
  from_env.insert(from_env.end(), agent.begin() + 1, agent.end());
  from_env.insert(from_env.end(), {"--threads", "2"});
  const CommandResult solved = run_command(from_env);
  check_exit(solved, 0, "registered with " + market.url());
  CHECK_THAT(solved.output, Catch::Contains("task=market-env") && Catch::Contains("threads=2"));
  CHECK(task_status(market.url(), key, task_id)["state"] == "completed");

  // The flag's market over the environment's.
  std::vector<std::string> from_flag{"/usr/bin/env", "SOLVER_MARKET=" + other.url()};
  from_flag.insert(from_flag.end(), agent.begin(), agent.end());
  from_flag.insert(from_flag.end(), {"--market", market.url()});
  check_exit(run_command(from_flag), 0, "registered with " + market.url());
}

TEST_CASE("agent: a task beyond this rig's ceilings is declined before it trains, and goes back to the market",
          "[e2e][agent]") {
  ScratchDir dir("agent-ceilings");
  const auto key = make_key(dir / "solver");
  Market market(dir.path(), 0);
  const std::string long_task = submit(market.url(), key, write_task(dir.path(), "long", small_task("too-long", 300, 50)));
  const CommandResult declined = run_command(agent_argv(
      agent_config(dir.path(), "solver", market.url(), {"solve"}, {{"limits", {{"min_free_disk_gb", 0}, {"max_task_steps", 100}}}}),
      key));
  INFO(declined.output);
  CHECK(declined.exit_code == 0);
  CHECK_THAT(declined.output, Catch::Contains("declined: the task asks for 300 steps, this rig's ceiling is 100"));
  CHECK_THAT(declined.output, !Catch::Contains("training steps"));
  json status = task_status(market.url(), key, long_task);
  CHECK(status["state"] == "queued");  // for a rig with higher ceilings

  // What only the loaded task tells: its bundle (checkpoints of a 25k-parameter MLP and its
  // Adam moments, about 0.3 MB each) would not fit a 1 MB disk ceiling. Another rig (another
  // key): the market never offers a task again to a rig that turned it down.
  const CommandResult too_big = run_command(agent_argv(
      agent_config(dir.path(), "small-disk", market.url(), {"solve"},
                   {{"limits", {{"min_free_disk_gb", 0}, {"max_task_disk_gb", 0.001}}}}),
      make_key(dir / "small-disk")));
  INFO(too_big.output);
  CHECK_THAT(too_big.output, Catch::Contains("declined: the task's inputs and bundle") &&
                                 Catch::Contains("limits.max_task_disk_gb"));
  CHECK_THAT(too_big.output, !Catch::Contains("checkpoint step=50 committed"));
  status = task_status(market.url(), key, long_task);
  CHECK(status["state"] == "queued");
}

TEST_CASE("agent: a black hole (a rig that fails every task by its own fault) loses no task: it stops claiming, "
          "the attempts are not counted, and a healthy rig completes them all",
          "[e2e][agent]") {
  ScratchDir dir("agent-black-hole");
  const auto broken_key = make_key(dir / "broken");
  const auto healthy_key = make_key(dir / "healthy");
  // No hold by the market here (its hold is tested in the market's own tests): the agent's own limit stops it.
  BackgroundProcess market_process({solver_binary().string(), "market", "serve", "--db", (dir / "market.db").string(), "--port",
                                    "0", "--fault-hold-seconds", "0"},
                                   dir / "market.log");
  const std::string url = market_process.wait_for_match(R"(listening on (http://127\.0\.0\.1:[0-9]+))", 30).value_or("");
  REQUIRE(!url.empty());
  std::vector<std::string> ids;
  for (const std::string name : {"hole-0", "hole-1", "hole-2", "hole-3"}) {
    ids.push_back(submit(url, healthy_key, write_task(dir.path(), name, small_task(name, 50, 25))));
    // A disk that fails this rig for every task: where the bundle goes, a file is in the way.
    write_text(dir / "broken" / "tasks" / ids.back() / "bundle", "in the way");
  }
  const CommandResult broken = run_command(agent_argv(agent_config(dir.path(), "broken", url, {"solve"}), broken_key));
  INFO(broken.output);
  CHECK(broken.exit_code == 0);
  CHECK_THAT(broken.output, Catch::Contains("(worker fault)") &&
                                Catch::Contains("3 tasks failed in a row by no fault of theirs: claiming nothing more"));
  int failed_here = 0;
  for (const std::string& id : ids) {
    const json status = task_status(url, healthy_key, id);
    CHECK(status["state"] == "queued");
    CHECK(status["attempts"] == 0);
    if (status["failure_reason"].is_string()) {
      ++failed_here;
      CHECK_THAT(status["failure_reason"].get<std::string>(), Catch::StartsWith("worker fault: "));
    }
  }
  CHECK(failed_here == 3);

  const CommandResult healthy = run_command(agent_argv(agent_config(dir.path(), "healthy", url, {"solve"}), healthy_key));
  INFO(healthy.output);
  CHECK(healthy.exit_code == 0);
  for (const std::string& id : ids) {
    const json status = task_status(url, healthy_key, id);
    CHECK(status["state"] == "completed");
    CHECK(status["attempts"] == 0);
  }
}

TEST_CASE("agent: configuration mistakes exit 78 naming what is wrong, and one work dir takes one agent", "[e2e][agent]") {
  ScratchDir dir("agent-config-errors");
  const auto key = make_key(dir / "solver");
  const std::string nowhere = "http://127.0.0.1:" + std::to_string(free_port());
  check_exit(run_solver({"agent", "--config", (dir / "absent.json").string(), "--key", key.string()}), 78,
             "cannot read the agent config");
  check_exit(run_command(agent_argv(agent_config(dir.path(), "huge", nowhere, {"solve"}, {{"limits", {{"cache_gb", 1e30}}}}), key)),
             78, "config.limits.cache_gb: expected 0 to 1e+06 GB, got 1e+30");
  check_exit(run_command(agent_argv(agent_config(dir.path(), "slow", nowhere, {"solve"}, {{"poll", {{"min_seconds", 1e300}}}}), key)),
             78, "config.poll.min_seconds");
  // A verifier's threshold comes from profiles it chose, never from a fixed delta a forger can rely on.
  check_exit(run_command(agent_argv(agent_config(dir.path(), "delta", nowhere, {"verify"}, {{"verify", {{"delta", 0.001}}}}), key)),
             78, "config.verify.delta: no longer read");
  write_text(dir / "old-profile.json", R"({"schema": "solver.profile/1", "task_sha256": "00"})");
  check_exit(run_command(agent_argv(agent_config(dir.path(), "profiles", nowhere, {"verify"},
                                                 {{"verify", {{"profiles", {(dir / "old-profile.json").string()}}}}}),
                                    key)),
             78, "cannot be used");
  // A work dir that cannot be made (root may write anywhere, so a file stands in the way).
  write_text(dir / "a-file", "not a folder");
  check_exit(run_command(agent_argv(agent_config(dir.path(), "blocked", nowhere, {"solve"},
                                                 {{"work_dir", (dir / "a-file" / "work").string()}}),
                                    key)),
             78, "config.work_dir: cannot write in");

  const auto secret = agent_config(dir.path(), "secret", nowhere, {"solve"},
                                   {{"storage", {{"kind", "s3"}, {"bucket", "b"}, {"endpoint", "http://127.0.0.1:1"},
                                                 {"access_key_id", "AKIA"}, {"secret_access_key", "s3cr3t"}}}});
  ::chmod(secret.c_str(), 0644);
  const CommandResult open_secret = run_command(agent_argv(secret, key));
  check_exit(open_secret, 78, "holds storage.secret_access_key)");
  CHECK_THAT(open_secret.output, Catch::Contains("is readable by others (mode 0644): run chmod 600"));

  // The market is unreachable, so the first agent waits (registering with backoff) while holding its work dir.
  const auto shared = agent_config(dir.path(), "shared", nowhere, {"solve"});
  BackgroundProcess first(agent_argv(shared, key, /*until_idle=*/false), dir / "first.log");
  REQUIRE(first.wait_for_output("unreachable", 30));
  check_exit(run_command(agent_argv(shared, key)), 78,
             "another agent (pid " + std::to_string(first.pid()) + ") works in " + (dir / "shared").string());
  first.signal(SIGTERM);
  CHECK(first.wait(20) == 0);
}

TEST_CASE("solver: a missing bundle is bad input (2) and an unreachable market a temporary failure (75)", "[e2e]") {
  ScratchDir dir("exit-statuses");
  const auto key = make_key(dir.path());
  check_exit(run_solver({"verify", (dir / "no-such-bundle").string()}), 2, "no-such-bundle");
  const std::string nowhere = "http://127.0.0.1:" + std::to_string(free_port());
  check_exit(run_solver({"market", "status", "--market", nowhere, "--key", key.string()}), 75, "127.0.0.1");
}

TEST_CASE("agent: SIGHUP reloads its config and it goes on working, and SIGQUIT stops it cleanly like SIGTERM", "[e2e][agent]") {
  ScratchDir dir("agent-signals");
  const auto key = make_key(dir / "solver");
  Market market(dir.path(), 0);
  const auto config = agent_config(dir.path(), "solver", market.url(), {"solve"});
  BackgroundProcess agent(agent_argv(config, key, /*until_idle=*/false), dir / "agent.log");
  REQUIRE(agent.wait_for_output("registered with", 30));
  // A changed ceiling applies from now on; a changed market needs a restart, and says so.
  agent_config(dir.path(), "solver", "http://127.0.0.1:1", {"solve"}, {{"limits", {{"min_free_disk_gb", 0}, {"max_task_steps", 10}}}});
  agent.signal(SIGHUP);
  REQUIRE(agent.wait_for_output("reloaded the config", 20));
  CHECK_THAT(agent.output(), Catch::Contains("market changed too, which needs a restart"));
  const std::string id = submit(market.url(), key, write_task(dir.path(), "t", small_task("after-reload", 50, 25)));
  CHECK(agent.wait_for_output("declined: the task asks for 50 steps, this rig's ceiling is 10", 30));
  CHECK(agent.running());

  agent.signal(SIGQUIT);
  const std::optional<int> status = agent.wait(20);
  INFO(agent.output());
  CHECK(status == 0);
  CHECK(read_json(dir / "solver" / "status.json")["activity"] == "stopped");
  CHECK(task_status(market.url(), key, id)["state"] == "queued");
}

}  // namespace
}  // namespace solver::test
