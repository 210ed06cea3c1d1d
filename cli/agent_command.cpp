// `solver agent` (the long-running worker, agent/daemon.h), its `--local` demonstration (a market
// in-process, the embedded task, a solver and then a verifier identity), and `solver status`.
#include <signal.h>

#include <nlohmann/json.hpp>

#include <cstdio>
#include <filesystem>
#include <memory>
#include <optional>
#include <string>

#include "agent/agent_config.h"
#include "agent/daemon.h"
#include "agent/exit_status.h"
#include "cli/command.h"
#include "cli/common.h"
#include "cli/signals.h"
#include "common/error.h"
#include "common/files.h"
#include "common/json_reader.h"
#include "common/keys.h"
#include "common/log.h"
#include "market/server.h"
#include "net/market_client.h"

namespace solver::cli {
namespace {

struct AgentOptions {
  std::optional<std::filesystem::path> config_file;  // empty: defaults (docs/agent.md)
  std::optional<std::filesystem::path> key_file;     // overrides the config's key
  std::optional<std::filesystem::path> work_dir;     // overrides the config's work_dir
  bool until_idle = false;  // exit once the market has no work and nothing is left to publish
  bool local = false;       // a market in-process with the embedded task; solve, publish, verify, exit
  std::string device = "cpu";  // --local only (a config file names its devices)
  int threads = 0;             // --local only
};

struct StatusOptions {
  std::optional<std::filesystem::path> config_file;
  std::optional<std::filesystem::path> work_dir;
  bool json = false;
};

// The whole loop on one machine: a market on 127.0.0.1 with the embedded task submitted, this
// rig's solver key training and publishing it to a local folder, then a second (verifier) key
// replaying and judging it. Exits 0 when the market records an accepting verdict.
int run_local(const AgentOptions& options, const std::atomic<bool>& stop) {
  const std::filesystem::path work = std::filesystem::absolute(options.work_dir.value_or("runs/local"));
  std::filesystem::create_directories(work);
  market::MarketServer server(market::MarketServerOptions{.db_path = work / "market.db", .port = 0});
  server.start();
  log_info("agent", "local market at {} (database {})", server.url(), (work / "market.db").string());

  const SigningKey solver_key = load_or_create_key(options.key_file.value_or(default_key_path()), "solver");
  const SigningKey verifier_key = load_or_create_key(work / "verifier.key", "local verifier");
  const Task task = parse_embedded_default_task();
  net::MarketClient submitter(net::MarketClientOptions{server.url()}, solver_key);
  const std::string task_id = submitter.submit_task(task_to_json(task));
  log_info("agent", "submitted the embedded task {} as market task {}", task.id, task_id);

  agent::AgentConfig config = agent::default_agent_config();
  config.market_url = server.url();
  config.name = "local-solver";
  agent::move_work_dir(config, work / "solver");
  config.cache_dir = work / "cache";
  config.storage.directory = work / "published";
  config.downloads.allow_local_files = true;  // the embedded task reads Debian's Fashion-MNIST files
  config.devices = {options.device};
  config.threads = options.threads;
  config.poll_min_seconds = config.poll_max_seconds = 0.2;
  config.roles = {"solve"};
  agent::Agent(config, solver_key, stop).run(/*until_idle=*/true);
  if (stop) return agent::kExitOk;

  config.name = "local-verifier";
  agent::move_work_dir(config, work / "verifier");
  config.roles = {"verify"};
  agent::Agent(config, verifier_key, stop).run(/*until_idle=*/true);
  if (stop) return agent::kExitOk;

  const nlohmann::json status = submitter.task_status(task_id);
  const std::string state = status.value("state", "?");
  std::printf("task %s: %s\n", task_id.c_str(), state.c_str());
  if (status.contains("completion")) std::printf("bundle: %s\n", status["completion"].value("bundle_address", "").c_str());
  if (status.contains("verdicts"))
    for (const auto& verdict : status["verdicts"])
      std::printf("verdict: %s%s\n", verdict.value("accepted", false) ? "accepted" : "rejected",
                  verdict.value("accepted", false) ? "" : (": " + verdict.value("reason", std::string())).c_str());
  return state == "verified" ? agent::kExitOk : agent::kExitRejected;
}

// The long-running worker (agent/daemon.h). Exits 0 after SIGTERM/SIGINT.
int agent_command(const AgentOptions& options) {
  const StopSignals signals(/*reload_on_hangup=*/true);
  if (options.local) return run_local(options, StopSignals::flag());
  const auto read_config = [&] {
    agent::AgentConfig config = options.config_file ? agent::load_agent_config(*options.config_file) : agent::default_agent_config();
    if (options.key_file) config.key_file = options.key_file;
    if (options.work_dir) agent::move_work_dir(config, *options.work_dir);
    return config;
  };
  const agent::AgentConfig config = read_config();
  const SigningKey key = load_or_create_key(config.key_file.value_or(default_key_path()), "solver");
  return agent::Agent(config, key, StopSignals::flag(), &StopSignals::reload_flag(), read_config).run(options.until_idle);
}

// What the agent using this work dir is doing (its status.json).
int status_command(const StatusOptions& options) {
  agent::AgentConfig config = options.config_file ? agent::load_agent_config(*options.config_file) : agent::default_agent_config();
  if (options.work_dir) agent::move_work_dir(config, *options.work_dir);
  const std::filesystem::path path = config.work_dir / "status.json";
  if (!std::filesystem::exists(path)) {
    std::printf("no agent has run with work dir %s (no status.json)\n", config.work_dir.c_str());
    return agent::kExitBadInput;
  }
  nlohmann::json status = parse_json_document(read_file(path), path.string());
  const auto pid = status.value("pid", 0);
  const bool running = pid > 0 && ::kill(pid, 0) == 0 && status.value("activity", "") != "stopped";
  status["running"] = running;
  if (options.json) {
    std::printf("%s\n", status.dump(2).c_str());
    return agent::kExitOk;
  }
  std::printf("agent %s (pid %d) %s, market %s\n", status.value("name", "?").c_str(), pid,
              running ? "running" : "not running", status.value("market", "?").c_str());
  std::printf("activity: %s\n", status.value("activity", "?").c_str());
  for (const nlohmann::json& slot : status.value("slots", nlohmann::json::array())) {
    std::printf("  %-8s %s", slot.value("device", "?").c_str(), slot.value("activity", "?").c_str());
    if (!slot.value("task_id", "").empty()) std::printf(" task %s", slot.value("task_id", "").c_str());
    if (slot.value("total_steps", 0) > 0)
      std::printf(" step %lld/%lld", static_cast<long long>(slot.value("step", 0)),
                  static_cast<long long>(slot.value("total_steps", 0)));
    std::printf("\n");
  }
  std::printf("completed %lld tasks, posted %lld verdicts; updated %s\n",
              static_cast<long long>(status.value("tasks_completed", 0)),
              static_cast<long long>(status.value("verdicts_posted", 0)), status.value("updated_at", "?").c_str());
  return agent::kExitOk;
}

}  // namespace

Command add_agent_command(CLI::App& parent) {
  auto options = std::make_shared<AgentOptions>();
  CLI::App* command = parent.add_subcommand("agent", "Work for a market: claim tasks, train, prove, publish; verify others' work");
  command->add_option("--config", options->config_file, "Agent config (JSON with comments; docs/agent.md)");
  command->add_option("--key", options->key_file, "Solver key (default: the config's, else $SOLVER_KEY or ~/.config/solver/solver.key)");
  command->add_option("--work-dir", options->work_dir, "Where tasks in flight and status.json live (default: the config's)");
  command->add_flag("--until-idle", options->until_idle, "Exit once there is no work and nothing left to publish");
  command->add_flag("--local", options->local,
                    "Run a market in-process with the embedded task: train it, publish it, verify it with a second key, exit");
  command->add_option("--device", options->device, "--local: cpu, cuda or cuda:N")->capture_default_str();
  command->add_option("--threads", options->threads, "--local: CPU threads for LibTorch (0: min(cores, 4))")->check(CLI::Range(0, 256));
  return {command, [options] { return agent_command(*options); }};
}

Command add_status_command(CLI::App& parent) {
  auto options = std::make_shared<StatusOptions>();
  CLI::App* command = parent.add_subcommand("status", "Show what the agent is doing (from its work dir's status.json)");
  command->add_option("--config", options->config_file, "The agent's config");
  command->add_option("--work-dir", options->work_dir, "The agent's work dir (default: the config's)");
  command->add_flag("--json", options->json, "As JSON");
  return {command, [options] { return status_command(*options); }};
}

}  // namespace solver::cli
