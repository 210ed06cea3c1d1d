// What the CUDA runtime says about a device: the figures NVML does not give (the SM count and
// the compute capability), for `solver bench` and for naming the GPU in reports.
#pragma once

#include <cstddef>
#include <string>

namespace solver::kernels {

struct CudaDeviceProperties {
  int device = 0;
  std::string name;
  int sm_count = 0;            // streaming multiprocessors
  int compute_major = 0;       // compute capability, e.g. 9.0 for Hopper
  int compute_minor = 0;
  std::size_t memory_bytes = 0;
  // "GPU-xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx", as NVML spells it: CUDA numbers devices its own
  // way (fastest first, CUDA_VISIBLE_DEVICES), so the UUID is what finds a device's NVML figures.
  std::string uuid;
};

// Throws Error(Cuda) without a CUDA device (or without CUDA in this build), Error(Config) for a
// device number CUDA does not see.
CudaDeviceProperties cuda_device_properties(int device);

}  // namespace solver::kernels
