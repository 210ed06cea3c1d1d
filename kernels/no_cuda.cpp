// The CUDA entry points of distance.h for builds without CUDA (no nvcc, or SOLVER_CUDA=OFF):
// such a build sees no devices, and asking it for the kernel is an error, never a silent
// fallback to the CPU twin (callers choose the twin explicitly).
#include "common/error.h"
#include "kernels/distance.h"

namespace solver::kernels {

int cuda_device_count() { return 0; }

bool cuda_available() { return false; }

WeightDistance weight_distance_cuda(const float*, const float*, std::size_t) {
  throw Error(ErrorKind::Cuda, "this build has no CUDA kernels (rebuild with nvcc found and SOLVER_CUDA=ON)");
}

}  // namespace solver::kernels
