// A stand-in for libnvidia-ml.so.1 with two canned GPUs, so the NVML loader's happy path is
// tested on machines without a driver. It exports the C entry points hardware/nvml.cpp looks
// up, with NVML's ABI. GPU 1 differs from GPU 0 in ways the loader must handle: an
// unsupported temperature query (NVML_ERROR_NOT_SUPPORTED = 3) and no power limit. Only the
// pre-535 throttle-reason name is exported, to test the loader's fallback to it.
#include <cstdio>
#include <cstring>

namespace {

struct FakeGpu {
  const char* name;
  const char* uuid;
  unsigned long long memory_total, memory_used;
  unsigned pcie_generation, pcie_width, pcie_max_generation, pcie_max_width;
  unsigned power_limit_mw;  // 0: not supported
  unsigned temperature_c;   // 0: not supported
  unsigned long long throttle_reasons;
};

FakeGpu gpus[] = {
    {"NVIDIA H100 80GB HBM3", "GPU-11111111-2222-3333-4444-555555555555", 85899345920ull, 1073741824ull, 5, 16, 5, 16, 700000, 41,
     0x1 | 0x4},
    {"NVIDIA H100 80GB HBM3", "GPU-66666666-7777-8888-9999-000000000000", 85899345920ull, 0ull, 1, 16, 5, 16, 0, 0, 0},
};

struct NvmlMemory {
  unsigned long long total, free, used;
};

constexpr int kSuccess = 0;
constexpr int kInvalidArgument = 2;
constexpr int kNotSupported = 3;

FakeGpu* gpu_of(void* device) { return static_cast<FakeGpu*>(device); }

int copy_string(const char* text, char* buffer, unsigned length) {
  if (std::strlen(text) + 1 > length) return kInvalidArgument;
  std::strcpy(buffer, text);
  return kSuccess;
}

}  // namespace

extern "C" {
int nvmlInit_v2() { return kSuccess; }
int nvmlShutdown() { return kSuccess; }
const char* nvmlErrorString(int status) { return status == kNotSupported ? "Not Supported" : "Unknown Error"; }
int nvmlDeviceGetCount_v2(unsigned* count) {
  *count = 2;
  return kSuccess;
}
int nvmlDeviceGetHandleByIndex_v2(unsigned index, void** device) {
  if (index >= 2) return kInvalidArgument;
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
}
