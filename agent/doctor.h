// `solver doctor`: can this rig take work, and what to do about each thing that stops it. One
// row per check, OK / WARN / FAIL, each FAIL with its fix. The agent runs the local checks at
// start (check_rig_can_work) and refuses to start on a FAIL of the rig's: a rig that cannot do
// the work must not claim it, since each claim would fail and cost the task an attempt. A device
// that fails on its own is quarantined instead, and the others work.
#pragma once

#include <nlohmann/json.hpp>

#include <filesystem>
#include <string>
#include <vector>

#include "agent/agent_config.h"
#include "hardware/nvml.h"

namespace solver::agent {

enum class CheckStatus { Ok, Warn, Fail };

struct Check {
  std::string area;    // "gpu", "disk", "identity", "network"
  std::string name;    // "libtorch cuda", "self-test cuda:0", "market", ...
  CheckStatus status = CheckStatus::Ok;
  std::string detail;  // what was found
  std::string fix;     // for WARN and FAIL: what to do
  // A FAIL that is one configured device's own ("cuda:1" fails its self-test): the agent starts,
  // and quarantines that device under `quarantine_reason` (self_test, kernel_twin) while the
  // others work. Empty: the rig's (the agent refuses to start), or a fault the GPU steward's first
  // reading quarantines by itself (ECC errors, failing memory).
  std::string device;
  std::string quarantine_reason;
};

struct DoctorReport {
  std::vector<Check> checks;
  bool passed() const;  // no FAIL
  nlohmann::json to_json() const;
};

std::string_view check_status_name(CheckStatus status);

// What NVML's reading of the GPU behind configured device `device` ("cuda:0") says, as two rows:
// "health cuda:0" (free memory, temperature, power; WARN when hot or throttled for heat or power)
// and "ecc cuda:0" (FAIL on uncorrected ECC errors since the driver loaded, WARN when ECC is
// off, OK "not supported" on a GPU without ECC).
std::vector<Check> gpu_health_checks(const std::string& device, const hardware::GpuInfo& gpu);

// The checks that need nothing but this machine: the NVIDIA driver, LibTorch's CUDA devices
// against the config's, a training-sized matmul on each configured device and, on a GPU, the
// FMA kernel against its CPU twin bit for bit, with gpu_health_checks' rows; the
// work and cache dirs writable and the work disk's free space. `measure_disk`: also the
// fsync'd write rate of the work dir (a second or so).
DoctorReport check_rig(const AgentConfig& config, bool measure_disk);

// check_rig, then the key at `key_file` (present, 0600), the market (reachable, its clock
// against ours, registration accepted with that key) and the configured store (a probe object
// written, read back and removed).
DoctorReport run_doctor(const AgentConfig& config, const std::filesystem::path& key_file);

// The agent's start: check_rig without the disk measurement. Throws every FAIL of the rig's,
// each with its fix, as Error(Cuda) when one is a GPU check (exit 69), else Error(Config) (exit
// 78). Returns the FAILs of single devices, which the agent quarantines (Check::device).
std::vector<Check> check_rig_can_work(const AgentConfig& config);

}  // namespace solver::agent
