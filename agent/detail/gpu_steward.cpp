#include "agent/detail/gpu_steward.h"

#include <unistd.h>

#include <fmt/format.h>

#include <ctime>

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

std::pair<std::string, std::string> memory_fault(const std::string& device, const hardware::GpuInfo& gpu) {
  if (gpu.row_remap_failed == true)
    return {"row_remap_failed", device + " could not remap a failing memory row (no spare rows left): its memory is "
                                         "failing for good"};
  if (gpu.memory_repair_pending == true)
    return {"memory_repair_pending", device + " has failing memory that is repaired (pages retired or rows "
                                              "remapped) only at the next GPU reset"};
  return {};
}

std::vector<unsigned> foreign_processes(const hardware::GpuInfo& gpu, unsigned own_pid) {
  std::vector<unsigned> foreign;
  for (const unsigned pid : gpu.process_ids.value_or(std::vector<unsigned>{}))
    if (pid != own_pid) foreign.push_back(pid);
  return foreign;
}

std::string idle_only_hold(const IdleOnly& settings, const std::string& device, const std::vector<unsigned>& foreign,
                           int minute_of_day) {
  if (!settings.enabled) return "";
  if (!foreign.empty())
    return fmt::format("{} is in use by another process (pid {})", device, fmt::join(foreign, ", "));
  if (!settings.inside_hours(minute_of_day)) {
    std::vector<std::string> windows;
    for (const HourWindow& window : settings.hours)
      windows.push_back(fmt::format("{:02}:{:02}-{:02}:{:02}", window.start_minute / 60, window.start_minute % 60,
                                    window.end_minute / 60, window.end_minute % 60));
    return fmt::format("outside idle_only.hours ({}, local time)", fmt::join(windows, ", "));
  }
  return "";
}

int local_minute_of_day() {
  const std::time_t now = std::time(nullptr);
  std::tm local{};
  ::localtime_r(&now, &local);
  return 60 * local.tm_hour + local.tm_min;
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
                       std::string nvml_library, IdleOnly idle_only, std::function<int()> minute_of_day)
    : gpus_(std::move(gpus)),
      nvml_library_(std::move(nvml_library)),
      idle_only_(std::move(idle_only)),
      minute_of_day_(std::move(minute_of_day)),
      controls_(controls),
      gates_(gpus_.size(), ThermalGate(limits)),
      cooling_(gpus_.size()),
      reported_ecc_(gpus_.size(), 0),
      reported_missing_(gpus_.size(), false),
      reported_memory_(gpus_.size()),
      idle_held_(gpus_.size()) {
  if (gpus_.empty()) return;
  read();
  reader_ = std::thread([this] {
    std::unique_lock lock(mutex_);
    while (!stop_reading_.wait_for(lock, kReadInterval, [this] { return stopping_; })) {
      lock.unlock();
      read();
      lock.lock();
    }
  });
}

GpuSteward::~GpuSteward() {
  {
    const std::lock_guard lock(mutex_);
    stopping_ = true;
  }
  stop_reading_.notify_all();
  if (reader_.joinable()) reader_.join();
}

std::string GpuSteward::check() const {
  const std::lock_guard lock(mutex_);
  for (const std::string& why : cooling_)
    if (!why.empty()) return why;
  return "";
}

void GpuSteward::read() {
  const hardware::GpuInventory inventory = hardware::read_gpu_inventory(nvml_library_);
  const std::lock_guard lock(mutex_);
  judge_locked(inventory);
}

void GpuSteward::update_idle_hold(std::size_t i, std::string why) {
  if (why == idle_held_[i]) return;
  if (why.empty())
    log_info("agent", "{} is idle{}: idle_only lets it work", gpus_[i].device,
             idle_only_.hours.empty() ? "" : " and inside idle_only.hours");
  else
    log_warn("agent", "idle_only holds {}: {}", gpus_[i].device, why);
  controls_.set_idle_hold(gpus_[i].device, why.empty() ? std::nullopt : std::optional<std::string>(why));
  idle_held_[i] = std::move(why);
}

void GpuSteward::judge_locked(const hardware::GpuInventory& inventory) {
  const int minute_of_day = idle_only_.enabled ? minute_of_day_() : 0;
  if (!inventory.unavailable_reason.empty()) {
    // Nothing to judge by: the slot works on rather than wait on a reading that may never come;
    // idle_only then keeps to its hours only.
    if (!reported_unavailable_) log_warn("agent", "GPU steward cannot read NVML: {}", inventory.unavailable_reason);
    reported_unavailable_ = true;
    std::ranges::fill(cooling_, std::string());
    for (std::size_t i = 0; i < gpus_.size(); ++i)
      update_idle_hold(i, idle_only_hold(idle_only_, gpus_[i].device, {}, minute_of_day));
    return;
  }
  reported_unavailable_ = false;
  const Clock::time_point now = Clock::now();
  const unsigned own_pid = static_cast<unsigned>(::getpid());
  for (std::size_t i = 0; i < gpus_.size(); ++i) {
    const WatchedGpu& watched = gpus_[i];
    const auto gpu = std::ranges::find(inventory.gpus, watched.uuid, &hardware::GpuInfo::uuid);
    update_idle_hold(i, idle_only_hold(idle_only_, watched.device,
                                       gpu == inventory.gpus.end() ? std::vector<unsigned>{}
                                                                   : foreign_processes(*gpu, own_pid),
                                       minute_of_day));
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
    if (const auto [reason, fault] = memory_fault(watched.device, *gpu); fault != reported_memory_[i]) {
      if (!fault.empty()) controls_.quarantine(watched.device, reason, fault);
      reported_memory_[i] = fault;
    }
    const std::string why = gates_[i].update(watched.device, *gpu, now);
    if (why.empty() && !cooling_[i].empty()) log_info("agent", "{} cooled down: training may go on", watched.device);
    if (!why.empty() && cooling_[i].empty()) log_warn("agent", "{}: pausing between steps", why);
    cooling_[i] = why;
  }
}

}  // namespace solver::agent::detail
