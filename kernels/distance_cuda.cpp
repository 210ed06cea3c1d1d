// The public CUDA entry points of distance.h for builds with CUDA, and the device check all
// of kernels/ shares: they forward to the C++17 launchers in distance.cu and finish the sums
// with the twin's arithmetic, so the kernel's result differs from the CPU twin's in no bit.
// no_cuda.cpp replaces this file in builds without CUDA.
#include <string>

#include "common/error.h"
#include "kernels/detail/cuda_devices.h"
#include "kernels/distance.cuh"
#include "kernels/distance.h"

namespace solver::kernels {

static_assert(kCudaDistanceLanes == kDistanceLanes, "the kernel and its CPU twin must use the same lanes");

int cuda_device_count() { return cuda_runtime_device_count(); }

bool cuda_available() { return cuda_device_count() > 0; }

void detail::require_cuda_device(int device, std::string_view what) {
  const int devices = cuda_device_count();
  if (devices == 0) throw Error(ErrorKind::Cuda, std::string(what) + ": no CUDA device (no driver, or no GPU visible)");
  if (device < 0 || device >= devices)
    throw Error(ErrorKind::Config, std::string(what) + ": device " + std::to_string(device) + " does not exist, expected 0 to " +
                                       std::to_string(devices - 1));
}

WeightDistance weight_distance_cuda(const float* a, const float* b, std::size_t n) {
  if (!cuda_available()) throw Error(ErrorKind::Cuda, "weight_distance_cuda: no CUDA device (no driver, or no GPU visible)");
  return weight_distance_from_sums(distance_sums_cuda(a, b, n));
}

}  // namespace solver::kernels
