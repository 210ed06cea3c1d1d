// `solver doctor`: whether this rig can take work (agent/doctor.h), as a table or JSON.
// Exit status 0 when nothing failed (warnings allowed), 1 when a check failed.
#include <cstdio>
#include <memory>
#include <optional>

#include "agent/agent_config.h"
#include "agent/doctor.h"
#include "cli/command.h"
#include "cli/common.h"

namespace solver::cli {
namespace {

struct DoctorOptions {
  std::optional<std::filesystem::path> config_file;  // empty: defaults (docs/agent.md)
  std::optional<std::filesystem::path> key_file;     // overrides the config's key
  std::optional<std::filesystem::path> work_dir;     // overrides the config's work_dir
  bool json = false;
};

void print_table(const agent::DoctorReport& report) {
  std::string area;
  for (const agent::Check& check : report.checks) {
    if (check.area != area) std::printf("%s%s\n", area.empty() ? "" : "\n", (area = check.area).c_str());
    std::printf("  %-4s  %-20s %s\n", std::string(agent::check_status_name(check.status)).c_str(), check.name.c_str(),
                check.detail.c_str());
    if (!check.fix.empty()) std::printf("        %-20s -> %s\n", "", check.fix.c_str());
  }
  std::printf("\n%s\n", report.passed() ? "this rig can take work" : "this rig cannot take work: fix each FAIL above");
}

int doctor_command(const DoctorOptions& options) {
  agent::AgentConfig config = options.config_file ? agent::load_agent_config(*options.config_file) : agent::default_agent_config();
  if (const auto key = options.key_file ? options.key_file : key_from_environment()) config.key_file = *key;
  if (options.work_dir) agent::move_work_dir(config, *options.work_dir);
  const agent::DoctorReport report = agent::run_doctor(config, config.key_file.value_or(default_key_path()));
  if (options.json)
    std::printf("%s\n", report.to_json().dump(2).c_str());
  else
    print_table(report);
  return report.passed() ? agent::kExitOk : agent::kExitRejected;
}

}  // namespace

Command add_doctor_command(CLI::App& parent) {
  auto options = std::make_shared<DoctorOptions>();
  CLI::App* command = parent.add_subcommand(
      "doctor", "Check whether this rig can take work: GPUs, disks, key, market, store; says what to fix");
  command->add_option("--config", options->config_file, "Agent config (JSON with comments; docs/agent.md)");
  command->add_option("--key", options->key_file, "Solver key (default: $SOLVER_KEY, else the config's key, else ~/.config/solver/solver.key)");
  command->add_option("--work-dir", options->work_dir, "The agent's work dir (default: the config's)");
  command->add_flag("--json", options->json, "Print the checks as JSON");
  return {command, [options] { return doctor_command(*options); }};
}

}  // namespace solver::cli
