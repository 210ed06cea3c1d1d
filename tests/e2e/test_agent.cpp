// `solver agent` against `solver market serve`, both real processes on 127.0.0.1: the whole task
// life, and the faults an unattended rig meets (kill -9, SIGTERM, an expired lease, a market
// restarted or down for a while, a market that answers garbage, a solver that rewrote its bundle).
#include <signal.h>
#include <sys/socket.h>
#include <netinet/in.h>
#include <unistd.h>

#include <catch2/catch.hpp>
#include <httplib.h>

#include <atomic>
#include <chrono>
#include <regex>
#include <thread>

#include "common/files.h"
#include "common/keys.h"
#include "common/sha256.h"
#include "common/task.h"
#include "net/market_client.h"
#include "tests/e2e/agent_support.h"
#include "tests/e2e/e2e_support.h"
#include "tests/e2e/forger.h"
#include "tests/local_http_server.h"
#include "tests/net/s3_server.h"

namespace solver::test {
namespace {

using json = nlohmann::json;
using Clock = std::chrono::steady_clock;

// A task long enough (about 5 s on one thread) to be interrupted in the middle.
std::filesystem::path long_task(const std::filesystem::path& dir) {
  return write_task(dir, "long", small_task("agent-long", 6000, 200));
}

// The last "checkpoint step=N committed" the agent logged.
int last_committed_step(const std::string& log) {
  int last = -1;
  const std::regex pattern("checkpoint step=([0-9]+) committed");
  for (auto it = std::sregex_iterator(log.begin(), log.end(), pattern); it != std::sregex_iterator(); ++it)
    last = std::stoi((*it)[1]);
  return last;
}

bool wait_for_commit(BackgroundProcess& agent, int at_least_step, double timeout_seconds) {
  const auto deadline = Clock::now() + std::chrono::duration<double>(timeout_seconds);
  while (Clock::now() < deadline && agent.running()) {
    if (last_committed_step(agent.output()) >= at_least_step) return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  return false;
}

TEST_CASE("agent: a submitted task is trained, published, completed, then verified by another agent", "[e2e][agent]") {
  ScratchDir dir("agent-life");
  const auto solver_key = make_key(dir / "solver");
  const auto verifier_key = make_key(dir / "verifier");
  Market market(dir.path(), 0);
  const std::string task_id = submit(market.url(), solver_key, write_task(dir.path(), "task", small_task("agent-life", 300, 50)));
  write_text(dir / "solver" / "bench.json", R"({"cpu": {"matmul_fp32_gflops": 6.0}})");  // as `solver bench --save` leaves it

  const CommandResult solved = run_command(agent_argv(agent_config(dir.path(), "solver", market.url(), {"solve"}), solver_key));
  INFO(solved.output);
  REQUIRE(solved.exit_code == 0);
  CHECK_THAT(solved.output, Catch::Contains("with the bench figures of " + (dir / "solver" / "bench.json").string()));
  CHECK_THAT(solved.output, Catch::Contains("task=" + task_id + " claimed") && Catch::Contains("published") &&
                                Catch::Contains("task=" + task_id + " completed"));
  CHECK_FALSE(std::filesystem::exists(dir / "solver" / "tasks" / task_id));  // delivered: nothing left in flight

  json status = task_status(market.url(), solver_key, task_id);
  REQUIRE(status["state"] == "completed");
  const std::string bundle = status["completion"]["bundle_address"];
  CHECK(status["commitments"].size() == 7);  // steps 0, 50, ..., 300
  CHECK(run_solver({"verify", bundle, "--expect-key", SigningKey::load(solver_key).public_key_hex()}).exit_code == 0);

  const CommandResult verified =
      run_command(agent_argv(agent_config(dir.path(), "verifier", market.url(), {"verify"}), verifier_key));
  INFO(verified.output);
  REQUIRE(verified.exit_code == 0);
  CHECK_THAT(verified.output, Catch::Contains("verdict ACCEPTED"));
  status = task_status(market.url(), solver_key, task_id);
  CHECK(status["state"] == "verified");

  const CommandResult shown = run_solver({"status", "--work-dir", (dir / "verifier").string()});
  CHECK(shown.exit_code == 3);  // no agent runs there now, as an init script's `status` says
  CHECK_THAT(shown.output, Catch::Contains("not running") && Catch::Contains("posted 1 verdicts"));
}

TEST_CASE("agent: killed with -9 mid-task, it resumes from its last checkpoint and completes", "[e2e][agent]") {
  ScratchDir dir("agent-kill9");
  const auto key = make_key(dir / "solver");
  Market market(dir.path(), 0);
  const std::string task_id = submit(market.url(), key, long_task(dir.path()));
  const auto config = agent_config(dir.path(), "solver", market.url(), {"solve"});
  int killed_after = 0;
  {
    BackgroundProcess agent(agent_argv(config, key), dir / "agent1.log");
    REQUIRE(wait_for_commit(agent, 1000, 60));
    agent.signal(SIGKILL);
    REQUIRE(agent.wait(10) == 128 + SIGKILL);
    killed_after = last_committed_step(agent.output());
  }
  const auto restarted = Clock::now();
  const CommandResult resumed = run_command(agent_argv(config, key));
  const double recovery_seconds = std::chrono::duration<double>(Clock::now() - restarted).count();
  INFO(resumed.output);
  REQUIRE(resumed.exit_code == 0);
  std::smatch match;
  REQUIRE(std::regex_search(resumed.output, match, std::regex("resuming from checkpoint step=([0-9]+)")));
  const int resumed_from = std::stoi(match[1]);
  CHECK(resumed_from >= killed_after);  // every committed checkpoint was journaled before it was committed
  CHECK_THAT(resumed.output, Catch::Contains("task=" + task_id + " completed"));
  WARN("kill -9 after committing step " << killed_after << ": resumed from step " << resumed_from << ", finished in "
                                         << recovery_seconds << " s");
  const json status = task_status(market.url(), key, task_id);
  CHECK(status["state"] == "completed");
  CHECK(status["attempts"] == 0);  // the same lease throughout: no lease ended without a completion
  CHECK(run_solver({"verify", status["completion"]["bundle_address"].get<std::string>()}).exit_code == 0);
}

TEST_CASE("agent: SIGTERM stops it within seconds, exit 0, and a restart completes the task", "[e2e][agent]") {
  ScratchDir dir("agent-sigterm");
  const auto key = make_key(dir / "solver");
  Market market(dir.path(), 0);
  const std::string task_id = submit(market.url(), key, long_task(dir.path()));
  const auto config = agent_config(dir.path(), "solver", market.url(), {"solve"});
  {
    BackgroundProcess agent(agent_argv(config, key, /*until_idle=*/false), dir / "agent1.log");
    REQUIRE(wait_for_commit(agent, 600, 60));
    // While it trains, `solver status` says so, with the task's rate and lease.
    const CommandResult shown = run_solver({"status", "--work-dir", (dir / "solver").string()});
    CHECK(shown.exit_code == 0);
    CHECK_THAT(shown.output, Catch::Contains("running") && Catch::Contains("task " + task_id) &&
                                 Catch::Contains("steps/s") && Catch::Contains("lease for"));
    const auto signalled = Clock::now();
    agent.signal(SIGTERM);
    const std::optional<int> status = agent.wait(20);
    INFO(agent.output());
    REQUIRE(status == 0);
    WARN("SIGTERM to exit: " << std::chrono::duration<double>(Clock::now() - signalled).count() << " s");
    CHECK_THAT(agent.output(), Catch::Contains("the lease is kept"));
  }
  CHECK(read_json(dir / "solver" / "tasks" / task_id / "state.json")["phase"] == "training");
  CHECK(read_json(dir / "solver" / "status.json")["activity"] == "stopped");

  const CommandResult resumed = run_command(agent_argv(config, key));
  INFO(resumed.output);
  REQUIRE(resumed.exit_code == 0);
  CHECK_THAT(resumed.output, Catch::Contains("resuming from checkpoint") && Catch::Contains("task=" + task_id + " completed"));
}

TEST_CASE("agent: when a killed agent's lease expires, a second agent takes the task and completes it", "[e2e][agent]") {
  ScratchDir dir("agent-expiry");
  const auto first_key = make_key(dir / "first");
  const auto second_key = make_key(dir / "second");
  Market market(dir.path(), 0, /*lease_seconds=*/3);
  const std::string task_id = submit(market.url(), first_key, long_task(dir.path()));
  {
    BackgroundProcess agent(agent_argv(agent_config(dir.path(), "first", market.url(), {"solve"}), first_key),
                            dir / "first.log");
    REQUIRE(wait_for_commit(agent, 400, 60));
    agent.signal(SIGKILL);
    agent.wait(10);
  }
  const auto killed = Clock::now();
  BackgroundProcess second(agent_argv(agent_config(dir.path(), "second", market.url(), {"solve"}), second_key, false),
                           dir / "second.log");
  INFO(second.output());
  REQUIRE(second.wait_for_output("task=" + task_id + " completed", 90));
  second.signal(SIGTERM);
  CHECK(second.wait(20) == 0);
  WARN("lease of 3 s expired; the second agent completed the task " << std::chrono::duration<double>(Clock::now() - killed).count()
                                                                     << " s after the first was killed");
  const json status = task_status(market.url(), first_key, task_id);
  CHECK(status["state"] == "completed");
  CHECK(status["solver"] == SigningKey::load(second_key).public_key_hex());
  CHECK(status["attempts"] == 1);  // the first lease ended without a completion
}

TEST_CASE("agent: a market restarted mid-task, or down for a while, costs time but nothing else", "[e2e][agent]") {
  ScratchDir dir("agent-market-restart");
  const auto key = make_key(dir / "solver");
  const int port = free_port();
  auto market = std::make_unique<Market>(dir.path(), port);
  const std::string url = market->url();
  const std::string task_id = submit(url, key, long_task(dir.path()));
  BackgroundProcess agent(agent_argv(agent_config(dir.path(), "solver", url, {"solve"}), key), dir / "agent.log");
  REQUIRE(wait_for_commit(agent, 400, 60));

  market->process().signal(SIGTERM);
  REQUIRE(market->process().wait(10) == 0);
  market.reset();
  std::this_thread::sleep_for(std::chrono::seconds(4));  // heartbeats fail meanwhile; training goes on
  market = std::make_unique<Market>(dir.path(), port);

  const std::optional<int> exit_status = agent.wait(120);
  INFO(agent.output());
  REQUIRE(exit_status == 0);
  CHECK_THAT(agent.output(), Catch::Contains("heartbeat failed, training goes on"));
  CHECK_THAT(agent.output(), Catch::Contains("task=" + task_id + " completed"));
  const json status = task_status(url, key, task_id);
  CHECK(status["state"] == "completed");
  CHECK(status["attempts"] == 0);
  CHECK(status["commitments"].size() == 31);  // steps 0, 200, ..., 6000: none lost across the restart
}

TEST_CASE("agent: with the market down at start it waits, then registers and works", "[e2e][agent]") {
  ScratchDir dir("agent-market-down");
  const auto key = make_key(dir / "solver");
  const int port = free_port();
  std::string task_id;
  {
    Market market(dir.path(), port);
    task_id = submit(market.url(), key, write_task(dir.path(), "task", small_task("agent-down", 200, 50)));
    market.process().signal(SIGTERM);
    REQUIRE(market.process().wait(10) == 0);
  }
  const std::string url = "http://127.0.0.1:" + std::to_string(port);
  BackgroundProcess agent(agent_argv(agent_config(dir.path(), "solver", url, {"solve"}), key), dir / "agent.log");
  REQUIRE(agent.wait_for_output("unreachable", 30));
  std::this_thread::sleep_for(std::chrono::seconds(2));
  REQUIRE(agent.running());
  Market market(dir.path(), port);
  const std::optional<int> exit_status = agent.wait(60);
  INFO(agent.output());
  REQUIRE(exit_status == 0);
  CHECK(task_status(url, key, task_id)["state"] == "completed");
}

TEST_CASE("agent: a market answering garbage is logged, never a crash, and SIGTERM still exits 0", "[e2e][agent]") {
  ScratchDir dir("agent-garbage");
  const auto key = make_key(dir / "solver");
  std::atomic<int> requests{0};
  LocalHttpServer liar;
  liar.routes().Post(".*", [&](const httplib::Request&, httplib::Response& res) {
    const int request = ++requests;
    res.set_content(request % 2 == 0 ? "{\"lease\": 42}" : "<html>not json</html>", "application/json");
  });
  {
    BackgroundProcess agent(agent_argv(agent_config(dir.path(), "solver", liar.url(), {"solve", "verify"}), key,
                                       /*until_idle=*/false),
                            dir / "agent.log");
    std::this_thread::sleep_for(std::chrono::seconds(4));
    CHECK(agent.running());
    agent.signal(SIGTERM);
    const std::optional<int> status = agent.wait(20);
    INFO(agent.output());
    CHECK(status == 0);
    CHECK_THAT(agent.output(), Catch::Contains("market reply"));
  }
  CHECK(requests >= 2);
}

TEST_CASE("agent: a market handing out ids that name paths outside the work dir harms nothing there", "[e2e][agent][hostile]") {
  ScratchDir dir("agent-hostile-ids");
  const auto key = make_key(dir / "solver");
  // Folders the hostile ids point at: relative climbs, an absolute path, and a symlink planted
  // in the tasks folder under an id of the right form.
  const auto canary = dir / "canary";
  const auto absolute_canary = dir / "absolute-canary";
  for (const auto& folder : {canary, absolute_canary}) write_text(folder / "precious.txt", "operator's file");
  std::filesystem::create_directories(dir / "solver" / "tasks");
  std::filesystem::create_directory_symlink(canary, dir / "solver" / "tasks" / "planted");

  const auto lease = [](const std::string& task_id) {
    return json{{"lease", {{"task_id", task_id}, {"lease_id", "0123456789abcdef0123456789abcdef"}, {"task", {{"id", "t"}}},
                           {"task_sha256", std::string(64, 'c')}, {"lease_seconds", 300}, {"expires_at", 2000000000}}}};
  };
  const auto job = [](const std::string& job_id) {
    return json{{"job", {{"job_id", job_id}, {"task_id", "0123456789abcdef"}, {"task", {{"id", "t"}}},
                         {"task_sha256", std::string(64, 'c')}, {"bundle_address", "/nowhere"},
                         {"manifest_sha256", std::string(64, 'd')}, {"solver_key", std::string(64, 'e')},
                         {"commitments", json::array()}, {"lease_seconds", 600}}}};
  };
  const std::vector<json> leases{lease("../../canary"), lease(absolute_canary.string()), lease("planted")};
  const std::vector<json> jobs{job("../../canary"), job(absolute_canary.string())};
  std::atomic<std::size_t> claims{0}, job_claims{0};
  LocalHttpServer liar;
  liar.routes().Post("/v1/workers", [](const httplib::Request& req, httplib::Response& res) {
    res.set_content(json{{"worker", req.get_header_value("X-Solver-Key")}}.dump(), "application/json");
  });
  const auto hand_out = [](const std::vector<json>& replies, std::atomic<std::size_t>& count, httplib::Response& res) {
    const std::size_t index = count++;
    if (index < replies.size()) res.set_content(replies[index].dump(), "application/json");
    else res.status = 204;
  };
  liar.routes().Post("/v1/claims", [&](const httplib::Request&, httplib::Response& res) { hand_out(leases, claims, res); });
  liar.routes().Post("/v1/verifications/claims",
                     [&](const httplib::Request&, httplib::Response& res) { hand_out(jobs, job_claims, res); });

  BackgroundProcess agent(agent_argv(agent_config(dir.path(), "solver", liar.url(), {"solve", "verify"}), key,
                                     /*until_idle=*/false),
                          dir / "agent.log");
  const auto deadline = Clock::now() + std::chrono::seconds(60);
  while ((claims <= leases.size() || job_claims <= jobs.size()) && agent.running() && Clock::now() < deadline)
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  CHECK(agent.running());  // every hostile reply was an error to log, not a reason to stop
  agent.signal(SIGTERM);
  const std::optional<int> status = agent.wait(20);
  const std::string log = agent.output();
  INFO(log);
  CHECK(status == 0);
  CHECK(claims > leases.size());
  CHECK(job_claims > jobs.size());
  CHECK_THAT(log, Catch::Contains("lease.task_id: expected an id") && Catch::Contains("job.job_id: expected an id"));
  CHECK_THAT(log, Catch::Contains("refusing") && Catch::Contains("planted"));
  for (const auto& folder : {canary, absolute_canary}) {
    CHECK(read_file(folder / "precious.txt") == "operator's file");
    CHECK_FALSE(std::filesystem::exists(folder / "state.json"));
  }
  CHECK(std::filesystem::is_symlink(dir / "solver" / "tasks" / "planted"));
}

TEST_CASE("agent: a bundle finished while the store fails is spooled on disk, and published once it is back", "[e2e][agent]") {
  ScratchDir dir("agent-spool");
  const auto key = make_key(dir / "solver");
  Market market(dir.path(), 0);
  const std::string task_id = submit(market.url(), key, write_task(dir.path(), "task", small_task("agent-spool", 200, 50)));
  const auto config = agent_config(dir.path(), "solver", market.url(), {"solve"});
  write_text(dir / "published", "a file where the store's folder should be: every publish fails");
  {
    BackgroundProcess agent(agent_argv(config, key), dir / "agent1.log");
    REQUIRE(agent.wait_for_output("spooled in phase bundled", 60));
    agent.signal(SIGKILL);  // and the agent dies too: the spool is on disk, not in memory
    agent.wait(10);
  }
  CHECK(read_json(dir / "solver" / "tasks" / task_id / "state.json")["phase"] == "bundled");
  CHECK(task_status(market.url(), key, task_id)["state"] == "leased");

  std::filesystem::remove(dir / "published");
  const CommandResult resumed = run_command(agent_argv(config, key));
  INFO(resumed.output);
  REQUIRE(resumed.exit_code == 0);
  CHECK_THAT(resumed.output, Catch::Contains("published") && Catch::Contains("task=" + task_id + " completed"));
  CHECK_THAT(resumed.output, !Catch::Contains("training steps"));  // nothing was retrained
  const json status = task_status(market.url(), key, task_id);
  CHECK(status["state"] == "completed");
  CHECK(run_solver({"verify", status["completion"]["bundle_address"].get<std::string>()}).exit_code == 0);
}

TEST_CASE("agent: with an S3 store, the solver publishes to the bucket and the verifier fetches from it", "[e2e][agent][s3]") {
  ScratchDir dir("agent-s3");
  const auto solver_key = make_key(dir / "solver");
  const auto verifier_key = make_key(dir / "verifier");
  S3rver bucket("pool");
  Market market(dir.path(), 0);
  const std::string task_id = submit(market.url(), solver_key, write_task(dir.path(), "task", small_task("agent-s3", 200, 50)));
  // Credentials come from the environment the agents inherit, as an operator's systemd unit would set them.
  ::setenv("AWS_ACCESS_KEY_ID", kS3rverAccessKey, 1);
  ::setenv("AWS_SECRET_ACCESS_KEY", kS3rverSecretKey, 1);
  const json storage{{"kind", "s3"}, {"bucket", "pool"}, {"endpoint", bucket.endpoint()}, {"region", "us-east-1"},
                     {"prefix", "bundles"}};
  auto config_with_s3 = [&](const std::string& name, const std::vector<std::string>& roles) {
    return agent_config(dir.path(), name, market.url(), roles, {{"storage", storage}});
  };
  const CommandResult solved = run_command(agent_argv(config_with_s3("solver", {"solve"}), solver_key));
  INFO(solved.output);
  REQUIRE(solved.exit_code == 0);
  const json status = task_status(market.url(), solver_key, task_id);
  REQUIRE(status["state"] == "completed");
  const std::string address = status["completion"]["bundle_address"];
  CHECK(address.starts_with("s3://pool/bundles/" + task_id + "-"));
  CHECK(bucket.aws({"s3", "ls", address + "/manifest.json"}).exit_code == 0);

  const CommandResult verified = run_command(agent_argv(config_with_s3("verifier", {"verify"}), verifier_key));
  ::unsetenv("AWS_ACCESS_KEY_ID");
  ::unsetenv("AWS_SECRET_ACCESS_KEY");
  INFO(verified.output);
  REQUIRE(verified.exit_code == 0);
  CHECK_THAT(verified.output, Catch::Contains("verdict ACCEPTED"));
  CHECK(task_status(market.url(), solver_key, task_id)["state"] == "verified");
}

TEST_CASE("agent: with two task slots, two tasks train at the same time and both complete", "[e2e][agent]") {
  ScratchDir dir("agent-slots");
  const auto key = make_key(dir / "solver");
  Market market(dir.path(), 0);
  const std::string first = submit(market.url(), key, write_task(dir.path(), "first", small_task("slot-a", 3000, 500)));
  const std::string second = submit(market.url(), key, write_task(dir.path(), "second", small_task("slot-b", 3000, 500)));
  const CommandResult result = run_command(agent_argv(
      agent_config(dir.path(), "solver", market.url(), {"solve"}, {{"limits", {{"tasks_at_once", 2}, {"min_free_disk_gb", 0}}}}), key));
  INFO(result.output);
  REQUIRE(result.exit_code == 0);
  const auto first_completion = std::min(result.output.find("task=" + first + " completed"),
                                         result.output.find("task=" + second + " completed"));
  REQUIRE(first_completion != std::string::npos);
  CHECK(result.output.find("task=" + first + " claimed") < first_completion);
  CHECK(result.output.find("task=" + second + " claimed") < first_completion);
  CHECK(task_status(market.url(), key, first)["state"] == "completed");
  CHECK(task_status(market.url(), key, second)["state"] == "completed");
}

TEST_CASE("agent: a malformed config is refused at start-up, naming the field (exit 78)", "[e2e][agent]") {
  // A data-parallel slot ("cuda:0,cuda:1") is a valid entry; a misspelt device in a list is not.
  ScratchDir dir("agent-config");
  const auto key = make_key(dir.path());
  write_text(dir / "typo.json", "// a typo in a field name\n{\"market\": \"http://127.0.0.1:1\", \"rolez\": [\"solve\"]}");
  CommandResult result = run_solver({"agent", "--config", (dir / "typo.json").string(), "--key", key.string()});
  CHECK(result.exit_code == 78);
  CHECK_THAT(result.output, Catch::Contains("config.rolez"));
  write_text(dir / "storage.json", "{\"storage\": {\"kind\": \"s3\", \"region\": \"eu-west-1\"}}");
  result = run_solver({"agent", "--config", (dir / "storage.json").string(), "--key", key.string()});
  CHECK(result.exit_code == 78);
  CHECK_THAT(result.output, Catch::Contains("config.storage.bucket"));
  write_text(dir / "devices.json", "{\"devices\": [\"cuda:0,cuda:1\", \"cuda:0,gpu1\"]}");
  result = run_solver({"agent", "--config", (dir / "devices.json").string(), "--key", key.string()});
  CHECK(result.exit_code == 78);
  CHECK_THAT(result.output, Catch::Contains("config.devices") && Catch::Contains("\"gpu1\""));
}

TEST_CASE("agent: a bundle rewritten after its checkpoints were committed is rejected by the verifier", "[e2e][agent]") {
  ScratchDir dir("agent-rewrite");
  const auto solver_key_file = make_key(dir / "solver");
  const auto verifier_key = make_key(dir / "verifier");
  Market market(dir.path(), 0);
  const SigningKey solver_key = SigningKey::load(solver_key_file);
  net::MarketClient client(net::MarketClientOptions{market.url()}, solver_key);
  client.register_worker({.name = "cheat", .roles = {"solve"}, .memory_mb = 4096, .model_kinds = {"mlp"}});
  const std::string task_id = client.submit_task(small_task("agent-rewrite", 200, 50));
  const std::optional<net::Lease> lease = client.claim_task();
  REQUIRE(lease);

  // Train honestly and commit the honest checkpoints, as a heartbeat does...
  const auto task_file = write_task(dir.path(), "leased", lease->task);
  REQUIRE(run_solver({"run", task_file.string(), "--out", (dir / "bundle").string(), "--key", solver_key_file.string(),
                      "--threads", "1"})
              .exit_code == 0);
  net::Heartbeat beat{.lease_id = lease->lease_id, .step = 200, .total_steps = 200};
  const json honest = read_json(dir / "bundle" / "manifest.json");
  for (const json& checkpoint : honest["checkpoints"])
    beat.checkpoints.push_back({checkpoint["step"].get<std::int64_t>(), checkpoint["file"]["sha256"].get<std::string>()});
  client.heartbeat(task_id, beat);

  // ...then rewrite checkpoint 2 (step 100), reseal, and complete with the rewritten bundle.
  const auto published = dir / "published" / "rewritten";
  std::filesystem::create_directories(published.parent_path());
  copy_bundle(dir / "bundle", published);
  Forger forger(published, solver_key_file);
  checkpoint::Checkpoint state = forger.checkpoint_at(2);
  interpolate_parameters(state, forger.checkpoint_at(1), forger.checkpoint_at(2), 0.5);
  forger.replace_checkpoint(2, state);
  forger.reseal();
  std::string signature = read_file(published / "manifest.sig");
  while (signature.back() == '\n') signature.pop_back();
  client.complete_task(task_id, {lease->lease_id, published.string(), sha256_file_hex(published / "manifest.json"), signature});

  const CommandResult verified =
      run_command(agent_argv(agent_config(dir.path(), "verifier", market.url(), {"verify"}), verifier_key));
  INFO(verified.output);
  REQUIRE(verified.exit_code == 0);
  CHECK_THAT(verified.output, Catch::Contains("verdict REJECTED"));
  const json status = task_status(market.url(), solver_key_file, task_id);
  CHECK(status["state"] == "rejected");
  CHECK_THAT(status["verdicts"][0]["reason"].get<std::string>(), Catch::Contains("commitments: checkpoint step 100"));
}

}  // namespace
}  // namespace solver::test
