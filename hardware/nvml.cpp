// NVML through dlopen. The declarations below copy NVML's C ABI (nvml.h): every call returns
// nvmlReturn_t (0 = success), devices are opaque handles, strings are caller-sized buffers.
// Invariant: only the _v2 variants of init, count and handle lookup are used, because the v1
// symbols enumerate GPUs the process may not be allowed to use.
#include "hardware/nvml.h"

#include <dlfcn.h>

#include <algorithm>
#include <array>
#include <cstdio>
#include <memory>
#include <mutex>

#include "common/error.h"
#include "kernels/cuda_device.h"

namespace solver::hardware {
namespace {

using NvmlReturn = int;
using NvmlDevice = struct NvmlDeviceOpaque*;
constexpr NvmlReturn kNvmlSuccess = 0;
constexpr int kNvmlTemperatureGpu = 0;  // NVML_TEMPERATURE_GPU
constexpr int kNvmlFeatureEnabled = 1;  // nvmlEnableState_t NVML_FEATURE_ENABLED
constexpr int kNvmlMemoryErrorUncorrected = 1;  // nvmlMemoryErrorType_t NVML_MEMORY_ERROR_TYPE_UNCORRECTED
constexpr int kNvmlVolatileEcc = 0;             // nvmlEccCounterType_t NVML_VOLATILE_ECC
constexpr unsigned kNvmlStringBuffer = 96;  // ≥ NVML's name (96), UUID (96) and driver version (80) sizes

struct NvmlMemory {  // nvmlMemory_t
  unsigned long long total;
  unsigned long long free;
  unsigned long long used;
};

struct NvmlUtilization {  // nvmlUtilization_t
  unsigned gpu;
  unsigned memory;
};

// nvmlProcessInfo_t as the _v3 process lists fill it (the layout of nvmlProcessInfo_v2_t).
struct NvmlProcessInfo {
  unsigned pid;
  unsigned long long used_gpu_memory;
  unsigned gpu_instance_id;
  unsigned compute_instance_id;
};
using NvmlProcessList = NvmlReturn (*)(NvmlDevice, unsigned* count, NvmlProcessInfo*);
constexpr NvmlReturn kNvmlInsufficientSize = 7;  // NVML_ERROR_INSUFFICIENT_SIZE

struct CloseLibrary {
  void operator()(void* handle) const { ::dlclose(handle); }
};

// The entry points; required ones are checked at load, optional ones may be null (older or
// newer drivers), and their fields then stay empty.
struct Nvml {
  std::unique_ptr<void, CloseLibrary> library;
  NvmlReturn (*init)() = nullptr;
  NvmlReturn (*shutdown)() = nullptr;
  const char* (*error_string)(NvmlReturn) = nullptr;
  NvmlReturn (*device_count)(unsigned*) = nullptr;
  NvmlReturn (*device_by_index)(unsigned, NvmlDevice*) = nullptr;
  NvmlReturn (*driver_version)(char*, unsigned) = nullptr;
  NvmlReturn (*cuda_driver_version)(int*) = nullptr;
  NvmlReturn (*name)(NvmlDevice, char*, unsigned) = nullptr;
  NvmlReturn (*uuid)(NvmlDevice, char*, unsigned) = nullptr;
  NvmlReturn (*memory)(NvmlDevice, NvmlMemory*) = nullptr;
  NvmlReturn (*pcie_generation)(NvmlDevice, unsigned*) = nullptr;
  NvmlReturn (*pcie_width)(NvmlDevice, unsigned*) = nullptr;
  NvmlReturn (*pcie_max_generation)(NvmlDevice, unsigned*) = nullptr;
  NvmlReturn (*pcie_max_width)(NvmlDevice, unsigned*) = nullptr;
  NvmlReturn (*power_limit_mw)(NvmlDevice, unsigned*) = nullptr;
  NvmlReturn (*power_usage_mw)(NvmlDevice, unsigned*) = nullptr;
  NvmlReturn (*utilization)(NvmlDevice, NvmlUtilization*) = nullptr;
  NvmlReturn (*ecc_mode)(NvmlDevice, int* current, int* pending) = nullptr;
  NvmlReturn (*total_ecc_errors)(NvmlDevice, int error_type, int counter_type, unsigned long long*) = nullptr;
  NvmlReturn (*retired_pages_pending)(NvmlDevice, int* pending) = nullptr;  // before Ampere
  NvmlReturn (*remapped_rows)(NvmlDevice, unsigned* corrected, unsigned* uncorrected, unsigned* pending,
                              unsigned* failed) = nullptr;  // Ampere and later
  NvmlReturn (*temperature)(NvmlDevice, int, unsigned*) = nullptr;
  NvmlReturn (*throttle_reasons)(NvmlDevice, unsigned long long*) = nullptr;
  NvmlProcessList compute_processes = nullptr;
  NvmlProcessList graphics_processes = nullptr;
};

template <typename Function>
void bind(void* library, const char* symbol, Function*& function) {
  function = reinterpret_cast<Function*>(::dlsym(library, symbol));
}

std::string error_text(const Nvml& nvml, NvmlReturn status) {
  const char* text = nvml.error_string != nullptr ? nvml.error_string(status) : nullptr;
  return text != nullptr ? std::string(text) : "NVML error " + std::to_string(status);
}

// The value when the call exists and succeeds.
std::optional<unsigned> query_unsigned(NvmlReturn (*call)(NvmlDevice, unsigned*), NvmlDevice device) {
  unsigned value = 0;
  if (call == nullptr || call(device, &value) != kNvmlSuccess) return std::nullopt;
  return value;
}

std::string query_string(NvmlReturn (*call)(NvmlDevice, char*, unsigned), NvmlDevice device) {
  std::array<char, kNvmlStringBuffer> buffer{};
  if (call == nullptr || call(device, buffer.data(), buffer.size()) != kNvmlSuccess) return "";
  buffer.back() = '\0';
  return buffer.data();
}

// The PIDs `list` names, or nullopt when the call is missing or fails. Given too small a
// buffer, NVML answers INSUFFICIENT_SIZE with the count it needs; processes may start between
// two calls, so each retry asks with room to spare.
std::optional<std::vector<unsigned>> query_processes(NvmlProcessList list, NvmlDevice device) {
  if (list == nullptr) return std::nullopt;
  std::vector<NvmlProcessInfo> infos(16);
  for (int attempt = 0; attempt < 4; ++attempt) {
    unsigned count = static_cast<unsigned>(infos.size());
    const NvmlReturn status = list(device, &count, infos.data());
    if (status == kNvmlSuccess) {
      std::vector<unsigned> pids;
      for (std::size_t i = 0; i < std::min<std::size_t>(count, infos.size()); ++i) pids.push_back(infos[i].pid);
      return pids;
    }
    if (status != kNvmlInsufficientSize) return std::nullopt;
    infos.resize(2 * std::max<std::size_t>(count, infos.size()));
  }
  return std::nullopt;
}

GpuInfo read_gpu(const Nvml& nvml, int index, NvmlDevice device) {
  GpuInfo gpu;
  gpu.index = index;
  gpu.name = query_string(nvml.name, device);
  gpu.uuid = query_string(nvml.uuid, device);
  NvmlMemory memory{};
  if (nvml.memory != nullptr && nvml.memory(device, &memory) == kNvmlSuccess) {
    gpu.memory_total_bytes = memory.total;
    gpu.memory_used_bytes = memory.used;
    gpu.memory_free_bytes = memory.free;
  }
  gpu.pcie_generation = query_unsigned(nvml.pcie_generation, device);
  gpu.pcie_width = query_unsigned(nvml.pcie_width, device);
  gpu.pcie_max_generation = query_unsigned(nvml.pcie_max_generation, device);
  gpu.pcie_max_width = query_unsigned(nvml.pcie_max_width, device);
  if (const auto milliwatts = query_unsigned(nvml.power_limit_mw, device)) gpu.power_limit_watts = *milliwatts / 1000.0;
  if (const auto milliwatts = query_unsigned(nvml.power_usage_mw, device)) gpu.power_draw_watts = *milliwatts / 1000.0;
  unsigned temperature = 0;
  if (nvml.temperature != nullptr && nvml.temperature(device, kNvmlTemperatureGpu, &temperature) == kNvmlSuccess)
    gpu.temperature_c = static_cast<int>(temperature);
  unsigned long long reasons = 0;
  if (nvml.throttle_reasons != nullptr && nvml.throttle_reasons(device, &reasons) == kNvmlSuccess) gpu.throttle_reasons = reasons;
  NvmlUtilization utilization{};
  if (nvml.utilization != nullptr && nvml.utilization(device, &utilization) == kNvmlSuccess) {
    gpu.utilization_gpu_percent = utilization.gpu;
    gpu.utilization_memory_percent = utilization.memory;
  }
  int ecc_current = 0;
  int ecc_pending = 0;
  if (nvml.ecc_mode != nullptr && nvml.ecc_mode(device, &ecc_current, &ecc_pending) == kNvmlSuccess)
    gpu.ecc_enabled = ecc_current == kNvmlFeatureEnabled;
  // NVML counts ECC errors only while ECC is on; a count from a GPU with it off would mean nothing.
  unsigned long long uncorrected = 0;
  if (gpu.ecc_enabled == true && nvml.total_ecc_errors != nullptr &&
      nvml.total_ecc_errors(device, kNvmlMemoryErrorUncorrected, kNvmlVolatileEcc, &uncorrected) == kNvmlSuccess)
    gpu.ecc_uncorrected_errors = uncorrected;
  // Failing memory is repaired by retiring its pages (before Ampere) or remapping its rows
  // (Ampere and later), either of which takes effect at the next GPU reset. A GPU answers one of
  // the two queries; the other is "not supported".
  int pages_pending = 0;
  if (nvml.retired_pages_pending != nullptr && nvml.retired_pages_pending(device, &pages_pending) == kNvmlSuccess)
    gpu.memory_repair_pending = pages_pending == kNvmlFeatureEnabled;
  unsigned corrected_rows = 0;
  unsigned uncorrected_rows = 0;
  unsigned rows_pending = 0;
  unsigned rows_failed = 0;
  if (nvml.remapped_rows != nullptr &&
      nvml.remapped_rows(device, &corrected_rows, &uncorrected_rows, &rows_pending, &rows_failed) == kNvmlSuccess) {
    gpu.memory_repair_pending = gpu.memory_repair_pending.value_or(false) || rows_pending != 0;
    gpu.row_remap_failed = rows_failed != 0;
  }
  std::optional<std::vector<unsigned>> compute = query_processes(nvml.compute_processes, device);
  const std::optional<std::vector<unsigned>> graphics = query_processes(nvml.graphics_processes, device);
  if (compute || graphics) {
    std::vector<unsigned> pids = compute.value_or(std::vector<unsigned>{});
    if (graphics) pids.insert(pids.end(), graphics->begin(), graphics->end());
    std::ranges::sort(pids);
    pids.erase(std::ranges::unique(pids).begin(), pids.end());  // a process may hold both kinds of context
    gpu.process_ids = std::move(pids);
  }
  return gpu;
}

}  // namespace

GpuInventory read_gpu_inventory(const std::string& library_name) {
  static std::mutex one_reader;
  const std::lock_guard lock(one_reader);
  GpuInventory inventory;
  Nvml nvml;
  nvml.library.reset(::dlopen(library_name.c_str(), RTLD_NOW | RTLD_LOCAL));
  if (!nvml.library) {
    const char* why = ::dlerror();
    inventory.unavailable_reason = "no NVIDIA driver (NVML not found: " + std::string(why != nullptr ? why : library_name) + ")";
    return inventory;
  }
  void* library = nvml.library.get();
  bind(library, "nvmlInit_v2", nvml.init);
  bind(library, "nvmlShutdown", nvml.shutdown);
  bind(library, "nvmlErrorString", nvml.error_string);
  bind(library, "nvmlDeviceGetCount_v2", nvml.device_count);
  bind(library, "nvmlDeviceGetHandleByIndex_v2", nvml.device_by_index);
  if (nvml.init == nullptr || nvml.shutdown == nullptr || nvml.device_count == nullptr || nvml.device_by_index == nullptr) {
    inventory.unavailable_reason = library_name + " lacks NVML's v2 entry points (a driver older than NVML 5.319?)";
    return inventory;
  }
  bind(library, "nvmlSystemGetDriverVersion", nvml.driver_version);
  bind(library, "nvmlSystemGetCudaDriverVersion", nvml.cuda_driver_version);
  bind(library, "nvmlDeviceGetName", nvml.name);
  bind(library, "nvmlDeviceGetUUID", nvml.uuid);
  bind(library, "nvmlDeviceGetMemoryInfo", nvml.memory);
  bind(library, "nvmlDeviceGetCurrPcieLinkGeneration", nvml.pcie_generation);
  bind(library, "nvmlDeviceGetCurrPcieLinkWidth", nvml.pcie_width);
  bind(library, "nvmlDeviceGetMaxPcieLinkGeneration", nvml.pcie_max_generation);
  bind(library, "nvmlDeviceGetMaxPcieLinkWidth", nvml.pcie_max_width);
  bind(library, "nvmlDeviceGetEnforcedPowerLimit", nvml.power_limit_mw);
  bind(library, "nvmlDeviceGetTemperature", nvml.temperature);
  bind(library, "nvmlDeviceGetPowerUsage", nvml.power_usage_mw);
  bind(library, "nvmlDeviceGetUtilizationRates", nvml.utilization);
  bind(library, "nvmlDeviceGetEccMode", nvml.ecc_mode);
  bind(library, "nvmlDeviceGetTotalEccErrors", nvml.total_ecc_errors);
  bind(library, "nvmlDeviceGetRetiredPagesPendingStatus", nvml.retired_pages_pending);
  bind(library, "nvmlDeviceGetRemappedRows", nvml.remapped_rows);
  bind(library, "nvmlDeviceGetComputeRunningProcesses_v3", nvml.compute_processes);
  bind(library, "nvmlDeviceGetGraphicsRunningProcesses_v3", nvml.graphics_processes);
  // Renamed "clocks event reasons" in driver 535; the old name is kept there but may go.
  bind(library, "nvmlDeviceGetCurrentClocksEventReasons", nvml.throttle_reasons);
  if (nvml.throttle_reasons == nullptr) bind(library, "nvmlDeviceGetCurrentClocksThrottleReasons", nvml.throttle_reasons);

  if (const NvmlReturn status = nvml.init(); status != kNvmlSuccess) {
    inventory.unavailable_reason = "NVML failed to initialise: " + error_text(nvml, status);
    return inventory;
  }
  std::array<char, kNvmlStringBuffer> driver{};
  if (nvml.driver_version != nullptr && nvml.driver_version(driver.data(), driver.size()) == kNvmlSuccess) {
    driver.back() = '\0';
    inventory.driver_version = driver.data();
  }
  int cuda_version = 0;  // 1000 * major + 10 * minor
  if (nvml.cuda_driver_version != nullptr && nvml.cuda_driver_version(&cuda_version) == kNvmlSuccess)
    inventory.cuda_driver_version = std::to_string(cuda_version / 1000) + "." + std::to_string(cuda_version % 1000 / 10);

  unsigned count = 0;
  if (const NvmlReturn status = nvml.device_count(&count); status != kNvmlSuccess) {
    inventory.unavailable_reason = "NVML could not count GPUs: " + error_text(nvml, status);
    count = 0;
  }
  for (unsigned index = 0; index < count; ++index) {
    NvmlDevice device = nullptr;
    if (nvml.device_by_index(index, &device) != kNvmlSuccess) continue;  // e.g. a GPU lost off the bus: skip it
    inventory.gpus.push_back(read_gpu(nvml, static_cast<int>(index), device));
  }
  nvml.shutdown();
  return inventory;
}

const GpuInfo* gpu_of_cuda_device(const GpuInventory& inventory, int cuda_device) {
  std::string uuid;
  try {
    uuid = kernels::cuda_device_properties(cuda_device).uuid;
  } catch (const Error&) {
    return nullptr;  // no CUDA runtime, driver or such device: nothing to match
  }
  for (const GpuInfo& gpu : inventory.gpus)
    if (gpu.uuid == uuid) return &gpu;
  return nullptr;
}

std::vector<std::string> throttle_reason_names(std::uint64_t reasons) {
  // NVML's nvmlClocksThrottleReason* bits, in bit order.
  constexpr std::array<std::string_view, 9> kNames{
      "gpu_idle",         "applications_clocks_setting", "sw_power_cap",
      "hw_slowdown",      "sync_boost",                  "sw_thermal_slowdown",
      "hw_thermal_slowdown", "hw_power_brake_slowdown",  "display_clock_setting"};
  std::vector<std::string> names;
  for (unsigned bit = 0; bit < 64; ++bit) {
    const std::uint64_t mask = std::uint64_t{1} << bit;
    if ((reasons & mask) == 0) continue;
    if (bit < kNames.size()) {
      names.emplace_back(kNames[bit]);
    } else {
      char hex[24];
      std::snprintf(hex, sizeof hex, "0x%llx", static_cast<unsigned long long>(mask));
      names.emplace_back(hex);
    }
  }
  return names;
}

}  // namespace solver::hardware
