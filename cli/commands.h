// The `solver` subcommands. Each returns the process exit status (see docs/cli.md);
// errors they cannot handle propagate as solver::Error to main(), which maps them.
#pragma once

#include <cstdint>
#include <filesystem>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "agent/exit_status.h"
#include "common/keys.h"
#include "common/task.h"

namespace solver::agent {

// The task `solver run` trains when given none: configs/tasks/fashion-mnist-mlp.json,
// embedded at build time.
std::string_view embedded_default_task();
// The embedded default task, parsed (its paths are absolute). Throws Error(Internal) if the
// build embedded an invalid one.
Task parse_embedded_default_task();

// The solver key: --key, else $SOLVER_KEY, else $XDG_CONFIG_HOME (or ~/.config)/solver/solver.key.
std::filesystem::path default_key_path();
// The key at `path`, or a new one saved there (with a warning to back it up) when none exists.
// `role` names it in that warning ("solver", "local verifier").
SigningKey load_or_create_key(const std::filesystem::path& path, std::string_view role);

struct RunOptions {
  std::optional<std::filesystem::path> task_file;  // empty: the embedded default task
  std::optional<std::filesystem::path> out_dir;    // empty: runs/<task id>
  std::optional<std::filesystem::path> key_file;   // empty: default_key_path(), created if missing
  std::string device = "cpu";  // or a comma list: data parallel over those devices
  int threads = 0;
  int shards = 0;  // data-parallel shards per step; 0 = one per device
  bool resume = false;
  bool proof = true;  // false: train only, no bundle (to measure the proof's overhead)
};
int run_command(const RunOptions& options);

struct VerifyCommandOptions {
  std::filesystem::path bundle_dir;
  std::string segments = "top-q";  // top-q | random | all
  int q = 2;
  int random_count = 1;
  std::optional<double> catch_probability;  // instead of random_count: draws enough to catch...
  double faked_fraction = 0.1;              // ...a forger who faked this share of the segments
  std::optional<std::uint64_t> random_seed;
  // `solver profile` outputs: the runtimes each covers, with its thresholds (bundles from other
  // runtimes than this verifier's are judged only when one covers them)
  std::vector<std::filesystem::path> profile_files;
  int max_threads = 4;  // caps on the bundle's runtime.threads and runtime.shards
  int max_shards = 64;
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
  std::optional<std::filesystem::path> save_file;  // also write the JSON here (the agent's bench_file)
};
// `solver bench`: measures this machine (docs/benchmarks.md) and prints a table or JSON.
int bench_command(const BenchOptions& options);

struct AgentOptions {
  std::optional<std::filesystem::path> config_file;  // empty: defaults (docs/agent.md)
  std::optional<std::filesystem::path> key_file;     // overrides the config's key
  std::optional<std::filesystem::path> work_dir;     // overrides the config's work_dir
  bool until_idle = false;  // exit once the market has no work and nothing is left to publish
  bool local = false;       // a market in-process with the embedded task; solve, publish, verify, exit
  std::string device = "cpu";  // --local only (a config file names its devices)
  int threads = 0;             // --local only
};
// `solver agent`: the long-running worker (agent/daemon.h). Exits 0 after SIGTERM/SIGINT.
int agent_command(const AgentOptions& options);

struct PublishOptions {
  std::filesystem::path bundle_dir;
  std::optional<std::string> name;                   // the bundle's name in the store; default: its folder's name
  std::optional<std::filesystem::path> config_file;  // use this agent config's "storage"
  std::optional<std::filesystem::path> directory;    // or a folder...
  std::optional<std::string> ipfs_api;               // ...or an IPFS node's RPC API...
  std::optional<std::string> s3_bucket;              // ...or an S3 bucket (credentials: environment or AWS profile)
  std::optional<std::string> s3_endpoint;
  std::optional<std::string> s3_prefix;
};
// `solver publish`: prints the bundle's address (a path, ipfs://CID or s3://bucket/key).
int publish_command(const PublishOptions& options);

struct StatusOptions {
  std::optional<std::filesystem::path> config_file;
  std::optional<std::filesystem::path> work_dir;
  bool json = false;
};
// `solver status`: what the agent using this work dir is doing (its status.json).
int status_command(const StatusOptions& options);

// `solver market ...` (agent/market_command.cpp): the reference market server and a client for
// submitters (docs/market-protocol.md).
// The market URL: $SOLVER_MARKET, else http://127.0.0.1:8470.
std::string default_market_url();

struct MarketServeOptions {
  std::filesystem::path db = "market.db";
  std::string host = "127.0.0.1";
  int port = 8470;  // 0: any free port
  std::int64_t lease_seconds = 300;
  std::int64_t fault_hold_seconds = 60;
};
// Serves until SIGINT or SIGTERM, then stops cleanly; prints the bound URL on stdout.
int market_serve_command(const MarketServeOptions& options);

struct MarketClientCommandOptions {
  std::string market_url;                         // empty: default_market_url()
  std::optional<std::filesystem::path> key_file;  // empty: default_key_path()
  bool json = false;
};
int market_submit_command(const MarketClientCommandOptions& options, const std::filesystem::path& task_file);
int market_status_command(const MarketClientCommandOptions& options, const std::optional<std::string>& task_id);
int market_cancel_command(const MarketClientCommandOptions& options, const std::string& task_id);

}  // namespace solver::agent

namespace solver::agent {

struct ProfileCommandOptions {
  std::filesystem::path target;    // a bundle folder, or a task file
  int segments = 3;                // bundle: segments replayed (first, middle, last)
  int steps = 100;                 // steps per piece
  std::vector<int> threads{1, 2, 4};       // the first is the reference's
  std::vector<std::string> devices;        // empty: cpu and every CUDA device LibTorch sees
  std::filesystem::path out = "profile.json";
  bool json = false;
};
// `solver profile`: measures how far honest replays drift apart under other thread counts and
// devices, prints the table and δ per metric, writes the profile (docs/profiling.md).
int profile_command(const ProfileCommandOptions& options);

struct DisputeCommandOptions {
  std::filesystem::path bundle_a;
  std::filesystem::path bundle_b;
  std::string device = "cpu";  // a GPU here also traces the divergent step on the CPU
  int threads = 0;             // 0: bundle A's thread count
  double delta = 1e-3;
  bool json = false;
};
// `solver dispute`: referees two bundles of the same task (docs/disputes.md). Exit status: 0 the
// replay supports a side (or both), 1 neither, 2 the bundles are unreadable or of different tasks.
int dispute_command(const DisputeCommandOptions& options);

}  // namespace solver::agent
