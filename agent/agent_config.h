// The agent's configuration file (configs/agent.json, documented in docs/agent.md): JSON with
// // comments allowed. Every field is checked on load and an error names the field, the value
// and what was expected, so a typo fails at start-up instead of weeks later.
#pragma once

#include <nlohmann/json.hpp>

#include <cstdint>
#include <filesystem>
#include <optional>
#include <string>
#include <vector>

#include "agent/ceilings.h"
#include "net/url_policy.h"
#include "proof/verify.h"

namespace solver::agent {

struct StorageConfig {
  std::string kind = "directory";  // "directory", "ipfs" or "s3"
  std::filesystem::path directory;  // directory: where bundles are published
  nlohmann::json settings;          // ipfs / s3: their own fields (docs/storage.md)
};

// The config's "thermal": a GPU at or above max_celsius, or slowed by heat or power for
// longer than max_throttled_seconds, pauses its slot between steps until it is at or below
// resume_celsius and no longer slowed (detail/gpu_steward.h).
struct ThermalLimits {
  double max_celsius = 85.0;
  double resume_celsius = 75.0;
  double max_throttled_seconds = 60.0;
};

// One of idle_only.hours: "22:00-08:00", in minutes after local midnight. An end before the
// start crosses midnight; the end's minute itself is outside.
struct HourWindow {
  int start_minute = 0;
  int end_minute = 0;
  bool contains(int minute_of_day) const;
};

// The config's "idle_only" (docs/agent.md): a GPU slot works only while no other process uses
// its GPUs and, when hours are given, inside one of them. Otherwise the slot is held, and a
// running task stops within stop_within_seconds (detail/gpu_steward.h).
struct IdleOnly {
  bool enabled = false;
  double stop_within_seconds = 60.0;
  std::vector<HourWindow> hours;  // empty: every hour
  bool inside_hours(int minute_of_day) const;
};

struct AgentConfig {
  std::string market_url = "http://127.0.0.1:8470";
  std::optional<std::filesystem::path> key_file;  // empty: default_key_path()
  std::string name;                               // how the market lists this rig; default: the host name
  std::filesystem::path work_dir;                 // in-flight tasks, spooled bundles, status.json
  std::filesystem::path cache_dir;                // fetched task inputs
  std::filesystem::path bench_file;               // `solver bench --save` figures sent at registration; default <work_dir>/bench.json
  std::uint64_t max_cache_bytes = 50ull << 30;
  std::uint64_t min_free_disk_bytes = 5ull << 30;  // below it free on the work disk: claim nothing, hold training (disk_watch.h)
  // limits.max_host_memory_gb: the most LibTorch's CPU tensors may hold at once (train/host_memory.h);
  // 0: no limit. A CPU slot reports it to the market as its memory.
  std::uint64_t max_host_memory_bytes = 0;
  // Published bundles in the directory store (pruner.h): the newest keep_bundles stay; older
  // ones go once the market says their task is over, and any past the age (0: no age limit).
  int keep_bundles = 20;
  double bundle_max_age_seconds = 30 * 86400.0;
  // Task slot i trains on devices[i % size]; "cuda:0,cuda:1": one slot on both. Empty (the
  // config names none): every GPU LibTorch sees, or the CPU (with_visible_devices).
  std::vector<std::string> devices;
  int tasks_at_once = 0;  // task slots, each on its own thread; 0 (the config names none): one per device
  TaskCeilings ceilings;                           // limits.max_task_*: what one task may ask of this rig
  int max_worker_faults = 3;  // limits.max_worker_faults: this many tasks failed in a row by this rig's fault stop claiming
  int threads = 0;
  std::vector<std::string> roles = {"solve", "verify"};
  // Where task inputs and bundles to verify may come from (allow_local_files, allow_http,
  // allow_private_addresses, allow_networks): https from public addresses unless opened.
  net::UrlPolicy downloads;
  StorageConfig storage;
  int metrics_port = 0;  // metrics.port: the Prometheus endpoint on 127.0.0.1 (0: off)
  double heartbeat_seconds = 30.0;  // at most; a shorter lease makes it shorter (a third of the lease)
  double poll_min_seconds = 2.0;    // idle polling backs off from here...
  double poll_max_seconds = 60.0;   // ...to here, with jitter
  // pause.release_after_seconds: a task held this long by a pause or a disabled device is given
  // back to the market (docs/agent.md, "Controls")
  double pause_release_seconds = 900.0;
  ThermalLimits thermal;  // read at start (a reload does not change it)
  IdleOnly idle_only;     // read at start (a reload does not change it)
  // The verifier's policy (the config's "verify": docs/cli.md, solver verify): q, random_count or
  // catch_probability with faked_fraction, and the coverages of its `solver profile` outputs
  // (verify.profiles; bundles from other runtimes than this rig's are judged only within one).
  // What each job names (its task, solver key, commitments, device) is set per job.
  proof::VerifyOptions verify;

  bool has_role(const std::string& role) const;
};

// The config with the defaults that depend on this machine filled in, as the agent and the
// doctor run it: no devices named means cuda:0 ... cuda:N-1 when LibTorch sees N GPUs, else
// cpu; no limits.tasks_at_once means one task slot per device.
AgentConfig with_visible_devices(AgentConfig config, int cuda_device_count);

// How many CUDA devices the config's devices need: one more than the highest index named (0: CPU only).
int cuda_devices_needed(const AgentConfig& config);

// Defaults for everything; paths under $XDG_STATE_HOME / $XDG_CACHE_HOME (or ~/.local/state, ~/.cache).
AgentConfig default_agent_config();
// Parses a config (JSON with comments); relative paths resolve against `base_dir`; "~/" is $HOME.
// Throws Error(Config) naming the field.
AgentConfig parse_agent_config(const std::string& text, const std::filesystem::path& base_dir);
AgentConfig load_agent_config(const std::filesystem::path& path);
// Moves the work dir (--work-dir), and with it the paths that default to inside it.
void move_work_dir(AgentConfig& config, const std::filesystem::path& work_dir);
// $SOLVER_MARKET when set and not empty. It replaces the config file's market, and a --market
// flag replaces it (OPERATORS.md: flag > environment > config file > default).
std::optional<std::string> market_url_from_environment();

}  // namespace solver::agent
