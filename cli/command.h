// A `solver` subcommand registers its own options on the parent app and returns how to run it.
// Each add_*_command lives in its own *_command.cpp with its options; main() parses and runs the
// one chosen. A run function returns the process exit status (docs/cli.md); errors it cannot
// handle propagate as solver::Error to main(), which maps them with agent::exit_status_for.
#pragma once

#include <CLI/CLI.hpp>

#include <functional>
#include <vector>

#include "agent/exit_status.h"

namespace solver::cli {

struct Command {
  CLI::App* app;             // the subcommand, to ask whether it was chosen
  std::function<int()> run;  // reads the options the parse filled in
};

// Runs the one of `commands` the parse chose; a usage error when it chose none.
inline int run_chosen(const std::vector<Command>& commands) {
  for (const Command& command : commands)
    if (command.app->parsed()) return command.run();
  return agent::kExitUsage;
}

Command add_run_command(CLI::App& parent);
Command add_verify_command(CLI::App& parent);
Command add_keygen_command(CLI::App& parent);
Command add_bench_command(CLI::App& parent);
// serve, submit, status and cancel, under `solver market`
Command add_market_command(CLI::App& parent);
Command add_agent_command(CLI::App& parent);
// drain, pause, resume, disable DEVICE, enable DEVICE and clear DEVICE, under `solver agent`: the running agent's controls
std::vector<Command> add_agent_control_commands(CLI::App& agent);
Command add_publish_command(CLI::App& parent);
// `solver status`: what the agent using a work dir is doing
Command add_status_command(CLI::App& parent);
Command add_profile_command(CLI::App& parent);
Command add_dispute_command(CLI::App& parent);
// `solver doctor`: whether this rig can take work
Command add_doctor_command(CLI::App& parent);
Command add_version_command(CLI::App& parent);

}  // namespace solver::cli
