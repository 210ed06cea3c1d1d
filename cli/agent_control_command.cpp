// `solver agent drain|pause|resume|disable DEVICE|enable DEVICE|clear DEVICE`: the operator's controls of a
// running agent, sent through its control socket (agent/control_client.h, docs/agent.md "Controls").
#include <cstdio>
#include <filesystem>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "agent/agent_config.h"
#include "agent/control_client.h"
#include "agent/daemon.h"
#include "agent/exit_status.h"
#include "cli/command.h"
#include "common/device.h"
#include "common/error.h"

namespace solver::cli {
namespace {

struct ControlOptions {
  std::string command;  // drain, pause, resume, disable, enable, clear
  std::optional<std::filesystem::path> config_file;
  std::optional<std::filesystem::path> work_dir;
  std::string device;  // disable, enable, clear
};

// Exit 0 when the agent did it, 2 when it refused (the reply says why), 3 when no agent runs there.
int control_command(const ControlOptions& options) {
  agent::AgentConfig config = options.config_file ? agent::load_agent_config(*options.config_file) : agent::default_agent_config();
  if (options.work_dir) agent::move_work_dir(config, *options.work_dir);
  if (!agent::agent_running_in(config.work_dir)) {
    std::fprintf(stderr, "solver agent %s: no agent runs with work dir %s\n", options.command.c_str(), config.work_dir.c_str());
    return agent::kExitNotRunning;
  }
  nlohmann::json request{{"command", options.command}};
  if (!options.device.empty()) request["device"] = options.device;
  const nlohmann::json reply = agent::send_control_request(config.work_dir, request);
  if (!reply.value("ok", false)) {
    std::fprintf(stderr, "solver agent %s: the agent refused: %s\n", options.command.c_str(),
                 reply.value("error", std::string("no reason given")).c_str());
    return agent::kExitBadInput;
  }
  std::printf("%s\n", reply.value("message", std::string("done")).c_str());
  return agent::kExitOk;
}

Command add_control(CLI::App& agent, const std::string& name, const std::string& description) {
  auto options = std::make_shared<ControlOptions>();
  options->command = name;
  CLI::App* command = agent.add_subcommand(name, description);
  command->add_option("--config", options->config_file, "The agent's config (for its work dir)");
  command->add_option("--work-dir", options->work_dir, "The agent's work dir (default: the config's)");
  if (name == "disable" || name == "enable" || name == "clear")
    command->add_option("DEVICE", options->device, "cpu or cuda:N, a device a slot of the agent trains on")
        ->required()
        ->check([](const std::string& text) {
          try {
            parse_device(text);
            return std::string();
          } catch (const Error& error) {
            return std::string(error.what());
          }
        });
  return {command, [options] { return control_command(*options); }};
}

}  // namespace

std::vector<Command> add_agent_control_commands(CLI::App& agent) {
  return {
      add_control(agent, "drain", "Tell the running agent to claim nothing new, finish its tasks in flight, then exit 0"),
      add_control(agent, "pause", "Tell the running agent to stop training at the next checkpoint and hold its leases"),
      add_control(agent, "resume", "Tell a paused agent to go on from its checkpoints"),
      add_control(agent, "disable", "Tell the running agent to stop using DEVICE (its slot stops at the next checkpoint)"),
      add_control(agent, "enable", "Tell the running agent to use DEVICE again"),
      add_control(agent, "clear", "Tell the running agent that quarantined DEVICE is fixed: its slot claims again"),
  };
}

}  // namespace solver::cli
