// solver: the command-line entry point. Each command registers its own options (cli/command.h);
// this file holds the global flags, parses, sets the log level, runs the chosen command, and
// maps errors to exit statuses. The work lives in the libraries and in the *_command.cpp files.
#include <CLI/CLI.hpp>

#include <algorithm>
#include <csignal>
#include <cstdio>
#include <exception>
#include <optional>
#include <string>
#include <vector>

#include "agent/exit_status.h"
#include "cli/command.h"
#include "common/error.h"
#include "common/log.h"
#include "common/version.h"

namespace {

// Edits (insert, delete, replace, swap two neighbours) that turn `a` into `b`.
std::size_t edit_distance(const std::string& a, const std::string& b) {
  std::vector<std::vector<std::size_t>> d(a.size() + 1, std::vector<std::size_t>(b.size() + 1));
  for (std::size_t i = 0; i <= a.size(); ++i) d[i][0] = i;
  for (std::size_t j = 0; j <= b.size(); ++j) d[0][j] = j;
  for (std::size_t i = 1; i <= a.size(); ++i)
    for (std::size_t j = 1; j <= b.size(); ++j) {
      d[i][j] = std::min({d[i - 1][j] + 1, d[i][j - 1] + 1, d[i - 1][j - 1] + (a[i - 1] == b[j - 1] ? 0 : 1)});
      if (i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1]) d[i][j] = std::min(d[i][j], d[i - 2][j - 2] + 1);
    }
  return d[a.size()][b.size()];
}

// When no command was recognised: the first word that is neither an option nor an option's
// value, named, with the closest command (two edits at most) suggested.
std::optional<std::string> unknown_command_message(const CLI::App& app, int argc, char** argv) {
  if (!app.get_subcommands().empty()) return std::nullopt;
  for (int i = 1; i < argc; ++i) {
    const std::string word = argv[i];
    if (word.starts_with("-")) {
      const CLI::Option* option = app.get_option_no_throw(word);
      if (option != nullptr && option->get_items_expected_min() > 0) ++i;  // its value
      continue;
    }
    std::string closest;
    std::size_t closest_distance = 3;
    for (const CLI::App* command : app.get_subcommands([](const CLI::App*) { return true; }))
      if (const std::size_t distance = edit_distance(word, command->get_name()); distance < closest_distance) {
        closest = command->get_name();
        closest_distance = distance;
      }
    return "solver: unknown command \"" + word + "\"" + (closest.empty() ? "" : "; did you mean `" + closest + "`?") +
           " (solver --help lists the commands)";
  }
  return std::nullopt;
}

}  // namespace

int main(int argc, char** argv) {
  using namespace solver;
  std::signal(SIGPIPE, SIG_IGN);
  CLI::App app{"solver: train tasks for the compute market and prove the work"};
  app.require_subcommand(1);
  app.fallthrough();  // global flags (-v, -q) also work after the subcommand
  app.set_version_flag("--version", "solver " + std::string(solver_version()));
  int verbosity = 0;
  bool quiet = false;
  app.add_flag("-v,--verbose", verbosity, "More log detail");
  app.add_flag("-q,--quiet", quiet, "Only warnings and errors");
  std::string log_format = "text";
  app.add_option("--log-format", log_format,
                 "Log lines as text (journald priorities when stderr is the journal) or one JSON object a line")
      ->check(CLI::IsMember({"text", "json"}));

  // In the order `solver --help` lists them.
  const std::vector<cli::Command> commands = {
      cli::add_run_command(app),     cli::add_verify_command(app),  cli::add_keygen_command(app),
      cli::add_bench_command(app),   cli::add_market_command(app),  cli::add_agent_command(app),
      cli::add_publish_command(app), cli::add_status_command(app),  cli::add_profile_command(app),
      cli::add_dispute_command(app), cli::add_doctor_command(app),  cli::add_version_command(app),
  };

  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& error) {
    if (const std::optional<std::string> message = unknown_command_message(app, argc, argv)) {
      std::fprintf(stderr, "%s\n", message->c_str());
      return agent::kExitUsage;
    }
    const int status = app.exit(error);
    return status == 0 ? agent::kExitOk : agent::kExitUsage;
  }

  set_log_level(quiet ? LogLevel::Warn : verbosity > 0 ? LogLevel::Debug : LogLevel::Info);
  if (log_format == "json") set_log_format(LogFormat::Json);
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
