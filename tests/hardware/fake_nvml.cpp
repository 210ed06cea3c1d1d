// A stand-in for libnvidia-ml.so.1 with two canned GPUs, so the NVML loader's happy path is
// tested on machines without a driver. It exports the C entry points hardware/nvml.cpp looks
// up, with NVML's ABI. GPU 1 differs from GPU 0 in ways the loader must handle: unsupported
// temperature, power and ECC queries (NVML_ERROR_NOT_SUPPORTED = 3), like a GeForce card. Only
// the pre-535 throttle-reason name is exported, to test the loader's fallback to it. GPU 0's ECC
// counters differ by error and counter type, so a test sees which one the loader asked for.
//
// A test changes the GPUs at run time through a state file named by $SOLVER_FAKE_NVML_STATE,
// read at each nvmlInit_v2 (every inventory read): lines "KEY VALUE", each key optional —
// gpu_count N (the first N of the GPUs stay listed; fewer: the others fell off the bus), and for
// GPU 0 temperature_c N, throttle_reasons BITS (0x… allowed), ecc_uncorrected N (its
// uncorrected volatile ECC count), processes PID... and graphics_processes PID... (the PIDs its
// compute and graphics process lists name; none by default), row_remap_pending 0|1 and
// row_remap_failed 0|1 (its remapped-rows state, as an H100 reports failing memory; 0 by
// default). GPU 1 does not list processes, and reports its memory repairs as retired pages
// (none pending), as GPUs before Ampere do.
// Without the variable or file, the canned values below hold.
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <vector>

namespace {

struct FakeGpu {
  const char* name;
  const char* uuid;
  unsigned long long memory_total, memory_used;
  unsigned pcie_generation, pcie_width, pcie_max_generation, pcie_max_width;
  unsigned power_limit_mw;  // 0: not supported
  unsigned power_usage_mw;  // 0: not supported
  unsigned temperature_c;   // 0: not supported
  unsigned long long throttle_reasons;
  unsigned utilization_gpu, utilization_memory;
  bool ecc_supported;
};

// NVML's nvmlMemoryErrorType_t and nvmlEccCounterType_t values (nvml.h).
constexpr int kCorrected = 0, kUncorrected = 1;
constexpr int kVolatile = 0, kAggregate = 1;

constexpr FakeGpu kCannedGpus[] = {
    {"NVIDIA H100 80GB HBM3", "GPU-11111111-2222-3333-4444-555555555555", 85899345920ull, 1073741824ull, 5, 16, 5, 16, 700000, 412345, 41,
     0x1 | 0x4, 87, 35, true},
    {"NVIDIA H100 80GB HBM3", "GPU-66666666-7777-8888-9999-000000000000", 85899345920ull, 0ull, 1, 16, 5, 16, 0, 0, 0, 0, 0,
     0, false},
};
constexpr unsigned kCannedGpuCount = 2;
constexpr unsigned long long kCannedUncorrectedVolatile = 2;

// What this process's NVML shows now: the canned GPUs, changed by the state file.
FakeGpu gpus[kCannedGpuCount];
unsigned gpu_count = kCannedGpuCount;
unsigned long long uncorrected_volatile = kCannedUncorrectedVolatile;  // GPU 0's
std::vector<unsigned> compute_pids, graphics_pids;                       // GPU 0's
unsigned rows_pending = 0, rows_failed = 0;                              // GPU 0's

// The numbers after the key on one line of the state file.
std::vector<unsigned long long> numbers_of(const char* line) {
  std::vector<unsigned long long> numbers;
  char* end = nullptr;
  for (unsigned long long value = std::strtoull(line, &end, 0); end != line; value = std::strtoull(line, &end, 0)) {
    numbers.push_back(value);
    line = end;
  }
  return numbers;
}

void load_state() {
  std::memcpy(gpus, kCannedGpus, sizeof gpus);
  gpu_count = kCannedGpuCount;
  uncorrected_volatile = kCannedUncorrectedVolatile;
  compute_pids.clear();
  graphics_pids.clear();
  rows_pending = rows_failed = 0;
  const char* path = std::getenv("SOLVER_FAKE_NVML_STATE");
  if (path == nullptr) return;
  std::FILE* file = std::fopen(path, "r");
  if (file == nullptr) return;
  char line[4096];
  while (std::fgets(line, sizeof line, file) != nullptr) {
    char key[64];
    int key_length = 0;
    if (std::sscanf(line, "%63s%n", key, &key_length) != 1) continue;
    const std::vector<unsigned long long> values = numbers_of(line + key_length);
    if (std::strcmp(key, "processes") == 0) compute_pids.assign(values.begin(), values.end());
    if (std::strcmp(key, "graphics_processes") == 0) graphics_pids.assign(values.begin(), values.end());
    if (values.size() != 1) continue;
    const unsigned long long value = values[0];
    if (std::strcmp(key, "gpu_count") == 0) gpu_count = value < kCannedGpuCount ? static_cast<unsigned>(value) : kCannedGpuCount;
    if (std::strcmp(key, "temperature_c") == 0) gpus[0].temperature_c = static_cast<unsigned>(value);
    if (std::strcmp(key, "throttle_reasons") == 0) gpus[0].throttle_reasons = value;
    if (std::strcmp(key, "ecc_uncorrected") == 0) uncorrected_volatile = value;
    if (std::strcmp(key, "row_remap_pending") == 0) rows_pending = static_cast<unsigned>(value);
    if (std::strcmp(key, "row_remap_failed") == 0) rows_failed = static_cast<unsigned>(value);
  }
  std::fclose(file);
}

struct NvmlMemory {
  unsigned long long total, free, used;
};

struct NvmlUtilization {
  unsigned gpu, memory;
};

struct NvmlProcessInfo {  // nvmlProcessInfo_t of the _v3 process lists
  unsigned pid;
  unsigned long long used_gpu_memory;
  unsigned gpu_instance_id, compute_instance_id;
};

constexpr int kSuccess = 0;
constexpr int kInvalidArgument = 2;
constexpr int kNotSupported = 3;
constexpr int kInsufficientSize = 7;
constexpr unsigned kNotAvailable = 0xFFFFFFFF;  // NVML_VALUE_NOT_AVAILABLE, for the instance ids outside MIG mode

FakeGpu* gpu_of(void* device) { return static_cast<FakeGpu*>(device); }

// NVML's protocol: with *count too small, the count needed and INSUFFICIENT_SIZE; else the
// entries and their count. GPU 1 does not support the lists.
int list_processes(void* device, unsigned* count, NvmlProcessInfo* infos, const std::vector<unsigned>& pids) {
  if (gpu_of(device) != &gpus[0]) return kNotSupported;
  if (*count < pids.size()) {
    *count = static_cast<unsigned>(pids.size());
    return kInsufficientSize;
  }
  for (std::size_t i = 0; i < pids.size(); ++i) infos[i] = NvmlProcessInfo{pids[i], 1ull << 30, kNotAvailable, kNotAvailable};
  *count = static_cast<unsigned>(pids.size());
  return kSuccess;
}

int copy_string(const char* text, char* buffer, unsigned length) {
  if (std::strlen(text) + 1 > length) return kInvalidArgument;
  std::strcpy(buffer, text);
  return kSuccess;
}

}  // namespace

extern "C" {
int nvmlInit_v2() {
  load_state();
  return kSuccess;
}
int nvmlShutdown() { return kSuccess; }
const char* nvmlErrorString(int status) { return status == kNotSupported ? "Not Supported" : "Unknown Error"; }
int nvmlDeviceGetCount_v2(unsigned* count) {
  *count = gpu_count;
  return kSuccess;
}
int nvmlDeviceGetHandleByIndex_v2(unsigned index, void** device) {
  if (index >= gpu_count) return kInvalidArgument;
  *device = &gpus[index];
  return kSuccess;
}
int nvmlSystemGetDriverVersion(char* buffer, unsigned length) { return copy_string("550.54.15", buffer, length); }
int nvmlSystemGetCudaDriverVersion(int* version) {
  *version = 12040;
  return kSuccess;
}
int nvmlDeviceGetName(void* device, char* buffer, unsigned length) { return copy_string(gpu_of(device)->name, buffer, length); }
int nvmlDeviceGetUUID(void* device, char* buffer, unsigned length) { return copy_string(gpu_of(device)->uuid, buffer, length); }
int nvmlDeviceGetMemoryInfo(void* device, NvmlMemory* memory) {
  memory->total = gpu_of(device)->memory_total;
  memory->used = gpu_of(device)->memory_used;
  memory->free = memory->total - memory->used;
  return kSuccess;
}
int nvmlDeviceGetCurrPcieLinkGeneration(void* device, unsigned* value) {
  *value = gpu_of(device)->pcie_generation;
  return kSuccess;
}
int nvmlDeviceGetCurrPcieLinkWidth(void* device, unsigned* value) {
  *value = gpu_of(device)->pcie_width;
  return kSuccess;
}
int nvmlDeviceGetMaxPcieLinkGeneration(void* device, unsigned* value) {
  *value = gpu_of(device)->pcie_max_generation;
  return kSuccess;
}
int nvmlDeviceGetMaxPcieLinkWidth(void* device, unsigned* value) {
  *value = gpu_of(device)->pcie_max_width;
  return kSuccess;
}
int nvmlDeviceGetEnforcedPowerLimit(void* device, unsigned* milliwatts) {
  if (gpu_of(device)->power_limit_mw == 0) return kNotSupported;
  *milliwatts = gpu_of(device)->power_limit_mw;
  return kSuccess;
}
int nvmlDeviceGetTemperature(void* device, int sensor, unsigned* celsius) {
  if (sensor != 0 || gpu_of(device)->temperature_c == 0) return kNotSupported;
  *celsius = gpu_of(device)->temperature_c;
  return kSuccess;
}
int nvmlDeviceGetCurrentClocksThrottleReasons(void* device, unsigned long long* reasons) {
  *reasons = gpu_of(device)->throttle_reasons;
  return kSuccess;
}
int nvmlDeviceGetPowerUsage(void* device, unsigned* milliwatts) {
  if (gpu_of(device)->power_usage_mw == 0) return kNotSupported;
  *milliwatts = gpu_of(device)->power_usage_mw;
  return kSuccess;
}
int nvmlDeviceGetUtilizationRates(void* device, NvmlUtilization* utilization) {
  utilization->gpu = gpu_of(device)->utilization_gpu;
  utilization->memory = gpu_of(device)->utilization_memory;
  return kSuccess;
}
int nvmlDeviceGetComputeRunningProcesses_v3(void* device, unsigned* count, NvmlProcessInfo* infos) {
  return list_processes(device, count, infos, compute_pids);
}
int nvmlDeviceGetGraphicsRunningProcesses_v3(void* device, unsigned* count, NvmlProcessInfo* infos) {
  return list_processes(device, count, infos, graphics_pids);
}
int nvmlDeviceGetEccMode(void* device, int* current, int* pending) {
  if (!gpu_of(device)->ecc_supported) return kNotSupported;
  *current = 1;  // NVML_FEATURE_ENABLED
  *pending = 1;
  return kSuccess;
}
int nvmlDeviceGetTotalEccErrors(void* device, int error_type, int counter_type, unsigned long long* count) {
  if (!gpu_of(device)->ecc_supported) return kNotSupported;
  if ((error_type != kCorrected && error_type != kUncorrected) || (counter_type != kVolatile && counter_type != kAggregate))
    return kInvalidArgument;
  // Uncorrected volatile: 2 (or the state file's); the other three counters answer other numbers.
  if (error_type == kUncorrected && counter_type == kVolatile) {
    *count = uncorrected_volatile;
    return kSuccess;
  }
  *count = (error_type == kUncorrected ? 2 : 40) + (counter_type == kAggregate ? 5 : 0);
  return kSuccess;
}
int nvmlDeviceGetRetiredPagesPendingStatus(void* device, int* pending) {
  if (gpu_of(device) == &gpus[0]) return kNotSupported;  // an H100 remaps rows instead
  *pending = 0;  // NVML_FEATURE_DISABLED
  return kSuccess;
}
int nvmlDeviceGetRemappedRows(void* device, unsigned* corrected, unsigned* uncorrected, unsigned* pending,
                              unsigned* failed) {
  if (gpu_of(device) != &gpus[0]) return kNotSupported;
  *corrected = 0;
  *uncorrected = rows_pending + rows_failed;
  *pending = rows_pending;
  *failed = rows_failed;
  return kSuccess;
}
}
