// solver: the command-line entry point. Parses arguments, installs the log sink, runs one
// subcommand, and maps errors to exit statuses. Nothing here is worth unit-testing on its
// own: the work lives in the libraries and in the *_command.cpp files.
#include <CLI/CLI.hpp>

#include <csignal>
#include <cstdio>
#include <exception>
#include <iostream>

#include "agent/commands.h"
#include "common/error.h"
#include "common/log.h"
#include "common/version.h"
#include "kernels/distance.h"

namespace {

using namespace solver;
using namespace solver::agent;

int exit_status_for(const Error& error) {
  switch (error.kind()) {
    case ErrorKind::Usage: return kExitUsage;
    case ErrorKind::Config: return kExitConfig;
    case ErrorKind::Cuda: return kExitGpu;
    case ErrorKind::Internal: return kExitInternal;
    case ErrorKind::Input:
    case ErrorKind::Io:
    case ErrorKind::Network:
    case ErrorKind::Budget:
    case ErrorKind::Verification: return kExitBadInput;
  }
  return kExitInternal;
}

int version_command(bool json) {
  const int gpus = kernels::cuda_device_count();
  if (json) {
    std::printf("{\"solver\":\"%s\",\"cuda_devices\":%d}\n", std::string(solver_version()).c_str(), gpus);
  } else {
    std::printf("solver %s (CUDA devices: %d)\n", std::string(solver_version()).c_str(), gpus);
  }
  return kExitOk;
}

}  // namespace

int main(int argc, char** argv) {
  std::signal(SIGPIPE, SIG_IGN);
  CLI::App app{"solver: train tasks for the compute market and prove the work"};
  app.require_subcommand(1);
  app.fallthrough();  // global flags (-v, -q) also work after the subcommand
  int verbosity = 0;
  bool quiet = false;
  app.add_flag("-v,--verbose", verbosity, "More log detail");
  app.add_flag("-q,--quiet", quiet, "Only warnings and errors");

  RunOptions run;
  std::string task_file;
  auto* run_cmd = app.add_subcommand("run", "Train a task and write its proof-of-learning bundle");
  run_cmd->add_option("task", task_file, "Task file (JSON, docs/task-format.md); default: the embedded Fashion-MNIST MLP task")
      ->check(CLI::ExistingFile);
  run_cmd->add_option("--out", run.out_dir, "Bundle folder (default: runs/<task id>)");
  run_cmd->add_option("--device", run.device, "cpu, cuda or cuda:N")->capture_default_str();
  run_cmd->add_option("--threads", run.threads, "CPU threads for LibTorch (0: min(cores, 4))")->check(CLI::Range(0, 256));
  run_cmd->add_option("--key", run.key_file, "Solver key (default: $SOLVER_KEY or ~/.config/solver/solver.key)");
  run_cmd->add_flag("--resume", run.resume, "Continue an interrupted run in --out from its last checkpoint");
  bool no_proof = false;
  run_cmd->add_flag("--no-proof", no_proof, "Train without writing a bundle (to measure the proof's cost)");

  VerifyCommandOptions verify;
  std::string verify_task_file;
  auto* verify_cmd = app.add_subcommand("verify", "Check a proof-of-learning bundle and replay parts of it");
  verify_cmd->add_option("bundle", verify.bundle_dir, "Bundle folder")->required()->check(CLI::ExistingDirectory);
  verify_cmd->add_option("--segments", verify.segments, "Which segments to replay: top-q, random or all")
      ->check(CLI::IsMember({"top-q", "random", "all"}))
      ->capture_default_str();
  verify_cmd->add_option("--q", verify.q, "top-q: how many of the largest updates of each epoch to replay")->check(CLI::Range(0, 1000000))->capture_default_str();
  verify_cmd->add_option("--random", verify.random_count, "How many further segments to replay at random")->check(CLI::Range(0, 1000000))->capture_default_str();
  verify_cmd->add_option("--seed", verify.random_seed, "The verifier's random seed (default: drawn, and printed)");
  verify_cmd->add_option("--delta", verify.delta, "l2 threshold when replaying on another build or device")->check(CLI::PositiveNumber)->capture_default_str();
  verify_cmd->add_option("--task", verify_task_file, "Require the bundle to be for this task file")->check(CLI::ExistingFile);
  verify_cmd->add_option("--expect-key", verify.expected_key, "Require this solver public key (hex)");
  verify_cmd->add_option("--device", verify.device, "Device to replay on: cpu, cuda or cuda:N")->capture_default_str();
  verify_cmd->add_flag("--json", verify.json, "Print the verdict as JSON");

  std::optional<std::filesystem::path> keygen_file;
  auto* keygen_cmd = app.add_subcommand("keygen", "Create the solver's Ed25519 key (mode 0600)");
  keygen_cmd->add_option("--key", keygen_file, "Where to write it (default: $SOLVER_KEY or ~/.config/solver/solver.key)");

  BenchOptions bench;
  auto* bench_cmd = app.add_subcommand("bench", "Measure this machine: matmul, memory, SHA-256, disk, training, GPUs");
  bench_cmd->add_flag("--quick", bench.quick, "Fewer repeats, smaller sizes: about 15 s on 2 cores instead of 40");
  bench_cmd->add_flag("--json", bench.json, "Print the figures as JSON");
  bench_cmd->add_option("--device", bench.device,
                        "Where matmul and training run: cpu, cuda or cuda:N (default: cuda:0 when LibTorch sees a GPU, else cpu)");
  bench_cmd->add_option("--dir", bench.disk_dir, "Folder for the disk test (default: the current folder)")
      ->check(CLI::ExistingDirectory);

  bool version_json = false;
  auto* version_cmd = app.add_subcommand("version", "Print the version");
  version_cmd->add_flag("--json", version_json, "As JSON");

  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& error) {
    const int status = app.exit(error);
    return status == 0 ? kExitOk : kExitUsage;
  }

  set_log_level(quiet ? LogLevel::Warn : verbosity > 0 ? LogLevel::Debug : LogLevel::Info);
  try {
    if (*run_cmd) {
      if (!task_file.empty()) run.task_file = task_file;
      run.proof = !no_proof;
      if (run.resume && !run.proof) throw Error(ErrorKind::Usage, "--resume needs a bundle; it cannot be combined with --no-proof");
      return run_command(run);
    }
    if (*verify_cmd) {
      if (!verify_task_file.empty()) verify.task_file = verify_task_file;
      return verify_command(verify);
    }
    if (*keygen_cmd) return keygen_command(keygen_file);
    if (*bench_cmd) return bench_command(bench);
    if (*version_cmd) return version_command(version_json);
  } catch (const Error& error) {
    log_error("agent", "{} error: {}", error_kind_name(error.kind()), error.what());
    return exit_status_for(error);
  } catch (const std::exception& error) {
    log_error("agent", "internal error: {}", error.what());
    return kExitInternal;
  }
  return kExitUsage;
}
