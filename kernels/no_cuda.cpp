// The CUDA entry points of kernels/ for builds without CUDA (no nvcc, or SOLVER_CUDA=OFF):
// such a build sees no devices, and asking it for the kernel is an error, never a silent
// fallback to the CPU twin (callers choose the twin explicitly).
#include "common/error.h"
#include "kernels/all_reduce.h"
#include "kernels/cuda_device.h"
#include "kernels/distance.h"
#include "kernels/stream.h"
#include "kernels/stress.h"

namespace solver::kernels {

int cuda_device_count() { return 0; }

bool cuda_available() { return false; }

CudaDeviceProperties cuda_device_properties(int) {
  throw Error(ErrorKind::Cuda, "this build has no CUDA (rebuild with nvcc found and SOLVER_CUDA=ON)");
}

WeightDistance weight_distance_cuda(const float*, const float*, std::size_t) {
  throw Error(ErrorKind::Cuda, "this build has no CUDA kernels (rebuild with nvcc found and SOLVER_CUDA=ON)");
}

// NCCL needs the CUDA runtime for its buffers and streams, which this build lacks.
std::optional<std::string> nccl_unavailable_reason() {
  return "this build has no CUDA (NCCL needs the CUDA runtime: rebuild with nvcc found and SOLVER_CUDA=ON)";
}

AllReduceBandwidth measure_all_reduce(std::span<const int>, std::size_t, int) {
  throw Error(ErrorKind::Cuda, "this build has no CUDA, so no NCCL all-reduce (rebuild with nvcc found and SOLVER_CUDA=ON)");
}

DeviceStreamBandwidth measure_stream_cuda(int, std::size_t, int) {
  throw Error(ErrorKind::Cuda, "this build has no CUDA kernels, so no device STREAM (rebuild with nvcc found and SOLVER_CUDA=ON)");
}

std::vector<double> stream_triad_cuda(int, std::span<const double>, std::span<const double>, double) {
  throw Error(ErrorKind::Cuda, "this build has no CUDA kernels, so no device STREAM (rebuild with nvcc found and SOLVER_CUDA=ON)");
}

StressResult run_stress_cuda(int, double) {
  throw Error(ErrorKind::Cuda, "this build has no CUDA kernels, so no GPU stress test (rebuild with nvcc found and SOLVER_CUDA=ON)");
}

std::vector<float> stress_cuda(int, std::size_t, int) {
  throw Error(ErrorKind::Cuda, "this build has no CUDA kernels, so no GPU stress test (rebuild with nvcc found and SOLVER_CUDA=ON)");
}

}  // namespace solver::kernels
