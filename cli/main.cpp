// solver: the command-line entry point. Parses arguments, installs the log sink, runs one
// subcommand, and maps errors to exit statuses. Nothing here is worth unit-testing on its
// own: the work lives in the libraries and in the *_command.cpp files.
#include <CLI/CLI.hpp>

#include <csignal>
#include <cstdio>
#include <exception>
#include <iostream>

#include "cli/commands.h"
#include "common/error.h"
#include "common/log.h"
#include "common/version.h"
#include "kernels/distance.h"

namespace {

using namespace solver;
using namespace solver::agent;

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
  run_cmd->add_option("task", task_file, "Task file (JSON, docs/task-format.md); default: the embedded Fashion-MNIST MLP task");
  run_cmd->add_option("--out", run.out_dir, "Bundle folder (default: runs/<task id>)");
  run_cmd->add_option("--device", run.device, "cpu, cuda or cuda:N; a comma list (cuda:0,cuda:1) trains data parallel over them")
      ->capture_default_str();
  run_cmd->add_option("--shards", run.shards, "Data-parallel shards per step (0: one per --device entry)")
      ->check(CLI::Range(0, 1024))
      ->capture_default_str();
  run_cmd->add_option("--threads", run.threads, "CPU threads for LibTorch (0: min(cores, 4))")->check(CLI::Range(0, 256));
  run_cmd->add_option("--key", run.key_file, "Solver key (default: $SOLVER_KEY or ~/.config/solver/solver.key)");
  run_cmd->add_flag("--resume", run.resume, "Continue an interrupted run in --out from its last checkpoint");
  bool no_proof = false;
  run_cmd->add_flag("--no-proof", no_proof, "Train without writing a bundle (to measure the proof's cost)");

  VerifyCommandOptions verify;
  std::string verify_task_file;
  auto* verify_cmd = app.add_subcommand("verify", "Check a proof-of-learning bundle and replay parts of it");
  verify_cmd->add_option("bundle", verify.bundle_dir, "Bundle folder")->required();
  verify_cmd->add_option("--segments", verify.segments, "Which segments to replay: top-q, random or all")
      ->check(CLI::IsMember({"top-q", "random", "all"}))
      ->capture_default_str();
  verify_cmd->add_option("--q", verify.q, "top-q: how many of the largest updates of each epoch to replay")->check(CLI::Range(0, 1000000))->capture_default_str();
  auto* verify_random = verify_cmd->add_option("--random", verify.random_count, "How many further segments to replay at random")
                           ->check(CLI::Range(0, 1000000))
                           ->capture_default_str();
  auto* verify_catch = verify_cmd
                           ->add_option("--catch-probability", verify.catch_probability,
                                        "Instead of --random: draw enough segments to catch, with this probability, a forger "
                                        "who faked --faked-fraction of them (above 0, at most 1)")
                           ->excludes(verify_random);
  verify_cmd->add_option("--faked-fraction", verify.faked_fraction, "The share of segments faked, for --catch-probability (above 0, at most 1)")
      ->needs(verify_catch)
      ->capture_default_str();
  verify_cmd->add_option("--seed", verify.random_seed, "The verifier's random seed (default: drawn, and printed)");
  verify_cmd->add_option("--profile", verify.profile_files,
                         "A `solver profile` output (repeatable): bundles from the runtimes it measured are judged within "
                         "its thresholds; without one, only bundles from this verifier's own runtime are judged");
  verify_cmd->add_option("--max-threads", verify.max_threads, "Replay with at most this many threads, whatever the bundle claims")
      ->check(CLI::Range(1, 256))
      ->capture_default_str();
  verify_cmd->add_option("--max-shards", verify.max_shards, "Judge bundles of at most this many shards per step")
      ->check(CLI::Range(1, 1024))
      ->capture_default_str();
  verify_cmd->add_option("--task", verify_task_file, "Require the bundle to be for this task file");
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
  bench_cmd->add_option("--save", bench.save_file,
                        "Also write the figures as JSON to this file; `solver agent` sends them when it registers "
                        "(its default: <work_dir>/bench.json)");
  bench_cmd->add_option("--dir", bench.disk_dir, "Folder for the disk test (default: the current folder)")
      ->check(CLI::ExistingDirectory);

  MarketServeOptions market_serve;
  MarketClientCommandOptions market_client;
  std::filesystem::path market_task_file;
  std::optional<std::string> market_task_id;
  std::string market_cancel_id;
  auto* market_cmd = app.add_subcommand("market", "The reference market: serve it, submit tasks, follow and cancel them");
  market_cmd->require_subcommand(1);
  auto* market_serve_cmd = market_cmd->add_subcommand("serve", "Run the market server until SIGINT or SIGTERM (prints its URL)");
  market_serve_cmd->add_option("--db", market_serve.db, "SQLite database file")->capture_default_str();
  market_serve_cmd->add_option("--host", market_serve.host, "Address to listen on")->capture_default_str();
  market_serve_cmd->add_option("--port", market_serve.port, "Port (0: any free port)")->check(CLI::Range(0, 65535))->capture_default_str();
  market_serve_cmd->add_option("--fault-hold-seconds", market_serve.fault_hold_seconds,
                               "A worker's first hold after repeated failures not down to their tasks; doubles after")
      ->check(CLI::Range(0, 86400))
      ->capture_default_str();
  market_serve_cmd->add_option("--lease-seconds", market_serve.lease_seconds, "How long a claim lasts without a heartbeat")
      ->check(CLI::Range(1, 86400))
      ->capture_default_str();
  auto add_market_client_options = [&](CLI::App* command) {
    command->add_option("--market", market_client.market_url, "Market URL (default: $SOLVER_MARKET or http://127.0.0.1:8470)");
    command->add_option("--key", market_client.key_file, "Key that signs the requests (default: $SOLVER_KEY or ~/.config/solver/solver.key)");
  };
  auto* market_submit_cmd = market_cmd->add_subcommand("submit", "Validate a task file and submit it; prints the task id");
  market_submit_cmd->add_option("task", market_task_file, "Task file (JSON, docs/task-format.md)")->required();
  add_market_client_options(market_submit_cmd);
  auto* market_status_cmd = market_cmd->add_subcommand("status", "Show one task, or list all");
  market_status_cmd->add_option("task_id", market_task_id, "Task id (default: all tasks)");
  market_status_cmd->add_flag("--json", market_client.json, "Print the market's JSON");
  add_market_client_options(market_status_cmd);
  auto* market_cancel_cmd = market_cmd->add_subcommand("cancel", "Cancel a queued or running task you submitted");
  market_cancel_cmd->add_option("task_id", market_cancel_id, "Task id")->required();
  add_market_client_options(market_cancel_cmd);

  AgentOptions agent;
  auto* agent_cmd = app.add_subcommand("agent", "Work for a market: claim tasks, train, prove, publish; verify others' work");
  agent_cmd->add_option("--config", agent.config_file, "Agent config (JSON with comments; docs/agent.md)");
  agent_cmd->add_option("--key", agent.key_file, "Solver key (default: the config's, else $SOLVER_KEY or ~/.config/solver/solver.key)");
  agent_cmd->add_option("--work-dir", agent.work_dir, "Where tasks in flight and status.json live (default: the config's)");
  agent_cmd->add_flag("--until-idle", agent.until_idle, "Exit once there is no work and nothing left to publish");
  agent_cmd->add_flag("--local", agent.local,
                      "Run a market in-process with the embedded task: train it, publish it, verify it with a second key, exit");
  agent_cmd->add_option("--device", agent.device, "--local: cpu, cuda or cuda:N")->capture_default_str();
  agent_cmd->add_option("--threads", agent.threads, "--local: CPU threads for LibTorch (0: min(cores, 4))")->check(CLI::Range(0, 256));

  PublishOptions publish;
  auto* publish_cmd = app.add_subcommand("publish", "Publish a finished bundle to a folder, IPFS or S3; prints its address");
  publish_cmd->add_option("bundle", publish.bundle_dir, "Bundle folder")->required();
  publish_cmd->add_option("--name", publish.name, "Name in the store (default: the folder's name)");
  publish_cmd->add_option("--config", publish.config_file, "Publish to this agent config's storage");
  auto* publish_dir = publish_cmd->add_option("--dir", publish.directory, "Publish into this folder");
  auto* publish_ipfs = publish_cmd->add_option("--ipfs", publish.ipfs_api, "Publish to the IPFS node with this RPC API URL");
  auto* publish_s3 = publish_cmd->add_option("--s3-bucket", publish.s3_bucket, "Publish to this S3 bucket");
  publish_cmd->add_option("--s3-endpoint", publish.s3_endpoint, "S3-compatible endpoint URL (default: AWS)")->needs(publish_s3);
  publish_cmd->add_option("--s3-prefix", publish.s3_prefix, "Key prefix in the bucket")->needs(publish_s3);
  publish_dir->excludes(publish_ipfs)->excludes(publish_s3);
  publish_ipfs->excludes(publish_s3);

  StatusOptions status;
  auto* status_cmd = app.add_subcommand("status", "Show what the agent is doing (from its work dir's status.json)");
  status_cmd->add_option("--config", status.config_file, "The agent's config");
  status_cmd->add_option("--work-dir", status.work_dir, "The agent's work dir (default: the config's)");
  status_cmd->add_flag("--json", status.json, "As JSON");

  ProfileCommandOptions profile;
  auto* profile_cmd = app.add_subcommand("profile", "Measure how far honest replays drift apart; derive the distance thresholds");
  profile_cmd->add_option("target", profile.target, "A bundle folder, or a task file (JSON)")->required();
  profile_cmd->add_option("--segments", profile.segments, "Bundle: how many segments to replay (first, middle, last, ...)")
      ->check(CLI::Range(1, 1000000))
      ->capture_default_str();
  profile_cmd->add_option("--steps", profile.steps, "Steps per replayed piece (a task: steps trained from its initialisation)")
      ->check(CLI::Range(1, 100000000))
      ->capture_default_str();
  profile_cmd->add_option("--threads-list", profile.threads, "Thread counts to compare; the first is the reference's")
      ->delimiter(',')
      ->check(CLI::Range(1, 256));
  profile_cmd->add_option("--devices", profile.devices, "Devices to compare, e.g. cpu,cuda:0 (default: cpu and every GPU LibTorch sees)")
      ->delimiter(',');
  profile_cmd->add_option("--out", profile.out, "Where to write the profile")->capture_default_str();
  profile_cmd->add_flag("--json", profile.json, "Print the profile as JSON");

  DisputeCommandOptions dispute;
  auto* dispute_cmd = app.add_subcommand("dispute", "Referee two bundles of the same task: the first divergent checkpoint, step and layer");
  dispute_cmd->add_option("bundle_a", dispute.bundle_a, "One side's bundle folder")->required();
  dispute_cmd->add_option("bundle_b", dispute.bundle_b, "The other side's bundle folder")->required();
  dispute_cmd->add_option("--device", dispute.device, "Device to replay on: cpu, cuda or cuda:N (a GPU also traces on the CPU)")->capture_default_str();
  dispute_cmd->add_option("--threads", dispute.threads, "Intra-op threads for the replay (default: bundle A's)")->check(CLI::Range(1, 256));
  dispute_cmd->add_option("--delta", dispute.delta, "l2 threshold between states or traces from different runtimes")->check(CLI::NonNegativeNumber)->capture_default_str();
  dispute_cmd->add_flag("--json", dispute.json, "Print the report as JSON");

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
    if (*market_cmd) {
      if (*market_serve_cmd) return market_serve_command(market_serve);
      if (*market_submit_cmd) return market_submit_command(market_client, market_task_file);
      if (*market_status_cmd) return market_status_command(market_client, market_task_id);
      if (*market_cancel_cmd) return market_cancel_command(market_client, market_cancel_id);
    }
    if (*agent_cmd) return agent_command(agent);
    if (*publish_cmd) return publish_command(publish);
    if (*status_cmd) return status_command(status);
    if (*profile_cmd) return profile_command(profile);
    if (*dispute_cmd) return dispute_command(dispute);
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
