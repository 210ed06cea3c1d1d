// `solver version`: the build's version and how many CUDA devices the kernels see.
#include <cstdio>
#include <memory>
#include <string>

#include "agent/exit_status.h"
#include "cli/command.h"
#include "common/version.h"
#include "kernels/distance.h"

namespace solver::cli {
namespace {

int version_command(bool json) {
  const int gpus = kernels::cuda_device_count();
  if (json) {
    std::printf("{\"solver\":\"%s\",\"cuda_devices\":%d}\n", std::string(solver_version()).c_str(), gpus);
  } else {
    std::printf("solver %s (CUDA devices: %d)\n", std::string(solver_version()).c_str(), gpus);
  }
  return agent::kExitOk;
}

}  // namespace

Command add_version_command(CLI::App& parent) {
  auto json = std::make_shared<bool>(false);
  CLI::App* command = parent.add_subcommand("version", "Print the version");
  command->add_flag("--json", *json, "As JSON");
  return {command, [json] { return version_command(*json); }};
}

}  // namespace solver::cli
