// solver: the command-line entry point. Each command registers its own options (cli/command.h);
// this file holds the global flags, parses, sets the log level, runs the chosen command, and
// maps errors to exit statuses. The work lives in the libraries and in the *_command.cpp files.
#include <CLI/CLI.hpp>

#include <csignal>
#include <exception>
#include <vector>

#include "agent/exit_status.h"
#include "cli/command.h"
#include "common/error.h"
#include "common/log.h"

int main(int argc, char** argv) {
  using namespace solver;
  std::signal(SIGPIPE, SIG_IGN);
  CLI::App app{"solver: train tasks for the compute market and prove the work"};
  app.require_subcommand(1);
  app.fallthrough();  // global flags (-v, -q) also work after the subcommand
  int verbosity = 0;
  bool quiet = false;
  app.add_flag("-v,--verbose", verbosity, "More log detail");
  app.add_flag("-q,--quiet", quiet, "Only warnings and errors");

  // In the order `solver --help` lists them.
  const std::vector<cli::Command> commands = {
      cli::add_run_command(app),     cli::add_verify_command(app),  cli::add_keygen_command(app),
      cli::add_bench_command(app),   cli::add_market_command(app),  cli::add_agent_command(app),
      cli::add_publish_command(app), cli::add_status_command(app),  cli::add_profile_command(app),
      cli::add_dispute_command(app), cli::add_version_command(app),
  };

  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& error) {
    const int status = app.exit(error);
    return status == 0 ? agent::kExitOk : agent::kExitUsage;
  }

  set_log_level(quiet ? LogLevel::Warn : verbosity > 0 ? LogLevel::Debug : LogLevel::Info);
  try {
    return cli::run_chosen(commands);
  } catch (const Error& error) {
    log_error("solver", "{} error: {}", error_kind_name(error.kind()), error.what());
    return agent::exit_status_for(error);
  } catch (const std::exception& error) {
    log_error("solver", "internal error: {}", error.what());
    return agent::kExitInternal;
  }
}
