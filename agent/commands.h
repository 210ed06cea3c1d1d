// The `solver` subcommands. Each returns the process exit status (see docs/cli.md);
// errors they cannot handle propagate as solver::Error to main(), which maps them.
#pragma once

#include <cstdint>
#include <filesystem>
#include <optional>
#include <string>
#include <string_view>

#include "common/task.h"

namespace solver::agent {

// Exit statuses shared by every command (docs/cli.md).
inline constexpr int kExitOk = 0;
inline constexpr int kExitRejected = 1;     // verify: the bundle was checked and rejected
inline constexpr int kExitBadInput = 2;     // a task, bundle, checkpoint or data file was bad; a budget was exceeded
inline constexpr int kExitUsage = 64;       // the command line was wrong
inline constexpr int kExitGpu = 69;         // the requested GPU is unavailable
inline constexpr int kExitInternal = 70;    // a bug in solver
inline constexpr int kExitConfig = 78;      // configuration (e.g. the key file) is wrong

// The task `solver run` trains when given none: configs/tasks/fashion-mnist-mlp.json,
// embedded at build time.
std::string_view embedded_default_task();
// The embedded default task, parsed (its paths are absolute). Throws Error(Internal) if the
// build embedded an invalid one.
Task parse_embedded_default_task();

// The solver key: --key, else $SOLVER_KEY, else $XDG_CONFIG_HOME (or ~/.config)/solver/solver.key.
std::filesystem::path default_key_path();

struct RunOptions {
  std::optional<std::filesystem::path> task_file;  // empty: the embedded default task
  std::optional<std::filesystem::path> out_dir;    // empty: runs/<task id>
  std::optional<std::filesystem::path> key_file;   // empty: default_key_path(), created if missing
  std::string device = "cpu";
  int threads = 0;
  bool resume = false;
  bool proof = true;  // false: train only, no bundle (to measure the proof's overhead)
};
int run_command(const RunOptions& options);

struct VerifyCommandOptions {
  std::filesystem::path bundle_dir;
  std::string segments = "top-q";  // top-q | random | all
  int q = 2;
  int random_count = 1;
  std::optional<std::uint64_t> random_seed;
  double delta = 1e-3;
  std::optional<std::filesystem::path> task_file;  // require the bundle to be for this task
  std::optional<std::string> expected_key;         // require this solver public key (hex)
  std::string device = "cpu";
  bool json = false;
};
int verify_command(const VerifyCommandOptions& options);

int keygen_command(const std::optional<std::filesystem::path>& key_file);

struct BenchOptions {
  bool quick = false;  // seconds instead of minutes: smaller sizes, fewer repeats
  bool json = false;
  std::string device;                  // where matmul and training run; "": cuda:0 if LibTorch sees a GPU, else cpu
  std::filesystem::path disk_dir = ".";  // the disk test's folder: where `solver run` writes runs/
};
// `solver bench`: measures this machine (docs/benchmarks.md) and prints a table or JSON.
int bench_command(const BenchOptions& options);

}  // namespace solver::agent
