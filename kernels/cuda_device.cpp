// cuda_device.h for builds with CUDA: cudaGetDeviceProperties through the static cudart.
// no_cuda.cpp replaces this file in builds without CUDA.
#include "kernels/cuda_device.h"

#include <cuda_runtime.h>

#include "common/error.h"
#include "kernels/distance.h"

namespace solver::kernels {

CudaDeviceProperties cuda_device_properties(int device) {
  const int devices = cuda_device_count();
  if (devices == 0) throw Error(ErrorKind::Cuda, "cuda_device_properties: no CUDA device (no driver, or no GPU visible)");
  if (device < 0 || device >= devices)
    throw Error(ErrorKind::Config, "cuda_device_properties: device " + std::to_string(device) + " does not exist, expected 0 to " +
                                       std::to_string(devices - 1));
  cudaDeviceProp properties{};
  if (const cudaError_t status = cudaGetDeviceProperties(&properties, device); status != cudaSuccess)
    throw Error(ErrorKind::Cuda, "cudaGetDeviceProperties(" + std::to_string(device) + ") failed: " + cudaGetErrorString(status));
  return CudaDeviceProperties{device, properties.name, properties.multiProcessorCount, properties.major, properties.minor,
                              properties.totalGlobalMem};
}

}  // namespace solver::kernels
