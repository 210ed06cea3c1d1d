// cuda_device.h for builds with CUDA: cudaGetDeviceProperties through the static cudart.
// no_cuda.cpp replaces this file in builds without CUDA.
#include "kernels/cuda_device.h"

#include <cuda_runtime.h>
#include <fmt/format.h>

#include "common/error.h"
#include "kernels/detail/cuda_devices.h"

namespace solver::kernels {

CudaDeviceProperties cuda_device_properties(int device) {
  detail::require_cuda_device(device, "cuda_device_properties");
  cudaDeviceProp properties{};
  if (const cudaError_t status = cudaGetDeviceProperties(&properties, device); status != cudaSuccess)
    throw Error(ErrorKind::Cuda, "cudaGetDeviceProperties(" + std::to_string(device) + ") failed: " + cudaGetErrorString(status));
  const auto* uuid = reinterpret_cast<const unsigned char*>(properties.uuid.bytes);
  std::string uuid_text = "GPU-";
  for (int i = 0; i < 16; ++i) {
    if (i == 4 || i == 6 || i == 8 || i == 10) uuid_text += '-';
    uuid_text += fmt::format("{:02x}", uuid[i]);
  }
  return CudaDeviceProperties{device,           properties.name,          properties.multiProcessorCount, properties.major,
                              properties.minor, properties.totalGlobalMem, std::move(uuid_text)};
}

}  // namespace solver::kernels
