// `solver agent` (the long-running worker, agent/daemon.h), its `--local` demonstration (a market
// in-process, the embedded task, a solver and then a verifier identity), and `solver status`.
#include <signal.h>

#include <nlohmann/json.hpp>

#include <cstdio>
#include <ctime>
#include <filesystem>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "agent/agent_config.h"
#include "agent/daemon.h"
#include "agent/exit_status.h"
#include "cli/command.h"
#include "cli/common.h"
#include "cli/signals.h"
#include "common/device.h"
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
  // Each overrides the config's (and $SOLVER_MARKET) when given; --local runs its own market.
  std::optional<std::string> market_url;
  std::vector<std::string> devices;  // as the config's devices
  std::optional<int> threads;
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
  config.devices = options.devices;
  config.threads = options.threads.value_or(0);
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
    if (const auto key = options.key_file ? options.key_file : key_from_environment()) config.key_file = *key;
    if (options.work_dir) agent::move_work_dir(config, *options.work_dir);
    if (const auto url = options.market_url ? options.market_url : agent::market_url_from_environment()) config.market_url = *url;
    if (!options.devices.empty()) config.devices = options.devices;
    if (options.threads) config.threads = *options.threads;
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
  const bool running = agent::agent_running_in(config.work_dir);
  status["running"] = running;
  // 3 when no agent runs, as an init script's `status` says "not running" (LSB).
  const int exit_status = running ? agent::kExitOk : agent::kExitNotRunning;
  if (options.json) {
    std::printf("%s\n", status.dump(2).c_str());
    return exit_status;
  }
  std::printf("agent %s (pid %d) %s, market %s\n", status.value("name", "?").c_str(), pid,
              running ? "running" : "not running", status.value("market", "?").c_str());
  std::printf("activity: %s\n", status.value("activity", "?").c_str());
  for (const nlohmann::json& slot : status.value("slots", nlohmann::json::array())) {
    std::printf("  %-8s", slot.value("device", "?").c_str());
    if (!slot.value("control", "").empty()) std::printf(" [%s]", slot.value("control", "").c_str());
    std::printf(" %s", slot.value("activity", "?").c_str());
    if (!slot.value("task_id", "").empty()) std::printf(" task %s", slot.value("task_id", "").c_str());
    if (slot.value("total_steps", 0) > 0)
      std::printf(" step %lld/%lld", static_cast<long long>(slot.value("step", 0)),
                  static_cast<long long>(slot.value("total_steps", 0)));
    if (slot.value("steps_per_second", 0.0) > 0)
      std::printf(", %.1f steps/s (%.0f samples/s)", slot.value("steps_per_second", 0.0), slot.value("samples_per_second", 0.0));
    if (slot.contains("eta_seconds") && slot["eta_seconds"].is_number())
      std::printf(", done in about %.0f min", slot["eta_seconds"].get<double>() / 60.0);
    if (slot.contains("lease_expires_at") && slot["lease_expires_at"].is_number())
      std::printf(", lease for %.0f s more", slot["lease_expires_at"].get<double>() - static_cast<double>(std::time(nullptr)));
    std::printf("\n");
  }
  if (!status.value("outdated", "").empty()) std::printf("outdated: %s\n", status.value("outdated", "").c_str());
  if (!status.value("last_error", "").empty() && status["last_error_at"].is_number())
    std::printf("last error %.0f s ago: %s\n", static_cast<double>(std::time(nullptr)) - status["last_error_at"].get<double>(),
                status.value("last_error", "").c_str());
  std::printf("completed %lld tasks, posted %lld verdicts; updated %s\n",
              static_cast<long long>(status.value("tasks_completed", 0)),
              static_cast<long long>(status.value("verdicts_posted", 0)), status.value("updated_at", "?").c_str());
  return exit_status;
}

}  // namespace

Command add_agent_command(CLI::App& parent) {
  auto options = std::make_shared<AgentOptions>();
  CLI::App* command = parent.add_subcommand("agent", "Work for a market: claim tasks, train, prove, publish; verify others' work");
  command->add_option("--config", options->config_file, "Agent config (JSON with comments; docs/agent.md)");
  command->add_option("--key", options->key_file, "Solver key (default: $SOLVER_KEY, else the config's key, else ~/.config/solver/solver.key)");
  command->add_option("--work-dir", options->work_dir, "Where tasks in flight and status.json live (default: the config's)");
  command->add_flag("--until-idle", options->until_idle, "Exit once there is no work and nothing left to publish");
  command->add_flag("--local", options->local,
                    "Run a market in-process with the embedded task: train it, publish it, verify it with a second key, exit");
  command->add_option("--market", options->market_url, "Market URL (default: $SOLVER_MARKET, else the config's market)");
  command->add_option("--device", options->devices,
                      "cpu, cuda, cuda:N or a list like cuda:0,cuda:1 (one slot on both); repeatable, as the config's "
                      "devices, which it replaces (default: every GPU LibTorch sees, else cpu)")
      ->check([](const std::string& text) {
        try {
          parse_device_list(text);
          return std::string();
        } catch (const Error& error) {
          return std::string(error.what());
        }
      });
  command->add_option("--threads", options->threads, "CPU threads for LibTorch (default: the config's; 0: min(cores, 4))")
      ->check(CLI::Range(0, 256));
  const std::vector<Command> controls = add_agent_control_commands(*command);
  return {command, [options, command, controls] {
    for (const Command& control : controls) {
      if (!control.app->parsed()) continue;
      for (const CLI::Option* option : command->get_options())
        if (option->count() > 0)
          throw Error(ErrorKind::Usage, "solver agent " + control.app->get_name() + ": " + option->get_name() +
                                            " is not one of its options (it takes --config and --work-dir, after `" +
                                            control.app->get_name() + "`)");
      return control.run();
    }
    return agent_command(*options);
  }};
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
