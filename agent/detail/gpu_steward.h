// A slot's guard over the GPUs it trains on, read through NVML (hardware/nvml.h) every few
// seconds on a thread of its own, so that no training step waits for NVML. It answers whether
// the slot must wait for its GPUs to cool down (the task job asks between steps, the slot loop
// before claiming), and quarantines a GPU that shows
// uncorrected ECC errors, failing memory waiting for a GPU reset (retired pages, remapped rows)
// or rows that could not be remapped, or that NVML no longer lists (fallen off the bus) through the
// operator's controls, where `solver agent clear DEVICE` lifts it (agent_controls.h). With
// idle_only on, it holds a GPU another process uses, or all of them outside idle_only.hours,
// and ends the hold at the first reading that finds the GPU idle inside the hours.
#pragma once

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "agent/agent_config.h"
#include "hardware/nvml.h"

namespace solver::agent::detail {

class AgentControls;

// NVML's throttle reasons that mean heat or power trouble: hw_slowdown, sw_thermal_slowdown,
// hw_thermal_slowdown, hw_power_brake_slowdown. Not sw_power_cap: a busy GPU runs at its
// power limit as it should.
inline constexpr std::uint64_t kHeatOrPowerThrottle = 0x8 | 0x20 | 0x40 | 0x80;

// The thermal decision for one GPU over its readings, with hysteresis: it starts cooling at or
// above max_celsius, or once slowed by heat or power for longer than max_throttled_seconds;
// it ends at or below resume_celsius with no such slowdown.
class ThermalGate {
 public:
  using Clock = std::chrono::steady_clock;

  explicit ThermalGate(ThermalLimits limits) : limits_(limits) {}
  // Takes the reading of `gpu` (named `device` in the answer) at `now`; returns why it must
  // cool down, or "" while it may work.
  std::string update(const std::string& device, const hardware::GpuInfo& gpu, Clock::time_point now);

 private:
  ThermalLimits limits_;
  bool cooling_ = false;
  std::optional<Clock::time_point> throttled_since_;
};

// The memory fault that quarantines `gpu` (named `device`): its reason for metrics
// ("memory_repair_pending", "row_remap_failed") and the sentence for the operator; empty when none.
std::pair<std::string, std::string> memory_fault(const std::string& device, const hardware::GpuInfo& gpu);

// The processes on `gpu` other than `own_pid` (this agent): none when NVML does not list them.
std::vector<unsigned> foreign_processes(const hardware::GpuInfo& gpu, unsigned own_pid);
// Why idle_only keeps `device` from work at `minute_of_day` (local time) with `foreign` processes
// on it: "" while it may work, always when idle_only is off.
std::string idle_only_hold(const IdleOnly& settings, const std::string& device, const std::vector<unsigned>& foreign,
                           int minute_of_day);
// Minutes since local midnight now.
int local_minute_of_day();

// A GPU a slot trains on: the device as the slot names it ("cuda:0") and its NVML UUID.
struct WatchedGpu {
  std::string device;
  std::string uuid;
};

class GpuSteward {
 public:
  using Clock = std::chrono::steady_clock;
  static constexpr std::chrono::seconds kReadInterval{2};

  // The NVML GPUs behind the slot's CUDA devices, matched by UUID (gpu_of_cuda_device); a CPU
  // slot has none, and a device NVML does not know is left out, with a warning.
  static std::vector<WatchedGpu> gpus_of_slot(const std::string& slot_device, const hardware::GpuInventory& inventory);

  // Watches `gpus`, reading NVML from `nvml_library`; quarantines and holds for `idle_only`
  // through `controls`, telling the hours by `minute_of_day`. Reads once before it returns (so a
  // GPU already faulty is quarantined at once), then every kReadInterval on its thread: each
  // reading quarantines a GPU with a new fault (errors beyond those already reported, failing
  // memory, newly missing) and sets or ends its idle-only hold.
  GpuSteward(std::vector<WatchedGpu> gpus, ThermalLimits limits, AgentControls& controls,
             std::string nvml_library = std::string(hardware::kNvmlLibrary), IdleOnly idle_only = {},
             std::function<int()> minute_of_day = local_minute_of_day);
  ~GpuSteward();
  GpuSteward(const GpuSteward&) = delete;
  GpuSteward& operator=(const GpuSteward&) = delete;

  // Why the slot must wait for its GPUs to cool down, by the last reading; "" while it may work
  // (always, watching none or without NVML).
  std::string check() const;

 private:
  // One reading of NVML (outside the lock: it may take a while), and what it means.
  void read();
  void judge_locked(const hardware::GpuInventory& inventory);
  // Sets or ends GPU i's idle-only hold: `why` it is held, "" when it is not.
  void update_idle_hold(std::size_t i, std::string why);

  const std::vector<WatchedGpu> gpus_;
  const std::string nvml_library_;
  const IdleOnly idle_only_;
  const std::function<int()> minute_of_day_;
  AgentControls& controls_;
  mutable std::mutex mutex_;
  std::condition_variable stop_reading_;
  bool stopping_ = false;
  std::vector<ThermalGate> gates_;           // one per watched GPU
  std::vector<std::string> cooling_;         // per GPU: why it cools down, "" when it does not
  std::vector<std::uint64_t> reported_ecc_;  // per GPU: uncorrected errors already quarantined for
  std::vector<bool> reported_missing_;       // per GPU: its absence already quarantined for
  std::vector<std::string> reported_memory_;  // per GPU: the memory fault already quarantined for ("": none)
  std::vector<std::string> idle_held_;       // per GPU: why idle_only holds it, "" when it does not
  bool reported_unavailable_ = false;        // NVML's absence logged once
  std::thread reader_;                       // last: started once the state above exists
};

}  // namespace solver::agent::detail
