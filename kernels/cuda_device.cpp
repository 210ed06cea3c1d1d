// cuda_device.h for builds with CUDA: cudaGetDeviceProperties through the static cudart.
// no_cuda.cpp replaces this file in builds without CUDA.
#include "kernels/cuda_device.h"

#include <cuda_runtime.h>

#include "common/error.h"
#include "kernels/detail/cuda_devices.h"

namespace solver::kernels {

CudaDeviceProperties cuda_device_properties(int device) {
  detail::require_cuda_device(device, "cuda_device_properties");
  cudaDeviceProp properties{};
  if (const cudaError_t status = cudaGetDeviceProperties(&properties, device); status != cudaSuccess)
    throw Error(ErrorKind::Cuda, "cudaGetDeviceProperties(" + std::to_string(device) + ") failed: " + cudaGetErrorString(status));
  return CudaDeviceProperties{device, properties.name, properties.multiProcessorCount, properties.major, properties.minor,
                              properties.totalGlobalMem};
}

}  // namespace solver::kernels
