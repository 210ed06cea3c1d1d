#include "agent/detail/gpu_steward.h"

#include <fmt/format.h>

#include "agent/detail/agent_controls.h"
#include "common/device.h"
#include "common/log.h"

namespace solver::agent::detail {

std::string ThermalGate::update(const std::string& device, const hardware::GpuInfo& gpu, Clock::time_point now) {
  const std::uint64_t slowed = gpu.throttle_reasons.value_or(0) & kHeatOrPowerThrottle;
  if (slowed == 0) {
    throttled_since_.reset();
  } else if (!throttled_since_) {
    throttled_since_ = now;
  }
  const std::string temperature = gpu.temperature_c ? fmt::format("{} °C", *gpu.temperature_c) : "temperature unknown";
  const std::string slowdown =
      slowed != 0 ? fmt::format(", slowed by {}", fmt::join(hardware::throttle_reason_names(slowed), ", ")) : "";
  if (cooling_) {
    cooling_ = (gpu.temperature_c && *gpu.temperature_c > limits_.resume_celsius) || slowed != 0;
    if (!cooling_) return "";
    return fmt::format("{} cooling down ({}{}); training goes on at or below {:g} °C (thermal.resume_celsius)", device,
                       temperature, slowdown, limits_.resume_celsius);
  }
  if (gpu.temperature_c && *gpu.temperature_c >= limits_.max_celsius) {
    cooling_ = true;
    return fmt::format("{} at {} (thermal.max_celsius {:g}){}; training goes on at or below {:g} °C", device, temperature,
                       limits_.max_celsius, slowdown, limits_.resume_celsius);
  }
  const double slowed_seconds = throttled_since_ ? std::chrono::duration<double>(now - *throttled_since_).count() : 0.0;
  if (throttled_since_ && slowed_seconds > limits_.max_throttled_seconds) {
    cooling_ = true;
    throttled_since_.reset();
    return fmt::format("{} slowed by {} for {:.0f} s (thermal.max_throttled_seconds {:g}, {})", device,
                       fmt::join(hardware::throttle_reason_names(slowed), ", "), slowed_seconds,
                       limits_.max_throttled_seconds, temperature);
  }
  return "";
}

std::vector<WatchedGpu> GpuSteward::gpus_of_slot(const std::string& slot_device, const hardware::GpuInventory& inventory) {
  std::vector<WatchedGpu> gpus;
  for (const Device& device : parse_device_list(slot_device)) {
    if (!device.is_cuda()) continue;
    if (const hardware::GpuInfo* gpu = hardware::gpu_of_cuda_device(inventory, device.index)) {
      gpus.push_back(WatchedGpu{device.name(), gpu->uuid});
    } else {
      log_warn("agent", "{}: NVML does not know this GPU ({}); its temperature and faults are not watched",
               device.name(), inventory.unavailable_reason.empty() ? "no UUID matches" : inventory.unavailable_reason);
    }
  }
  return gpus;
}

GpuSteward::GpuSteward(std::vector<WatchedGpu> gpus, ThermalLimits limits, AgentControls& controls,
                       std::string nvml_library)
    : gpus_(std::move(gpus)),
      nvml_library_(std::move(nvml_library)),
      controls_(controls),
      gates_(gpus_.size(), ThermalGate(limits)),
      cooling_(gpus_.size()),
      reported_ecc_(gpus_.size(), 0),
      reported_missing_(gpus_.size(), false) {}

std::string GpuSteward::check() {
  if (gpus_.empty()) return "";
  const std::lock_guard lock(mutex_);
  const Clock::time_point now = Clock::now();
  if (!last_read_ || now - *last_read_ >= kReadInterval) {
    last_read_ = now;
    read_locked();
  }
  for (const std::string& why : cooling_)
    if (!why.empty()) return why;
  return "";
}

void GpuSteward::read_locked() {
  const hardware::GpuInventory inventory = hardware::read_gpu_inventory(nvml_library_);
  if (!inventory.unavailable_reason.empty()) {
    // Nothing to judge by: the slot works on rather than wait on a reading that may never come.
    if (!reported_unavailable_) log_warn("agent", "GPU steward cannot read NVML: {}", inventory.unavailable_reason);
    reported_unavailable_ = true;
    std::ranges::fill(cooling_, std::string());
    return;
  }
  reported_unavailable_ = false;
  const Clock::time_point now = Clock::now();
  for (std::size_t i = 0; i < gpus_.size(); ++i) {
    const WatchedGpu& watched = gpus_[i];
    const auto gpu = std::ranges::find(inventory.gpus, watched.uuid, &hardware::GpuInfo::uuid);
    if (gpu == inventory.gpus.end()) {
      if (!reported_missing_[i])
        controls_.quarantine(watched.device, "lost",
                             fmt::format("NVML no longer lists {} ({}): fallen off the bus?", watched.device, watched.uuid));
      reported_missing_[i] = true;
      cooling_[i].clear();
      continue;
    }
    reported_missing_[i] = false;
    if (const std::uint64_t errors = gpu->ecc_uncorrected_errors.value_or(0); errors > reported_ecc_[i]) {
      controls_.quarantine(watched.device, "ecc_uncorrected",
                           fmt::format("{} has {} uncorrected ECC error(s) since the driver loaded", watched.device, errors));
      reported_ecc_[i] = errors;
    }
    const std::string why = gates_[i].update(watched.device, *gpu, now);
    if (why.empty() && !cooling_[i].empty()) log_info("agent", "{} cooled down: training may go on", watched.device);
    if (!why.empty() && cooling_[i].empty()) log_warn("agent", "{}: pausing between steps", why);
    cooling_[i] = why;
  }
}

}  // namespace solver::agent::detail
