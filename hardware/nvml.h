// The GPU inventory through NVML, which ships with the NVIDIA driver. libnvidia-ml is opened
// at run time with dlopen and never linked, so `solver` starts, and reports 0 GPUs, on a
// machine without a driver. No NVIDIA header is needed: the few NVML entry points used are
// declared in nvml.cpp with the ABI the driver has kept stable since NVML's v2 calls.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace solver::hardware {

inline constexpr std::string_view kNvmlLibrary = "libnvidia-ml.so.1";

// One GPU as NVML sees it. A query the GPU or driver does not support stays empty (nullopt or
// ""), so one missing field never hides the rest.
struct GpuInfo {
  int index = 0;                 // NVML's index (not necessarily CUDA's: CUDA_VISIBLE_DEVICES reorders)
  std::string name;              // "NVIDIA H100 80GB HBM3"
  std::string uuid;              // "GPU-…", stable across reboots: the name to label metrics with
  std::optional<std::uint64_t> memory_total_bytes;
  std::optional<std::uint64_t> memory_used_bytes;
  std::optional<std::uint64_t> memory_free_bytes;
  std::optional<unsigned> pcie_generation;      // current link; an idle GPU may downshift to save power
  std::optional<unsigned> pcie_width;           // current lanes
  std::optional<unsigned> pcie_max_generation;  // what the GPU and slot can do
  std::optional<unsigned> pcie_max_width;
  std::optional<double> power_limit_watts;  // enforced limit
  std::optional<double> power_draw_watts;   // now, for the whole board
  std::optional<int> temperature_c;         // GPU core
  std::optional<std::uint64_t> throttle_reasons;  // NVML clock throttle (event) reason bits
  // Percent of NVML's last sample period (1/6 s to 1 s by GPU) in which a kernel ran / the
  // memory was read or written.
  std::optional<unsigned> utilization_gpu_percent;
  std::optional<unsigned> utilization_memory_percent;
  std::optional<bool> ecc_enabled;  // current ECC mode; empty on GPUs without ECC (GeForce)
  // Uncorrected (double-bit) ECC errors in NVML's volatile counter: since the driver last
  // loaded (each boot with persistence mode on). Needs ECC on.
  std::optional<std::uint64_t> ecc_uncorrected_errors;
  // Failing memory the driver has marked for repair (pages to retire before Ampere, rows to remap
  // from Ampere on), which takes effect only at the next GPU reset: until then it is in use.
  std::optional<bool> memory_repair_pending;
  // Ampere and later: a row could not be remapped (no spare rows left): the memory is failing for good.
  std::optional<bool> row_remap_failed;
  // PIDs of the processes with a compute or graphics context on the GPU, sorted, each once.
  // Empty when NVML lists neither (MIG mode without privileges, an old driver). In a container
  // without the host's PID namespace they are host PIDs, not the container's.
  std::optional<std::vector<unsigned>> process_ids;
};

struct GpuInventory {
  // Empty when NVML answered; otherwise why there is no inventory ("no NVIDIA driver (NVML not
  // found)", "NVML failed to initialise: …"). Either way `gpus` then is empty: not an error.
  std::string unavailable_reason;
  std::string driver_version;       // "550.54.15"
  std::string cuda_driver_version;  // highest CUDA version the driver supports, "12.4"
  std::vector<GpuInfo> gpus;
};

// Opens `library` with dlopen (a soname or a path), reads every GPU, closes it again. Blocks
// for as long as NVML takes (well under a second, more when GPUs are waking up). Never throws
// for a missing or failing NVML: that is a normal machine state, reported in
// unavailable_reason. Safe from every thread: reads are serialised, since NVML's init and
// shutdown are process-wide (the metrics' collector and each slot's GPU steward read it).
GpuInventory read_gpu_inventory(const std::string& library = std::string(kNvmlLibrary));

// NVML's figures for CUDA device `cuda_device` (matched by UUID, since CUDA and NVML number GPUs
// differently), or nullptr when the CUDA runtime or NVML does not know it.
const GpuInfo* gpu_of_cuda_device(const GpuInventory& inventory, int cuda_device);

// Names of the set bits of an NVML throttle-reason mask ("sw_power_cap", "hw_thermal_slowdown",
// ...); bits NVML may add later appear as hex ("0x400"). Empty for 0.
std::vector<std::string> throttle_reason_names(std::uint64_t reasons);

}  // namespace solver::hardware
